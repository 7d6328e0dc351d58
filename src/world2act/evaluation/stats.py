"""Success-rate statistics for the evaluation protocol (paper Sec. 5.1: mean over seeds).

Counting rule (see docs/evaluation.md): every scheduled episode is a trial. An episode whose
simulator or policy raised is an *error*: it counts as a trial and as a failure (never a
success, never dropped), and errors are also reported separately, with the rate over
error-free episodes alongside.

Paired comparison of two policies (see docs/evaluation.md, "Paired comparison"): episodes of
the two runs are matched by ``(task, seed, trial)`` — the same init state / reset and seed —
and compared with the mean paired difference (normal-approximation 95% interval) and the
exact McNemar test on the discordant pairs (:func:`paired_comparison`, :func:`mcnemar_exact`).
"""
from __future__ import annotations

import math
from fractions import Fraction
from typing import Any, Iterable

#: significance level of the paired verdict (McNemar exact p must be below it)
ALPHA = 0.05


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


# ---------------------------------------------------------------------------- paired comparison
def mcnemar_exact(fixed: int, broken: int) -> float:
    """Exact two-sided McNemar p-value from the discordant pairs of a paired comparison.

    ``fixed`` (b) counts pairs that fail under the first policy and succeed under the second,
    ``broken`` (c) the reverse; concordant pairs carry no information and do not enter. Under
    the null hypothesis (both policies equally good) each discordant pair is fixed or broken
    with probability 1/2, so with ``n = b + c`` and ``X ~ Binomial(n, 1/2)``::

        p = min(1, 2 · P[X ≤ min(b, c)]) = min(1, 2 · Σ_{i=0}^{min(b,c)} C(n, i) / 2^n)

    and ``p = 1.0`` when ``n == 0``. Computed with exact integer arithmetic (``math.comb``)
    and rounded to a float only at the end, so it is exact for any ``n``. Symmetric in its
    arguments. Examples: ``(0, 10)`` → 2/1024 ≈ 0.00195; ``(3, 12)`` → 0.03515625; ``b == c`` → 1.0.

    Args:
        fixed: number of episode pairs that went failure → success (a count, ≥ 0).
        broken: number of episode pairs that went success → failure (a count, ≥ 0).

    Returns:
        the p-value, a probability in (0, 1] (dimensionless).

    Raises:
        ValueError: a negative or non-integer count.
    """
    counts = []
    for name, v in (("fixed", fixed), ("broken", broken)):
        if isinstance(v, bool) or int(v) != v or v < 0:
            raise ValueError(f"mcnemar_exact: {name} must be a non-negative integer count, got {v!r}")
        counts.append(int(v))
    b, c = counts
    n = b + c
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, i) for i in range(min(b, c) + 1))
    return float(min(Fraction(1), Fraction(2 * tail, 2 ** n)))


def episode_records(ev: dict) -> list[dict]:
    """Per-episode records of an ``eval.json`` result (its ``episodes`` list; [] when absent)."""
    return list(ev.get("episodes") or [])


def episode_key(r: dict) -> tuple:
    """Pairing key of an episode record: ``(task as str, seed, trial)`` — falling back to the
    init state index when a record has no ``trial``. Two runs of the harness with the same
    tasks, seeds and trials give the same keys to episodes with the same init state / reset."""
    return (str(r.get("task")), r.get("seed"), r.get("trial", r.get("init_state_index", r.get("init_state"))))


def _succeeded(r: dict) -> bool:
    """An episode's outcome for pairing: an error counts as a failure (as in the eval tables)."""
    return bool(r.get("success")) and not r.get("error")


def _paired_stats(pairs: list[tuple[bool, bool]]) -> dict[str, Any]:
    """n, diff, ci95, base_sr, post_sr, fixed, broken and mcnemar_p of ``(base, post)`` outcomes."""
    n = len(pairs)
    d = [float(p) - float(b) for b, p in pairs]
    mean = sum(d) / n
    sd = _std(d)
    half = 1.96 * sd / math.sqrt(n) if sd is not None else math.inf  # one pair: no spread, no interval
    ci = [max(-1.0, mean - half), min(1.0, mean + half)]
    fixed = sum(1 for x in d if x > 0)
    broken = sum(1 for x in d if x < 0)
    return {"n": n, "diff": mean, "ci95": ci,
            "base_sr": sum(b for b, _ in pairs) / n, "post_sr": sum(p for _, p in pairs) / n,
            "fixed": fixed, "broken": broken, "mcnemar_p": mcnemar_exact(fixed, broken)}


def paired_comparison(base_records: Iterable[dict], post_records: Iterable[dict]) -> dict[str, Any]:
    """Compare two evaluation runs episode by episode (post − base).

    Episodes are paired by :func:`episode_key` (task, seed, trial); episodes present in only
    one run are ignored (and counted in ``unpaired_base`` / ``unpaired_post``). An episode
    that errored counts as a failure. If a run holds the same key twice, the later record wins.

    Args:
        base_records, post_records: per-episode records, e.g. ``eval.json["episodes"]``
            (fields ``task``, ``seed``, ``trial``, ``success``, ``error``).

    Returns:
        ``{"n": 0, "unpaired_base", "unpaired_post", "per_task": {}}`` when no episode is
        shared, else a dict with
        ``n`` (paired episodes), ``diff`` (mean paired difference of success, post − base, in
        success-rate units, i.e. a fraction in [-1, 1]), ``ci95`` (its normal-approximation 95%
        interval, mean ± 1.96·sd/√n, clipped to [-1, 1]; [-1, 1] when n = 1), ``base_sr`` and
        ``post_sr`` (success rates on the paired episodes), ``improved`` (pairs fixed:
        failure → success), ``regressed`` (pairs broken: success → failure), ``mcnemar_p``
        (:func:`mcnemar_exact` of improved vs regressed), ``unpaired_base`` / ``unpaired_post``,
        and ``per_task`` ``{task: {n, diff, base_sr, post_sr, fixed, broken, mcnemar_p}}``
        (per-task p-values are not corrected for multiple comparisons).
    """
    base = {episode_key(r): _succeeded(r) for r in base_records}
    post = {episode_key(r): _succeeded(r) for r in post_records}
    shared = [k for k in base if k in post]  # base-run order (the harness orders by task, seed, trial)
    unpaired = {"unpaired_base": len(base) - len(shared), "unpaired_post": len(post) - len(shared)}
    if not shared:
        return {"n": 0, **unpaired, "per_task": {}}
    overall = _paired_stats([(base[k], post[k]) for k in shared])
    by_task: dict[str, list[tuple[bool, bool]]] = {}
    for k in shared:
        by_task.setdefault(k[0], []).append((base[k], post[k]))
    per_task = {}
    for task, pairs in by_task.items():
        s = _paired_stats(pairs)
        per_task[task] = {k: s[k] for k in ("n", "diff", "base_sr", "post_sr", "fixed", "broken", "mcnemar_p")}
    return {"n": overall["n"], "diff": overall["diff"], "ci95": overall["ci95"],
            "base_sr": overall["base_sr"], "post_sr": overall["post_sr"],
            "improved": overall["fixed"], "regressed": overall["broken"], "mcnemar_p": overall["mcnemar_p"],
            **unpaired, "per_task": per_task}


#: the verdict rule in words, for reports
VERDICT_RULE = (f"a direction is claimed only when the paired 95% CI excludes 0 and McNemar exact p < {ALPHA:g}")


def paired_verdict(pc: dict, alpha: float = ALPHA) -> str:
    """``"better than"`` / ``"worse than"`` / ``"not distinguishable from"`` for a
    :func:`paired_comparison` result (post relative to base).

    A direction is claimed only when the paired 95% interval excludes 0 **and** the exact
    McNemar p-value is below ``alpha`` (default 0.05); otherwise the two are not distinguishable.
    """
    if not pc.get("n"):
        return "not distinguishable from"
    lo, hi = pc["ci95"]
    if pc["mcnemar_p"] < alpha:
        if lo > 0:
            return "better than"
        if hi < 0:
            return "worse than"
    return "not distinguishable from"


def format_p(p: float | None) -> str:
    """A p-value for text: 3 significant digits (``0.0352``, ``0.00195``, ``1``)."""
    return "n/a" if p is None else f"{p:.3g}"
