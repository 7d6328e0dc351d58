"""``report.md`` and ``summary.json`` for a pipeline run (issues 7 and 18).

``report.md`` leads with what a reader decides on, then shows one figure per stage, and keeps
the raw numbers for the end:

1. **Success rate: base vs base + World2Act** — per task, with Wilson 95% intervals, on the same
   held-out init states and seeds; then the paired difference (post − base) with its paired
   95% interval, the exact McNemar p and the verdict, overall and per task; episode videos of
   both policies side by side (playable ``.mp4`` links, paths relative to the report).
2. **Inference speed** — base and base + World2Act timed interleaved in one process
   (``latency_paired.json``, written by :func:`world2act.pipeline.measure_paired_latency`):
   per-policy median ms per chunk and the paired ratio with its 95% interval.
3. **Stages** — one short paragraph and one figure per stage whose artifacts exist: skill
   length distribution (``skills/meta/skill_lengths.png``), world-model frame strips
   (``wm/**/strips/*.png`` or a ``wm-eval`` folder) and imagined videos
   (``posttrain/imagined/*.mp4``), Stage 1 retrieval (a bar chart drawn from
   ``align/metrics.json``; ``loss_curves.png`` linked), Stage 2 curves (``posttrain/curves.png``).
   A stage that did not run gets a one-line note instead.
4. **Wall time per stage**, then an **Appendix** of the raw metric dicts (collapsed
   ``<details>``); every dict also stays in ``summary.json``.

Missing or unreadable artifacts are reported as missing, never invented, and never crash the
report. Figures drawn here go to ``OUT/report_figures/``.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
from pathlib import Path
from typing import Any, Callable

from world2act import World2ActError
from world2act.evaluation.report import paired_figures, paired_table
from world2act.evaluation.stats import VERDICT_RULE, episode_records, format_p, paired_comparison, paired_verdict
from world2act.utils.config import opt
from world2act.utils.io import atomic_path, atomic_write, write_json
from world2act.utils.manifest import git_revision, versions

log = logging.getLogger("world2act.report")

#: the report's top-level sections, in order (``## `` headings)
SECTIONS = ("Success rate: base vs base + World2Act", "Inference speed: base vs base + World2Act", "Stages",
            "Wall time per stage", "Appendix: raw metrics")
#: the interleaved timing file under the pipeline folder (see world2act.pipeline.PAIRED_LATENCY_FILE)
PAIRED_LATENCY_FILE = "latency_paired.json"
FIG_DIR = "report_figures"
POST_LABEL = "base + World2Act"


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


def _ci(ci: Any, nd: int = 3) -> str:
    """``[lo, hi]`` as ``lo–hi``; ``n/a`` when absent."""
    if not isinstance(ci, (list, tuple)) or len(ci) != 2:
        return "n/a"
    return f"{_fmt(ci[0], nd)}–{_fmt(ci[1], nd)}"


def _rel(out: Path, p: Path) -> str:
    return os.path.relpath(p, out)


def _link(out: Path, p: Path, label: str | None = None) -> str:
    """A markdown link to a file, path relative to the report (an ``.mp4`` plays when opened)."""
    r = _rel(out, p)
    return f"[{label or r}]({r.replace(' ', '%20')})"


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


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out


def _metric_table(m: dict, limit: int = 200) -> list[str]:
    """A flattened metric dict as a two-column markdown table (scalars only, ``limit`` rows)."""
    flat = {k: v for k, v in _flatten(m).items() if isinstance(v, (int, float, str, bool)) or v is None}
    rows = ["| metric | value |", "|---|---|"] + [f"| {k} | {_fmt(v, 4)} |" for k, v in list(flat.items())[:limit]]
    if len(flat) > limit:
        rows.append(f"| … | {len(flat) - limit} more in summary.json |")
    return rows


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    _pyplot().close(fig)
    return path


def _figure(out: Path, name: str, draw: Callable[[Path], Path]) -> Path | None:
    """Draw a report figure into ``out/report_figures/name``; None (logged) when drawing fails."""
    try:
        return draw(out / FIG_DIR / name)
    except Exception as e:  # noqa: BLE001 - a figure is never worth a crashed report
        log.warning("report figure %s not drawn: %s: %s", name, type(e).__name__, e)
        return None


def _success_plot(rb: dict, rp: dict, path: Path) -> Path:
    """Per-task success rate of both policies with their Wilson 95% intervals (grouped bars)."""
    plt = _pyplot()
    tasks = list(dict.fromkeys([*rb, *rp]))
    fig, ax = plt.subplots(figsize=(max(4.5, 1.1 * len(tasks) + 2), 3.2))
    w = 0.38
    for j, (rows, label, color) in enumerate(((rb, "base", "#8C8C8C"), (rp, POST_LABEL, "#4C72B0"))):
        xs, ys, lo, hi = [], [], [], []
        for i, t in enumerate(tasks):
            r = rows.get(t) or {}
            if r.get("success_rate") is None:
                continue
            sr = 100 * r["success_rate"]
            ci = r.get("ci95") or [r["success_rate"]] * 2
            xs.append(i + (j - 0.5) * w)
            ys.append(sr)
            lo.append(max(0.0, sr - 100 * ci[0]))
            hi.append(max(0.0, 100 * ci[1] - sr))
        ax.bar(xs, ys, w, yerr=[lo, hi], capsize=3, color=color, label=label)
    ax.set_xticks(range(len(tasks)), [str(t)[:22] for t in tasks], rotation=30 if len(tasks) > 3 else 0,
                  fontsize=7, ha="right" if len(tasks) > 3 else "center")
    ax.set_ylim(0, 118)
    ax.set_ylabel("success rate (%)")
    ax.legend(fontsize=8, loc="upper center", ncol=2, frameon=False)
    ax.set_title("success per task (bars: Wilson 95% CI)", fontsize=9)
    fig.tight_layout()
    return _save(fig, path)


def _latency_plot(pl: dict, path: Path) -> Path:
    """Per-round times of both policies (left) and the per-round ratio with its median (right)."""
    import numpy as np

    plt = _pyplot()
    ref = pl["reference"]
    other = [k for k in pl["policies"] if k != ref][0]
    tb = np.asarray(pl["policies"][ref]["times_ms"])
    tp = np.asarray(pl["policies"][other]["times_ms"])
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(7.5, 2.8))
    a1.plot(tb, ".-", color="#8C8C8C", lw=0.8, label=ref)
    a1.plot(tp, ".-", color="#4C72B0", lw=0.8, label=other)
    a1.set_xlabel("round (interleaved)")
    a1.set_ylabel("ms per chunk")
    a1.legend(fontsize=7)
    r = tp / np.maximum(tb, 1e-9)
    a2.hist(r, bins=min(30, max(5, len(r) // 3)), color="#4C72B0")
    a2.axvline(float(np.median(r)), color="#C44E52", ls="--", label=f"median {np.median(r):.3f}")
    a2.axvline(1.0, color="k", lw=0.6)
    a2.set_xlabel(f"per-round ratio {other} / {ref}")
    a2.legend(fontsize=7)
    fig.suptitle("batch-1 latency, both policies timed interleaved in one process", fontsize=9)
    fig.tight_layout()
    return _save(fig, path)


def _retrieval_plot(m: dict, path: Path) -> Path:
    """Stage 1 held-out top-1 retrieval (video→action, action→video; all clips and same-skill
    candidates) at initialisation and after training, against chance."""
    plt = _pyplot()
    end, init = m.get("heldout") or {}, m.get("heldout_at_init") or {}
    keys = [("top1_v2a", "chance", "video→action"), ("top1_a2v", "chance", "action→video"),
            ("top1_v2a_same_skill", "chance_same_skill", "v→a, same skill"),
            ("top1_a2v_same_skill", "chance_same_skill", "a→v, same skill")]
    keys = [k for k in keys if end.get(k[0]) is not None]
    if not keys:
        raise ValueError("no held-out retrieval figures in align/metrics.json")
    fig, ax = plt.subplots(figsize=(6, 2.9))
    w = 0.38
    for i, (k, ch, _) in enumerate(keys):
        if init.get(k) is not None:
            ax.bar(i - w / 2, 100 * init[k], w, color="#CCCCCC", label="at init" if i == 0 else None)
        ax.bar(i + w / 2, 100 * end[k], w, color="#55A868", label="trained" if i == 0 else None)
        if end.get(ch) is not None:
            ax.hlines(100 * end[ch], i - w, i + w, colors="#C44E52", linestyles="--", label="chance" if i == 0 else None)
    ax.set_xticks(range(len(keys)), [k[2] for k in keys], fontsize=8)
    ax.set_ylim(0, 118)
    ax.set_ylabel("held-out top-1 (%)")
    ax.set_title(f"Stage 1 retrieval on {end.get('n', '?')} held-out clips", fontsize=9)
    ax.legend(fontsize=7, loc="upper center", ncol=3, frameon=False)
    fig.tight_layout()
    return _save(fig, path)


# ---------------------------------------------------------------------------- sections
def _success_section(out: Path, summary: dict) -> list[str]:
    eb, ep = _load(out / "eval-base" / "eval.json"), _load(out / "eval-posttrained" / "eval.json")
    L = [f"## {SECTIONS[0]}", ""]
    if not eb and not ep:
        return L + ["*Not run: no `eval-base/eval.json` or `eval-posttrained/eval.json`.*", ""]
    eb, ep = eb or {}, ep or {}
    rb, rp = _task_rows(eb), _task_rows(ep)
    if not (eb and ep):
        L += [f"*Only `{'eval-base' if eb else 'eval-posttrained'}` ran; no comparison.*", ""]
    L += ["Same held-out init states and seeds for both policies; errors count as failures; 95% intervals are Wilson.", "",
          f"| task | base SR | base 95% CI | {POST_LABEL} SR | {POST_LABEL} 95% CI | trials | errors (base/post) |",
          "|---|---:|---|---:|---|---:|---|"]
    for t in dict.fromkeys([*rb, *rp]):
        b, p = rb.get(t, {}), rp.get(t, {})
        L.append(f"| {b.get('instruction') or p.get('instruction') or t} | {_fmt(b.get('success_rate'))} | {_ci(b.get('ci95'))} | "
                 f"{_fmt(p.get('success_rate'))} | {_ci(p.get('ci95'))} | {b.get('n_trials', p.get('n_trials'))} | "
                 f"{b.get('n_errors', 'n/a')}/{p.get('n_errors', 'n/a')} |")
    ob, op = _overall(eb), _overall(ep)
    L.append(f"| **mean over tasks** | **{_fmt(ob.get('success_rate'))}** | {_ci(ob.get('ci95'))} | "
             f"**{_fmt(op.get('success_rate'))}** | {_ci(op.get('ci95'))} | {ob.get('n_trials', op.get('n_trials', ''))} | |")
    L += ["", f"Spread over seeds (std of per-seed mean success rate): base {_fmt(ob.get('seed_std'))}, "
              f"{POST_LABEL} {_fmt(op.get('seed_std'))}.", ""]
    summary["success"] = {"base": ob, "posttrained": op}
    if eb and ep:
        pdiff = paired_difference(eb, ep)
        summary["success"]["paired_difference"] = pdiff
        L += ["### Paired difference (base + World2Act − base)", ""]
        if pdiff.get("n"):
            verdict = paired_verdict(pdiff)
            lo, hi = pdiff["ci95"]
            headline = (f"base + World2Act {pdiff['post_sr']:.3f} vs base {pdiff['base_sr']:.3f} success rate on "
                        f"{pdiff['n']} paired episodes: {paired_figures(pdiff)}; "
                        f"World2Act is {verdict} the base at this budget ({VERDICT_RULE}).")
            summary["headline"] = headline
            summary["verdict"] = verdict
            L += ["| paired episodes | difference | paired 95% CI | fixed | broken | McNemar exact p | verdict |",
                  "|---:|---:|---|---:|---:|---:|---|",
                  f"| {pdiff['n']} | **{pdiff['diff']:+.3f}** | {lo:+.3f} … {hi:+.3f} | {pdiff['improved']} | "
                  f"{pdiff['regressed']} | **{format_p(pdiff['mcnemar_p'])}** | **{verdict}** the base |", "",
                  f"**Verdict:** {headline}", ""]
            if pdiff.get("unpaired_base") or pdiff.get("unpaired_post"):
                L += [f"Unpaired episodes left out: {pdiff.get('unpaired_base')} base, {pdiff.get('unpaired_post')} post.", ""]
            labels = {t: rb.get(t, {}).get("instruction") or t for t in rb}
            L += ["Per task (same task, seed and trial in both runs; per-task p-values are not corrected for "
                  "multiple comparisons):", "", *paired_table(pdiff, labels, base="base", post="+World2Act"), ""]
        else:
            L += ["The two evaluations share no episodes (task, seed, trial): no paired comparison.", ""]
    fig = _figure(out, "success.png", lambda p: _success_plot(rb, rp, p))
    if fig:
        L += [f"![success per task]({_rel(out, fig)})", ""]
    L += _video_pairs(out, eb, ep)
    return L


def _video_pairs(out: Path, eb: dict, ep: dict, limit: int = 4) -> list[str]:
    """Episode videos of both policies, same episode side by side where both recorded it."""
    vids = {}
    for name, ev in (("eval-base", eb), ("eval-posttrained", ep)):
        for v in (ev.get("videos") or []):
            path = out / name / "videos" / v
            if path.is_file():
                vids.setdefault(v, {})[name] = path
    if not vids:
        return []
    L = ["Episode videos (same task, seed and trial for both policies; `.mp4`, open to play):", "",
         f"| episode | base | {POST_LABEL} |", "|---|---|---|"]
    for v, d in list(vids.items())[:limit]:
        cells = [_link(out, d[n], "▶ mp4") if n in d else "—" for n in ("eval-base", "eval-posttrained")]
        L.append(f"| {Path(v).stem} | {cells[0]} | {cells[1]} |")
    return L + [""]


def _latency_section(out: Path, summary: dict) -> list[str]:
    from world2act.evaluation.latency import LOADED_CORES

    L = [f"## {SECTIONS[1]}", ""]
    pl = _load(out / PAIRED_LATENCY_FILE)
    evlat = {label: (_load(out / name / "eval.json") or {}).get("latency")
             for name, label in (("eval-base", "base"), ("eval-posttrained", POST_LABEL))}
    evlat = {k: v for k, v in evlat.items() if v}
    if evlat:
        summary["latency_eval"] = evlat
    if pl and pl.get("policies") and pl.get("ratio") is not None:
        summary["latency"] = {**{k: v for k, v in pl.items() if k != "policies"},
                              "policies": {k: {kk: vv for kk, vv in v.items() if kk != "times_ms"}
                                           for k, v in pl["policies"].items()}}
        ovh = pl["ratio"] - 1.0
        summary["residual_latency_overhead"] = ovh
        lo, hi = pl.get("ratio_ci95") or [None, None]
        L += [f"Batch 1, {pl.get('threads')} torch thread(s), CPU, no simulator; both policies timed in one "
              f"process, interleaved ({pl.get('n')} rounds after {pl.get('warmup')} warm-up rounds, order alternating), "
              "on the same observation.", "",
              "| policy | ms per chunk (median) | p10–p90 ms | ms per action | actions/s |", "|---|---:|---|---:|---:|"]
        for k, v in pl["policies"].items():
            L.append(f"| {k} | {_fmt(v.get('ms_per_chunk'), 2)} | {_fmt(v.get('ms_per_chunk_p10'), 2)}–"
                     f"{_fmt(v.get('ms_per_chunk_p90'), 2)} | {_fmt(v.get('ms_per_action'), 3)} | {_fmt(v.get('hz'), 1)} |")
        ci = f" (95% CI {lo:.3f} … {hi:.3f})" if lo is not None else ""
        L += ["", f"**Paired ratio** {POST_LABEL} / base (median of per-round ratios): **{pl['ratio']:.3f}**{ci}, "
                  f"i.e. the residual adds **{ovh * 100:+.1f}%** to the base's chunk latency (paper: +11%).", ""]
        other = pl.get("other_load_cores")
        if other is not None and other > LOADED_CORES:
            L += [f"*Timed while other processes kept {other:.1f} CPU core(s) busy: absolute times are pessimistic; "
                  "the ratio is paired and less affected.*", ""]
        fig = _figure(out, "latency.png", lambda p: _latency_plot(pl, p)) if all(
            v.get("times_ms") for v in pl["policies"].values()) else None
        if fig:
            L += [f"![latency]({_rel(out, fig)})", ""]
    else:
        summary["residual_latency_overhead"] = None
        if pl and pl.get("error"):
            L += [f"*Paired timing failed: {pl['error']}*", ""]
        else:
            L += [f"*Not measured: no `{PAIRED_LATENCY_FILE}` (the base or the post-trained policy is missing).*", ""]
    if evlat:
        L += ["The per-policy figures in each `eval.json` were timed in separate processes under different load; they "
              "are listed in the appendix and not compared.", ""]
    return L


def _skills_section(out: Path, summary: dict) -> list[str]:
    L = ["### Demonstrations and skill dataset", ""]
    cs = _load(out / "demos" / "meta" / "collect_stats.json")
    info = _load(out / "demos" / "meta" / "info.json")
    ss = _load(out / "skills" / "meta" / "skill_stats.json")
    if not (cs or info or ss):
        return L + ["*Not run: no `demos/meta/info.json` or `skills/meta/skill_stats.json`.*", ""]
    if cs:
        summary["collect"] = cs
    if info:
        L.append(f"Demonstrations: {info.get('total_episodes')} episodes, {info.get('total_frames')} frames at "
                 f"{info.get('fps')} Hz.")
    if ss:
        summary["skills"] = {k: ss.get(k) for k in ("episodes_in", "episodes_synced", "sync_rate", "clips_out", "discard_reasons")}
        L.append(f"Skill segmentation: sync rate **{_fmt(ss.get('sync_rate'))}** ({ss.get('episodes_synced')}/"
                 f"{ss.get('episodes_in')} episodes), **{ss.get('clips_out')}** skill clips"
                 + (f"; discards: {ss.get('discard_reasons')}" if ss.get("discard_reasons") else "") + ".")
        lens = ss.get("lengths") or {}
        b, a = lens.get("before") or {}, lens.get("after") or {}
        if b and a:
            L.append(f"Clip length ({lens.get('unit', 'frames')}): median {_fmt(b.get('median'), 1)} → "
                     f"{_fmt(a.get('median'), 1)}, coefficient of variation {_fmt(b.get('cv'))} → {_fmt(a.get('cv'))} "
                     "(whole episodes → skill clips).")
    else:
        L.append("*Skill segmentation did not run (no `skills/meta/skill_stats.json`).*")
    L.append("")
    png = out / "skills" / "meta" / "skill_lengths.png"
    if png.is_file():
        L += [f"![skill length distribution]({_rel(out, png)})", ""]
    vids = [next(iter(sorted(cam.rglob("*.mp4"))), None) for cam in sorted((out / "skills" / "videos").glob("*"))
            if cam.is_dir()]
    vids = [v for v in vids if v is not None]
    if vids:
        L += ["Skill-clip videos (concatenated episodes, one file per camera): "
              + ", ".join(_link(out, v, v.parent.parent.name.replace("observation.images.", "") + " ▶ mp4") for v in vids), ""]
    return L


def _wm_section(out: Path, summary: dict) -> list[str]:
    L = ["### Skill-compositional world model", ""]
    m = _load(out / "wm" / "metrics.json")
    strips = [p for pat in ("wm/strips/*.png", "wm/*.png", "wm/*/strips/*.png", "wm-eval/strips/*.png",
                            "wm-eval/*.png", "wmeval/strips/*.png") for p in sorted(out.glob(pat))]
    imagined = sorted((out / "posttrain" / "imagined").glob("*.mp4")) + sorted((out / "wm").rglob("*.mp4"))
    if not m and not strips:
        return L + ["*Not run: no `wm/metrics.json`.*", ""]
    if m:
        summary["wm"] = m
        g = m.get("heldout_generation") or {}
        vl0, vl1 = (m.get("val_loss_start") or {}).get("mean"), (m.get("val_loss_end") or {}).get("mean")
        parts = [f"model `{m.get('model')}`, {m.get('steps')} steps on {m.get('n_train_clips')} clips"]
        if vl0 is not None and vl1 is not None:
            parts.append(f"held-out denoising loss {vl0:.3f} → {vl1:.3f}")
        if g:
            parts.append(f"held-out generation PSNR {_fmt(g.get('psnr'), 2)} dB / SSIM {_fmt(g.get('ssim'))} "
                         f"(repeat-the-first-frame baseline {_fmt(g.get('baseline_repeat_first_psnr'), 2)} dB / "
                         f"{_fmt(g.get('baseline_repeat_first_ssim'))}) on {g.get('n_clips')} clips")
        if m.get("vae_psnr_heldout_db") is not None:
            parts.append(f"VAE held-out PSNR {_fmt(m.get('vae_psnr_heldout_db'), 2)} dB")
        L += ["; ".join(parts) + ".", ""]
    if strips:
        L += [f"![world-model frame strip]({_rel(out, strips[0])})", ""]
        if len(strips) > 1:
            L += ["More strips: " + ", ".join(_link(out, p, p.name) for p in strips[1:6]), ""]
    else:
        L += ["*No frame strips in `wm/` (run `world2act wm-eval` for ground truth vs generated strips).*", ""]
    if imagined:
        L += ["Imagined rollouts: " + ", ".join(_link(out, v, v.stem + " ▶ mp4") for v in imagined[:3]), ""]
    return L


def _align_section(out: Path, summary: dict) -> list[str]:
    L = ["### Stage 1: video–action alignment", ""]
    m = _load(out / "align" / "metrics.json")
    if not m:
        return L + ["*Not run: no `align/metrics.json`.*", ""]
    summary["align"] = m
    h = m.get("heldout") or {}
    if h:
        L += [f"Variant `{m.get('variant')}`. Held-out top-1 retrieval on {h.get('n')} clips: video→action "
              f"**{_fmt(h.get('top1_v2a'))}**, action→video **{_fmt(h.get('top1_a2v'))}** (chance {_fmt(h.get('chance'))}); "
              f"among same-skill candidates {_fmt(h.get('top1_v2a_same_skill'))} / {_fmt(h.get('top1_a2v_same_skill'))} "
              f"(chance {_fmt(h.get('chance_same_skill'))}); cosine positive {_fmt(h.get('pos_cos'))} vs hard negative "
              f"{_fmt(h.get('hard_neg_cos'))}.", ""]
    for w in m.get("warnings") or []:
        L.append(f"> **Warning:** {w}")
    fig = _figure(out, "stage1_retrieval.png", lambda p: _retrieval_plot(m, p)) if h else None
    if fig:
        L += [f"![Stage 1 retrieval]({_rel(out, fig)})", ""]
    curves = out / "align" / "loss_curves.png"
    if curves.is_file():
        L += [("Training curves: " if fig else "") + (_link(out, curves, "loss_curves.png") if fig
                                                     else f"![Stage 1 curves]({_rel(out, curves)})"), ""]
    return L


def _posttrain_section(out: Path, summary: dict) -> list[str]:
    L = ["### Stage 2: latent action post-training", ""]
    m = _load(out / "posttrain" / "metrics.json")
    if not m:
        return L + ["*Not run: no `posttrain/metrics.json`.*", ""]
    summary["posttrain"] = m
    warnings = m.get("warnings") or []
    if warnings:
        L += [f"> **Warning:** {w}" for w in warnings] + [""]
    parts = [f"{m.get('iterations')} iterations ({m.get('optimizer_steps', 'n/a')} optimizer steps)"]
    if m.get("targets"):
        parts.append(f"targets: {m['targets']}")
    for key, label, nd in (("pos_cos", "positive-pair cosine", 3), ("rollout_success_rate", "rollout success", 3),
                           ("delta_abs", "mean |Δa|", 3), ("loss", "loss", 3)):
        a, b = m.get(f"{key}_first"), m.get(f"{key}_last")
        if a is not None or b is not None:
            parts.append(f"{label} {_fmt(a, nd)} → {_fmt(b, nd)}")
    L += ["; ".join(parts) + ".", ""]
    curves = out / "posttrain" / "curves.png"
    if curves.is_file():
        L += [f"![Stage 2 curves]({_rel(out, curves)})", ""]
    vids = [v for v in sorted((out / "posttrain").rglob("*.mp4")) if "imagined" not in v.parts and "checkpoint" not in str(v)]
    if vids:
        L += ["Target videos: " + ", ".join(_link(out, v, v.stem + " ▶ mp4") for v in vids[:3]), ""]
    return L


def _stages_section(out: Path, summary: dict) -> list[str]:
    L = [f"## {SECTIONS[2]}", ""]
    for fn in (_skills_section, _wm_section, _align_section, _posttrain_section):
        L += _guard(fn, out, summary)
    return L


def _walltime_section(timings: dict, summary: dict) -> list[str]:
    L = [f"## {SECTIONS[3]}", "", "| stage | status | wall time (s) |", "|---|---|---:|"]
    for st, t in timings.items():
        L.append(f"| {st} | {t.get('status')} | {_fmt(t.get('wall_s'), 1)} |")
    total = sum(float(t.get("wall_s") or 0) for t in timings.values())
    return L + [f"| **total** | | {total:.1f} |", "", f"git revision `{summary['git_revision']}`", ""]


def _appendix(out: Path, summary: dict) -> list[str]:
    L = [f"## {SECTIONS[4]}", "", "Every dict below is also in `summary.json`.", ""]

    def block(title: str, rows: list[str]) -> None:
        L.extend(["<details>", f"<summary>{title}</summary>", "", *rows, "", "</details>", ""])

    if summary.get("collect"):
        block("demos/meta/collect_stats.json", _metric_table(summary["collect"]))
    ss = _load(out / "skills" / "meta" / "skill_stats.json")
    if ss:
        block("skills/meta/skill_stats.json", _metric_table({k: v for k, v in ss.items() if k != "lengths"}))
    for name in ("wm", "align", "posttrain"):
        if summary.get(name):
            block(f"{name}/metrics.json", _metric_table(summary[name]))
    for key, title in (("base", "eval-base overall"), ("posttrained", "eval-posttrained overall")):
        o = (summary.get("success") or {}).get(key)
        if o:
            block(title, _metric_table(o))
    evlat = summary.get("latency_eval") or {}
    if evlat:
        from world2act.evaluation.latency import load_note

        rows = ["Timed by each `world2act eval` in its own process, after its episodes (not comparable with each other).", "",
                "| policy | ms per chunk | ms per action | policy Hz | other load (cores) |", "|---|---:|---:|---:|---:|"]
        for label, lat in evlat.items():
            rows.append(f"| {label} | {_fmt(lat.get('ms_per_chunk'), 2)} | {_fmt(lat.get('ms_per_action'), 3)} | "
                        f"{_fmt(lat.get('hz'), 1)} | {_fmt(lat.get('other_load_cores'), 2)} |")
        for label, lat in evlat.items():
            note = load_note(lat)
            if note:
                rows += ["", f"**{label}: {note}**"]
        block("eval.json latency (separate processes)", rows)
    if summary.get("latency"):
        block(PAIRED_LATENCY_FILE, _metric_table(summary["latency"]))
    if len(L) == 4:
        L += ["(no metrics)", ""]
    return L


def _guard(fn: Callable[[Path, dict], list[str]], out: Path, summary: dict) -> list[str]:
    """Run one section builder; an unreadable artifact becomes a one-line note, never a crash."""
    try:
        return fn(out, summary)
    except Exception as e:  # noqa: BLE001
        log.warning("report section %s failed: %s: %s", fn.__name__, type(e).__name__, e)
        return [f"*{fn.__name__.strip('_').replace('_section', '')}: could not be read ({type(e).__name__}: {e}).*", ""]


def write_report(out: Path, *, preset: str, preset_meta: dict, timings: dict) -> dict:
    """Write ``out/report.md`` and ``out/summary.json``; return the summary.

    Args:
        out: the pipeline folder (stage folders ``demos``, ``skills``, ``wm``, ``align``,
            ``posttrain``, ``eval-base``, ``eval-posttrained``; any may be missing).
        preset: preset name (title). preset_meta: the preset's meta dict (``description``).
        timings: ``{stage: {"status": str, "wall_s": seconds}}`` in stage order.

    Returns:
        the summary dict also written to ``summary.json``: ``preset``, ``preset_meta``,
        ``git_revision``, ``versions``, ``stages`` (= timings), ``success`` (``base``,
        ``posttrained``: eval overall dicts; ``paired_difference``), ``headline`` and
        ``verdict`` (when paired episodes exist), ``latency`` (the interleaved timing, without
        per-round times), ``residual_latency_overhead`` (paired ratio − 1, a fraction; None
        without a paired timing), ``latency_eval`` (each eval.json's own figures), and the raw
        metric dicts ``collect``, ``skills``, ``wm``, ``align``, ``posttrain`` where present.
    """
    out = Path(out)
    summary: dict[str, Any] = {"preset": preset, "preset_meta": preset_meta, "git_revision": git_revision(),
                               "versions": versions(), "stages": timings}
    L: list[str] = [f"# World2Act pipeline report — preset `{preset}`", ""]
    if preset_meta.get("description"):
        L += [preset_meta["description"], ""]
    body: list[str] = []
    body += _guard(_success_section, out, summary)
    body += _guard(_latency_section, out, summary)
    body += _guard(_stages_section, out, summary)
    body += _walltime_section(timings, summary)
    body += _guard(_appendix, out, summary)
    if summary.get("headline"):
        L += [f"**Verdict: World2Act is {summary['verdict']} the base at this budget** (paired test below).", ""]
    atomic_write(out / "report.md", "\n".join(L + body) + "\n")
    write_json(out / "summary.json", summary)
    return summary


@dataclasses.dataclass
class ReportConfig:
    """Configuration of ``world2act report``: (re)write ``report.md`` / ``summary.json`` of an
    existing pipeline folder (``--out``), stage wall times from each stage's ``pipeline_stage.json``.

    Attributes:
        preset: the preset named in the report (default: the one the folder's ``summary.json`` records).
    """

    preset: str = opt("", "preset named in the report (default: the one summary.json records)")


Config, RUN_OPTIONS = ReportConfig, ()


def main(cfg: ReportConfig, args) -> int:
    """``world2act report --out DIR``: rewrite the report of a pipeline folder."""
    out = Path(args.out)
    if not out.is_dir():
        raise World2ActError(f"report: --out {out} is not a pipeline folder")
    timings = {}
    for stamp in sorted(out.glob("*/pipeline_stage.json")):
        timings[stamp.parent.name] = {"status": "ran", "wall_s": (_load(stamp) or {}).get("wall_s")}
    old = _load(out / "summary.json") or {}
    write_report(out, preset=cfg.preset or old.get("preset") or "unknown", preset_meta=old.get("preset_meta") or {},
                 timings=timings)
    print(out / "report.md")
    return 0


if __name__ == "__main__":  # ``python -m world2act.report OUT [--preset NAME]``, kept for one release
    import sys

    from world2act.cli import main as cli_main

    argv = sys.argv[1:]
    raise SystemExit(cli_main(["report", *(["--out", argv[0], *argv[1:]] if argv and not argv[0].startswith("-")
                                            else argv)]))
