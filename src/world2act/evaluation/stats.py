"""Success-rate statistics for the evaluation protocol (paper Sec. 5.1: mean over seeds).

Counting rule (see docs/evaluation.md): every scheduled episode is a trial. An episode whose
simulator or policy raised is an *error*: it counts as a trial and as a failure (never a
success, never dropped), and errors are also reported separately, with the rate over
error-free episodes alongside.
"""
from __future__ import annotations

import math
from typing import Iterable


def wilson_interval(successes: int, n: int, z: float = 1.959963984540054) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion (95% by default).

    Returns ``(low, high)`` in [0, 1]; ``(0.0, 1.0)`` when ``n == 0``.
    """
    if n <= 0:
        return (0.0, 1.0)
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    lo = 0.0 if successes <= 0 else max(0.0, centre - half)
    hi = 1.0 if successes >= n else min(1.0, centre + half)
    return (lo, hi)


def _std(values: list[float]) -> float | None:
    """Sample standard deviation (ddof=1); None for fewer than two values."""
    if len(values) < 2:
        return None
    m = sum(values) / len(values)
    return math.sqrt(sum((v - m) ** 2 for v in values) / (len(values) - 1))


def summarize_group(records: Iterable[dict], seeds: list[int]) -> dict:
    """Statistics of one task's episode records (``success``, ``error``, ``seed`` fields).

    Returns:
        dict with ``n_trials``, ``n_success``, ``n_errors``, ``success_rate`` (errors count as
        failures), ``success_rate_excl_errors`` (None when every episode errored), ``ci95``
        (Wilson, on ``success_rate``), ``per_seed`` ``{seed: rate}`` and ``seed_std``.
    """
    recs = list(records)
    n = len(recs)
    ok = sum(1 for r in recs if r.get("success") and not r.get("error"))
    err = sum(1 for r in recs if r.get("error"))
    per_seed = {}
    for s in seeds:
        rs = [r for r in recs if r["seed"] == s]
        if rs:
            per_seed[str(s)] = sum(1 for r in rs if r.get("success") and not r.get("error")) / len(rs)
    lo, hi = wilson_interval(ok, n)
    return {
        "n_trials": n, "n_success": ok, "n_errors": err,
        "success_rate": ok / n if n else None,
        "success_rate_excl_errors": ok / (n - err) if n - err > 0 else None,
        "ci95": [lo, hi],
        "per_seed": per_seed,
        "seed_std": _std(list(per_seed.values())),
    }


def summarize_overall(per_task: dict[str, dict], seeds: list[int]) -> dict:
    """Overall numbers: mean of per-task success rates (tasks weighted equally, as the paper's
    per-suite mean), pooled counts, Wilson 95% interval on the pooled rate, per-seed means over
    tasks and their standard deviation (the paper's spread over seeds)."""
    tasks = [t for t in per_task.values() if t["n_trials"]]
    n = sum(t["n_trials"] for t in tasks)
    ok = sum(t["n_success"] for t in tasks)
    err = sum(t["n_errors"] for t in tasks)
    per_seed = {}
    for s in seeds:
        vals = [t["per_seed"][str(s)] for t in tasks if str(s) in t["per_seed"]]
        if vals:
            per_seed[str(s)] = sum(vals) / len(vals)
    lo, hi = wilson_interval(ok, n)
    return {
        "success_rate": sum(t["success_rate"] for t in tasks) / len(tasks) if tasks else None,
        "n_trials": n, "n_success": ok, "n_errors": err,
        "ci95": [lo, hi], "per_seed": per_seed, "seed_std": _std(list(per_seed.values())),
        "n_tasks": len(tasks),
    }
