"""Evaluation: the success-rate protocol (:func:`evaluate`), batch-1 inference timing
(:func:`measure_latency`, paper Table S5), the report (``eval.json``, ``eval.md``, plot, videos)
and the paired comparison of two runs (:func:`paired_comparison`, :func:`mcnemar_exact`)."""
from world2act.evaluation.harness import EpisodeJob, episode_jobs, evaluate
from world2act.evaluation.latency import measure_latency, synthetic_observation
from world2act.evaluation.stats import mcnemar_exact, paired_comparison, paired_verdict, wilson_interval

__all__ = ["evaluate", "episode_jobs", "EpisodeJob", "measure_latency", "synthetic_observation", "wilson_interval",
           "paired_comparison", "paired_verdict", "mcnemar_exact"]
