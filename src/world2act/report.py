"""``report.md`` and ``summary.json`` for a pipeline run (issue 7).

Collects every stage's metrics into one page a user can trust: dataset and skill statistics,
world-model samples, Stage 1 metrics, Stage 2 curves, success rates of base vs
base + World2Act on the same held-out init states and seeds (per task, mean, spread over
seeds, 95% intervals, and the paired difference with the exact McNemar test, overall and per
task), the latency table (Table S5 analogue) and wall time per stage. Missing artifacts are reported as missing, never invented.
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

from world2act.evaluation.report import paired_figures, paired_table
from world2act.evaluation.stats import VERDICT_RULE, episode_records, paired_comparison, paired_verdict
from world2act.utils.io import atomic_write, write_json
from world2act.utils.manifest import git_revision, versions


def _load(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def _fmt(v: Any, nd: int = 3) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_fmt(x, nd) for x in v) + "]"
    if isinstance(v, float):
        return "nan" if math.isnan(v) else f"{v:.{nd}f}"
    return str(v)


def _rel(out: Path, p: Path) -> str:
    return os.path.relpath(p, out)


def paired_difference(base: dict, post: dict) -> dict:
    """Paired comparison post − base of two ``eval.json`` results: a thin wrapper over
    :func:`world2act.evaluation.stats.paired_comparison` (pairing by task, seed, trial; errors
    count as failures; normal-approximation 95% interval; exact McNemar p; per-task figures)."""
    return paired_comparison(episode_records(base), episode_records(post))


def _task_rows(ev: dict) -> dict[str, dict]:
    tasks = ev.get("per_task") or {}
    if isinstance(tasks, list):
        tasks = {str(t.get("task", t.get("task_id", i))): t for i, t in enumerate(tasks)}
    return {str(k): v for k, v in tasks.items()}


def _overall(ev: dict) -> dict:
    """``overall`` of an eval.json: ``success_rate`` (mean over tasks), ``ci95``, ``seed_std``."""
    return ev.get("overall") or {}


def write_report(out: Path, *, preset: str, preset_meta: dict, timings: dict) -> dict:
    """Write ``out/report.md`` and ``out/summary.json``; return the summary."""
    out = Path(out)
    L: list[str] = [f"# World2Act pipeline report — preset `{preset}`", ""]
    summary: dict[str, Any] = {"preset": preset, "preset_meta": preset_meta, "git_revision": git_revision(),
                               "versions": versions(), "stages": timings}
    if preset_meta.get("description"):
        L += [preset_meta["description"], ""]

    # ---------------- success rates
    eb, ep = _load(out / "eval-base" / "eval.json"), _load(out / "eval-posttrained" / "eval.json")
    L += ["## Success rate: base vs base + World2Act", ""]
    if eb and ep:
        rb, rp = _task_rows(eb), _task_rows(ep)
        L += ["Same held-out init states and seeds for both policies (LIBERO official init states).", "",
              "| task | base SR | base 95% CI | +World2Act SR | +World2Act 95% CI | trials | errors (base/post) |",
              "|---|---|---|---|---|---|---|"]
        for t in rb:
            b, p = rb[t], rp.get(t, {})
            L.append(f"| {b.get('instruction', t)} | {_fmt(b.get('success_rate'))} | {_fmt(b.get('ci95'))} | "
                     f"{_fmt(p.get('success_rate'))} | {_fmt(p.get('ci95'))} | {b.get('n_trials')} | "
                     f"{b.get('n_errors')}/{p.get('n_errors')} |")
        ob, op = _overall(eb), _overall(ep)
        L.append(f"| **mean** | **{_fmt(ob.get('success_rate'))}** | {_fmt(ob.get('ci95'))} | "
                 f"**{_fmt(op.get('success_rate'))}** | {_fmt(op.get('ci95'))} | | |")
        L.append("")
        L.append(f"Spread over seeds (std of per-seed mean success rate): base {_fmt(ob.get('seed_std'))}, "
                 f"+World2Act {_fmt(op.get('seed_std'))}.")
        pdiff = paired_difference(eb, ep)
        summary["success"] = {"base": ob, "posttrained": op, "paired_difference": pdiff}
        if pdiff.get("n"):
            verdict = paired_verdict(pdiff)
            headline = (f"base + World2Act {pdiff['post_sr']:.3f} vs base {pdiff['base_sr']:.3f} success rate on "
                        f"{pdiff['n']} paired episodes: {paired_figures(pdiff)}; "
                        f"World2Act is {verdict} the base at this budget ({VERDICT_RULE}).")
            summary["headline"] = headline
            summary["verdict"] = verdict
            labels = {t: rb[t].get("instruction") or t for t in rb}
            L += ["", f"**Paired comparison:** {headline}", "",
                  "Paired per task (same task, seed and trial in both runs; errors count as failures; "
                  "per-task p-values are not corrected for multiple comparisons):", "",
                  *paired_table(pdiff, labels, base="base", post="+World2Act"), ""]
        else:
            L += ["", "**Paired comparison:** the two evaluations share no episodes (task, seed, trial).", ""]
        for name in ("eval-base", "eval-posttrained"):
            for png in sorted((out / name).glob("*.png")):
                L.append(f"![{name}]({_rel(out, png)})")
            for vid in ((_load(out / name / "eval.json") or {}).get("videos") or [])[:2]:
                L.append(f"\n{name} episode video: [{vid}]({_rel(out, out / name / 'videos' / vid)})")
        L.append("")
    else:
        L += ["(evaluation results missing)", ""]

    # ---------------- latency
    from world2act.evaluation.latency import load_note

    L += ["## Inference speed (Table S5 analogue, batch 1, CPU, apart from simulation)", ""]
    lat_rows = []
    for name, label in (("eval-base", "base"), ("eval-posttrained", "base + World2Act")):
        ev = _load(out / name / "eval.json") or {}
        lat = ev.get("latency") or {}
        if lat:
            lat_rows.append((label, lat))
    if lat_rows:
        L += ["| policy | ms per chunk | ms per action | policy Hz |", "|---|---|---|---|"]
        for label, lat in lat_rows:
            L.append(f"| {label} | {_fmt(lat.get('ms_per_chunk'), 2)} | {_fmt(lat.get('ms_per_action'), 3)} | {_fmt(lat.get('hz'), 1)} |")
        if len(lat_rows) == 2 and lat_rows[0][1].get("ms_per_chunk"):
            ovh = lat_rows[1][1]["ms_per_chunk"] / lat_rows[0][1]["ms_per_chunk"] - 1
            summary["residual_latency_overhead"] = ovh
            L.append(f"\nResidual overhead: {ovh * 100:+.1f}% of the base policy's chunk latency (paper: +11%).")
        for label, lat in lat_rows:
            note = load_note(lat)
            if note:
                L.append(f"\n**{label}: {note}**")
        summary["latency"] = {k: v for k, v in lat_rows}
    else:
        L.append("(latency figures missing)")
    L.append("")

    # ---------------- data, skills
    L += ["## Demonstrations and skill dataset", ""]
    cs = _load(out / "demos" / "meta" / "collect_stats.json")
    info = _load(out / "demos" / "meta" / "info.json")
    if info:
        L.append(f"Demonstrations: {info.get('total_episodes')} episodes, {info.get('total_frames')} frames at {info.get('fps')} Hz.")
    if cs:
        summary["collect"] = cs
        L.append(f"Collection: `{json.dumps({k: v for k, v in cs.items() if not isinstance(v, (dict, list))})}`")
    ss = _load(out / "skills" / "meta" / "skill_stats.json")
    if ss:
        summary["skills"] = {k: ss.get(k) for k in ("episodes_in", "episodes_synced", "sync_rate", "clips_out", "discard_reasons")}
        L.append(f"\nSkill segmentation: sync rate **{_fmt(ss.get('sync_rate'))}** "
                 f"({ss.get('episodes_synced')}/{ss.get('episodes_in')} episodes), {ss.get('clips_out')} skill clips; "
                 f"discards: {ss.get('discard_reasons')}.")
        for png in sorted((out / "skills" / "meta").glob("*.png")):
            L.append(f"\n![skill lengths]({_rel(out, png)})")
    L.append("")

    # ---------------- world model, Stage 1, Stage 2
    for name, title in (("wm", "Skill-compositional world model"), ("align", "Stage 1: video–action alignment"),
                        ("posttrain", "Stage 2: latent action post-training")):
        m = _load(out / name / "metrics.json")
        L += [f"## {title}", ""]
        if m:
            summary[name] = m
            flat = {k: v for k, v in _flatten(m).items() if isinstance(v, (int, float, str, bool)) or v is None}
            warnings = m.get("warnings") or []
            if warnings:
                L += [f"> **Warning:** {w}" for w in warnings] + [""]
            L += ["| metric | value |", "|---|---|"] + [f"| {k} | {_fmt(v, 4)} |" for k, v in list(flat.items())[:60]]
        else:
            L.append("(metrics missing)")
        for png in sorted((out / name).glob("*.png"))[:6]:
            L.append(f"\n![{name}]({_rel(out, png)})")
        for mp4 in sorted((out / name).rglob("*.mp4"))[:3]:
            L.append(f"\nVideo: [{_rel(out, mp4)}]({_rel(out, mp4)})")
        L.append("")

    # ---------------- wall time
    L += ["## Wall time per stage", "", "| stage | status | wall time (s) |", "|---|---|---|"]
    for st, t in timings.items():
        L.append(f"| {st} | {t.get('status')} | {_fmt(t.get('wall_s'), 1)} |")
    total = sum(float(t.get("wall_s") or 0) for t in timings.values())
    L += [f"| **total** | | {total:.1f} |", "", f"git revision `{summary['git_revision']}`", ""]
    atomic_write(out / "report.md", "\n".join(L) + "\n")
    write_json(out / "summary.json", summary)
    return summary


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out
