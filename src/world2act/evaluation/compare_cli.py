"""``world2act eval-compare``: pair the episodes of two evaluation folders (same task, seed and
trial) and test the difference — mean paired difference with its 95% interval and the exact
McNemar test on the discordant pairs, overall and per task (docs/evaluation.md)."""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from world2act import World2ActError
from world2act.evaluation.report import paired_figures, paired_table
from world2act.evaluation.stats import (ALPHA, VERDICT_RULE, episode_records, paired_comparison,
                                        paired_verdict)
from world2act.utils.config import opt
from world2act.utils.io import atomic_write, read_json, write_json


@dataclasses.dataclass
class CompareConfig:
    """What ``world2act eval-compare`` pairs."""

    base: str = opt("", "evaluation folder of the reference policy (holds eval.json), or the eval.json", required=True)
    post: str = opt("", "evaluation folder of the policy compared with it (holds eval.json), or the eval.json",
                    required=True)


Config = CompareConfig


def load_eval(path: str | Path) -> tuple[Path, dict]:
    """Read an ``eval.json`` (given its folder or the file itself) that has per-episode records.

    Raises:
        World2ActError: the file is missing, not valid JSON, or has no ``episodes`` list
            (the message names the file).
    """
    path = Path(path)
    file = path if path.suffix == ".json" and not path.is_dir() else path / "eval.json"
    ev = read_json(file)
    if not isinstance(ev, dict) or not isinstance(ev.get("episodes"), list) or not ev["episodes"]:
        raise World2ActError(f"{file}: no per-episode records ('episodes'); is it an eval.json written by `world2act eval`?")
    return file, ev


def compare(base: str | Path, post: str | Path) -> dict[str, Any]:
    """Paired comparison of two evaluation folders: the ``paired.json`` content.

    Returns:
        :func:`~world2act.evaluation.stats.paired_comparison`'s dict (``diff`` etc. are post − base)
        plus ``base`` / ``post`` (file, policy, benchmark, complete), ``benchmark``, ``alpha``,
        ``verdict`` and ``headline``.

    Raises:
        World2ActError: a missing or unreadable ``eval.json``, different benchmarks, or no
            shared episode.
    """
    fb, eb = load_eval(base)
    fp, ep = load_eval(post)
    if eb.get("benchmark") and ep.get("benchmark") and eb["benchmark"] != ep["benchmark"]:
        raise World2ActError(f"{fp}: benchmark {ep['benchmark']!r} differs from {eb['benchmark']!r} in {fb}; "
                             "episodes of different benchmarks cannot be paired")
    pc = paired_comparison(episode_records(eb), episode_records(ep))
    if not pc["n"]:
        raise World2ActError(f"{fb} and {fp} share no episode (paired by task, seed and trial): "
                             "evaluate both with the same --tasks, --seeds and --trials")
    verdict = paired_verdict(pc)
    headline = (f"post {pc['post_sr']:.3f} vs base {pc['base_sr']:.3f} success rate on {pc['n']} paired episodes: "
                f"{paired_figures(pc)}; post is {verdict} base ({VERDICT_RULE}).")

    def side(f: Path, ev: dict) -> dict:
        return {"eval": str(f), "policy": ev.get("policy"), "benchmark": ev.get("benchmark"),
                "complete": ev.get("complete"), "n_episodes": len(episode_records(ev))}

    return {"base": side(fb, eb), "post": side(fp, ep), "benchmark": eb.get("benchmark") or ep.get("benchmark"),
            "alpha": ALPHA, "verdict": verdict, "headline": headline, **pc,
            "labels": _labels(eb, ep, pc)}


def _labels(eb: dict, ep: dict, pc: dict) -> dict[str, str]:
    """Task display names: the instruction from either eval.json's per_task, else the task key."""
    out = {}
    for task in pc["per_task"]:
        rows = [(ev.get("per_task") or {}).get(task) or {} for ev in (eb, ep)]
        out[task] = next((r["instruction"] for r in rows if r.get("instruction")), task)
    return out


def markdown(res: dict) -> str:
    """``paired.md``: what was compared, the headline and the per-task paired table."""
    b, p = res["base"], res["post"]
    lines = [f"# Paired comparison on {res.get('benchmark') or 'unknown benchmark'}", "",
             f"- base: `{b['policy'] or 'unknown policy'}` ({b['eval']}, {b['n_episodes']} episodes)",
             f"- post: `{p['policy'] or 'unknown policy'}` ({p['eval']}, {p['n_episodes']} episodes)", ""]
    for name, s in (("base", b), ("post", p)):
        if s["complete"] is False:
            lines += [f"**The {name} evaluation is incomplete** (interrupted): only its finished episodes are paired.", ""]
    lines += [f"**{res['headline']}**", "",
              f"Episodes are paired by task, seed and trial (the same init state or reset and the same seed); "
              f"errors count as failures. {res['unpaired_base']} base and {res['unpaired_post']} post episodes have "
              "no partner and are left out. The 95% CI is the normal approximation of the mean paired difference; "
              "the McNemar test is the exact two-sided binomial test on the discordant pairs (fixed vs broken). "
              "Per-task p-values are not corrected for multiple comparisons.", "",
              *paired_table(res, res.get("labels"), base="base", post="post"), ""]
    return "\n".join(lines)


def main(cfg: CompareConfig, args) -> int:
    res = compare(cfg.base, cfg.post)
    out = Path(args.out)
    write_json(out / "paired.json", res)
    atomic_write(out / "paired.md", markdown(res))
    print(f"{res['headline']} -> {out}/paired.md")
    return 0
