"""Paired, interleaved inference timing of two (or more) policies in ONE process.

Two latency figures timed in separate processes (e.g. the ``latency`` block of two
``eval.json`` files) are not comparable: each saw a different machine load, thread state and
allocator history. A fresh quick run's report once said +41.9% for the residual, while the same
two policies timed back to back in one process gave +4.2 … +6.7%. :func:`paired_latency` times
the policies interleaved in one process (round ``i`` calls every policy once, batch 1, on the
same observation; the order within a round alternates so no policy always runs first) and
reports each policy's median and the **paired ratio**: the median over rounds of
``t_policy[i] / t_reference[i]``, with a bootstrap 95% interval. Load that rises or falls during
the measurement hits both members of a round alike and cancels in the ratio.
"""
from __future__ import annotations

import statistics
import time
from typing import Any

import numpy as np
import torch

from world2act.evaluation.latency import load_clock, other_load, synthetic_observation


def _bootstrap_median_ci(x: np.ndarray, n_boot: int = 2000, seed: int = 0, level: float = 0.95) -> list[float]:
    """Percentile-bootstrap interval of the median of ``x`` (1-D); ``[x0, x0]`` for one value."""
    if len(x) < 2:
        return [float(x[0]), float(x[0])]
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(x), size=(int(n_boot), len(x)))
    meds = np.median(x[idx], axis=1)
    a = (1.0 - level) / 2.0
    return [float(np.quantile(meds, a)), float(np.quantile(meds, 1.0 - a))]


def paired_latency(policies: dict[str, Any], obs: dict | None = None, n: int = 50, warmup: int = 5,
                   threads: int | None = 1, n_boot: int = 2000, seed: int = 0) -> dict:
    """Time ``predict_action_chunk(obs)`` of every policy in this process, interleaved.

    Round ``i`` (``i = 0 … n-1``) calls each policy once on the same batch-1 observation; the
    order within a round is the dict order on even rounds and reversed on odd rounds (A B, B A,
    A B, …), so neither policy systematically runs first (warm caches). ``warmup`` untimed rounds
    come first (text-embedding caches, allocator). Every policy is ``reset()`` and ``seed(0)``-ed
    before warm-up.

    Args:
        policies: ``{label: Policy}``, at least two; the FIRST entry is the reference (the
            denominator of the ratios), e.g. ``{"base": base, "base + World2Act": post}``.
        obs: batched observation (``observation.state`` ``[1, S]`` float32,
            ``observation.images.<cam>`` uint8 ``[1, H, W, 3]``, ``task`` list of 1 str);
            default :func:`~world2act.evaluation.latency.synthetic_observation` of the reference
            policy (it must therefore satisfy every policy's cameras / image size / state dim).
        n: timed rounds (pairs, for two policies). warmup: untimed rounds first.
        threads: torch intra-op threads while timing (restored afterwards; None = leave as is).
        n_boot: bootstrap resamples of the rounds for the ratio interval. seed: bootstrap seed.

    Returns:
        dict with
        ``reference`` (label of the first policy),
        ``policies``: ``{label: {ms_per_chunk (median ms per chunk, wall clock), ms_per_chunk_p10,
        ms_per_chunk_p90, ms_per_action (= ms_per_chunk / K), hz (actions per second),
        chunk_size (K), times_ms (the n per-round times, ms)}}``,
        ``ratios``: ``{label: {median (median of per-round ratios t_label / t_reference,
        dimensionless), ci95 ([low, high], percentile bootstrap of that median over rounds),
        q10_q90 (10th and 90th percentiles of the per-round ratios), overhead (median − 1)}}``
        for every non-reference policy; for two policies also ``ratio`` and ``ratio_ci95`` (the
        second vs the first) at the top level; ``n``, ``warmup``, ``batch``, ``threads``,
        ``order`` (``"interleaved, alternating"``), ``wall_s`` and ``other_load_cores`` (mean
        CPU cores kept busy by other processes while timing; None off Linux).

    Raises:
        ValueError: fewer than two policies, or ``n < 1``.
    """
    if len(policies) < 2:
        raise ValueError(f"paired_latency needs at least two policies, got {list(policies)}")
    if int(n) < 1:
        raise ValueError(f"paired_latency: n must be >= 1, got {n}")
    labels = list(policies)
    ref = labels[0]
    obs = obs if obs is not None else synthetic_observation(policies[ref])
    prev = torch.get_num_threads()
    if threads:
        torch.set_num_threads(int(threads))
    try:
        times, start, end = _time_interleaved(policies, labels, obs, n, warmup)
    finally:
        torch.set_num_threads(prev)
    per, ratios = _summaries(policies, labels, times, n_boot, seed)
    out: dict[str, Any] = {"reference": ref, "policies": per, "ratios": ratios, "n": int(n), "warmup": int(warmup),
                           "batch": len(obs["task"]), "threads": int(threads or prev), "order": "interleaved, alternating",
                           "wall_s": round(end[2] - start[2], 3),
                           "other_load_cores": other_load(start, end)}
    if len(labels) == 2:
        out["ratio"] = ratios[labels[1]]["median"]
        out["ratio_ci95"] = ratios[labels[1]]["ci95"]
    return out


def _time_interleaved(policies: dict[str, Any], labels: list[str], obs: dict, n: int, warmup: int):
    """Reset and seed every policy, run the untimed warm-up rounds, then time ``n`` rounds (the
    order alternating between rounds). Returns ``(times, start, end)``: per label the ``n``
    times in ms, and the load clock before and after."""
    times: dict[str, list[float]] = {k: [] for k in labels}
    for p in policies.values():
        p.reset()
        p.seed(0)
    with torch.no_grad():
        for i in range(max(0, int(warmup))):
            for k in (labels if i % 2 == 0 else labels[::-1]):
                policies[k].predict_action_chunk(obs)
        start = load_clock()
        for i in range(int(n)):
            for k in (labels if i % 2 == 0 else labels[::-1]):
                t = time.perf_counter()
                policies[k].predict_action_chunk(obs)
                times[k].append((time.perf_counter() - t) * 1000.0)
        end = load_clock()
    return times, start, end


def _summaries(policies: dict[str, Any], labels: list[str], times: dict, n_boot: int, seed: int):
    """Per policy the median / p10 / p90 ms per chunk, ms per action and Hz; per non-reference
    policy the median of the per-round ratios to the reference with its bootstrap interval.
    Returns ``(per, ratios)``."""
    per: dict[str, dict] = {}
    for k in labels:
        t = times[k]
        K = int(getattr(policies[k], "chunk_size", 1) or 1)
        ms = statistics.median(t)
        per[k] = {"ms_per_chunk": ms, "ms_per_chunk_p10": float(np.percentile(t, 10)),
                  "ms_per_chunk_p90": float(np.percentile(t, 90)), "ms_per_action": ms / K,
                  "hz": 1000.0 * K / ms if ms > 0 else float("inf"), "chunk_size": K,
                  "times_ms": [round(x, 4) for x in t]}
    tref = np.asarray(times[labels[0]])
    ratios: dict[str, dict] = {}
    for k in labels[1:]:
        r = np.asarray(times[k]) / np.maximum(tref, 1e-9)
        med = float(np.median(r))
        ratios[k] = {"median": med, "ci95": _bootstrap_median_ci(r, n_boot, seed),
                     "q10_q90": [float(np.quantile(r, 0.1)), float(np.quantile(r, 0.9))], "overhead": med - 1.0}
    return per, ratios
