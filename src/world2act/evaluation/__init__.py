"""Evaluation: the success-rate protocol (:func:`evaluate`), batch-1 inference timing
(:func:`measure_latency`, paper Table S5) and the report (``eval.json``, ``eval.md``, plot, videos)."""
from world2act.evaluation.harness import EpisodeJob, episode_jobs, evaluate
from world2act.evaluation.latency import measure_latency, synthetic_observation
from world2act.evaluation.stats import wilson_interval

__all__ = ["evaluate", "episode_jobs", "EpisodeJob", "measure_latency", "synthetic_observation", "wilson_interval"]
