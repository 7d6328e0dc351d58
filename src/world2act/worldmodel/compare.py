"""Skill-WM vs Base-WM on held-out multi-skill episodes (paper Sec. 5.3, appendix A, Fig. S1).

For every held-out demonstration (the Skill-WM's ``clips.json`` lists them):

* Skill-WM: skill-compositional rollout from the demo's first skill frame, one clip per
  training window of each skill (the ground-truth skill durations decide how many windows,
  exactly as in training), compared with the ground-truth frames at the same rows.
* Base-WM: one clip for the whole episode from its first frame and the global instruction,
  compared with the ground-truth frames at the resampled rows it was trained on.

Both are also compared with the repeat-the-first-frame baseline. Writes ``compare.json`` and a
frame strip PNG per model and episode (top row ground truth, bottom row generated).

Usage: ``world2act wm-compare --skill-wm DIR --base-wm DIR --demos DIR --skills DIR --out DIR``
(``python -m world2act.worldmodel.compare`` with the same options still works for one release).
"""
from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

import numpy as np

from world2act import World2ActError
from world2act.utils.config import opt


@dataclasses.dataclass
class WMCompareConfig:
    """Configuration of ``world2act wm-compare`` (Skill-WM vs Base-WM, paper Sec. 5.3).

    Attributes:
        skill_wm: Skill-WM folder (``train-wm`` on skill clips); its ``clips.json`` names the
            held-out demonstrations.
        base_wm: Base-WM folder (``train-wm --clips episodes``); empty: Skill-WM only.
        demos: the demonstration dataset both world models' clips came from.
        skills: the skill dataset (``segment``) of those demonstrations.
        episodes: held-out demonstrations to compare.
        steps: flow-matching sampling steps per clip (0: the model's own default).
        seed: sampling seed (``--seed``).
    """

    skill_wm: str = opt("", "Skill-WM folder (output of `world2act train-wm` on skill clips)", required=True)
    base_wm: str = opt("", "Base-WM folder (train-wm on whole episodes); omit for Skill-WM only")
    demos: str = opt("", "demonstration dataset (output of `world2act collect`)", required=True)
    skills: str = opt("", "skill dataset (output of `world2act segment`)", required=True)
    episodes: int = opt(8, "held-out demonstrations to compare (default 8)")
    steps: int = opt(0, "flow-matching sampling steps per clip (default 0: the model's own)")
    seed: int = 0


def frame_strip(path: Path, gt: np.ndarray, gen: np.ndarray, title: str, columns: int = 9) -> None:
    """Save a 2-row PNG: ground truth (top) and generated (bottom) at ``columns`` evenly spaced frames."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from world2act.utils.io import atomic_path

    idx = np.unique(np.linspace(0, len(gen) - 1, columns).round().astype(int))
    fig, axes = plt.subplots(2, len(idx), figsize=(1.6 * len(idx) * gen.shape[2] / gen.shape[1], 3.6), squeeze=False)
    for c, i in enumerate(idx):
        for r, src in enumerate((gt, gen)):
            axes[r, c].imshow(src[i]); axes[r, c].set_xticks([]); axes[r, c].set_yticks([])
        axes[0, c].set_title(f"t={i}", fontsize=7)
    axes[0, 0].set_ylabel("ground truth", fontsize=7); axes[1, 0].set_ylabel("generated", fontsize=7)
    fig.suptitle(title, fontsize=8)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)


def _scores(gen, gt):
    from world2act.worldmodel.metrics import psnr, ssim

    rep = np.repeat(gt[:1], len(gt) - 1, 0)
    return {"psnr": psnr(gen[1:], gt[1:]), "ssim": ssim(gen[1:], gt[1:]),
            "last_psnr": psnr(gen[-1:], gt[-1:]), "last_ssim": ssim(gen[-1:], gt[-1:]),
            "baseline_psnr": psnr(rep, gt[1:]), "baseline_ssim": ssim(rep, gt[1:]), "frames": int(len(gen))}


def compare(skill_wm: str, base_wm: str | None, demos: str, skills: str, out: str, *, max_episodes: int = 8,
            steps: int | None = None, seed: int = 0) -> dict:
    """Run the comparison; returns and writes ``out/compare.json``."""
    from world2act.data import LeRobotDataset
    from world2act.utils.io import read_json, write_json
    from world2act.worldmodel.data import episode_rows, skill_windows, stitch
    from world2act.worldmodel.model import WorldModel

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    swm = WorldModel.load(skill_wm)
    bwm = WorldModel.load(base_wm) if base_wm else None
    held = read_json(Path(skill_wm) / "clips.json")["held_out_source_episodes"][:max_episodes]
    if not held:
        raise World2ActError(f"{skill_wm}/clips.json lists no held-out demonstrations")
    dds, sds = LeRobotDataset(demos), LeRobotDataset(skills)
    by_src: dict[int, list[dict]] = {}
    for i in range(sds.num_episodes):
        m = sds.episode_meta(i)
        by_src.setdefault(int(m["source_episode"]), []).append(m)
    cfg = swm.config
    rows_out = {"skill_wm": [], "base_wm": []}
    for src in held:
        segs = sorted(by_src.get(src, []), key=lambda m: int(m.get("skill_index", 0)))
        if not segs:
            continue
        ep = dds.load_episode(src, cameras=list(cfg.cameras))
        frames = stitch(ep.images, cfg.cameras, cfg.layout)
        prompts, gt_rows = [], []
        for m in segs:
            f0, length = int(m["frame_from"]), int(m["length"])
            for w, (rows, _) in enumerate(skill_windows(length, cfg.num_frames, cfg.frame_stride, "pad")):
                prompts.append(m["task"])
                gt_rows += [f0 + r for r in (rows if not gt_rows else rows[1:])]
        gen, _ = swm.rollout(frames[gt_rows[0]], prompts, num_inference_steps=steps, seed=seed)
        gt = frames[gt_rows]
        s = _scores(gen, gt)
        s.update(source_episode=src, instruction=ep.task, prompts=prompts)
        rows_out["skill_wm"].append(s)
        frame_strip(out / f"strip_skill_ep{src}.png", gt, gen, f"Skill-WM, episode {src}: {ep.task}")
        if bwm is not None:
            brows = episode_rows(len(frames), bwm.config.num_frames)
            bgen, _ = bwm.generate_clip(frames[0], ep.task, num_inference_steps=steps, seed=seed)
            bgt = frames[brows]
            b = _scores(bgen, bgt)
            b.update(source_episode=src, instruction=ep.task)
            rows_out["base_wm"].append(b)
            frame_strip(out / f"strip_base_ep{src}.png", bgt, bgen, f"Base-WM, episode {src}: {ep.task}")
    summary = {}
    for k, rs in rows_out.items():
        if rs:
            summary[k] = {m: float(np.mean([r[m] for r in rs])) for m in
                          ("psnr", "ssim", "last_psnr", "last_ssim", "baseline_psnr", "baseline_ssim")}
            summary[k]["episodes"] = len(rs)
    res = {"summary": summary, "episodes": rows_out, "sampling_steps": steps or cfg.num_inference_steps}
    write_json(out / "compare.json", res)
    return res


Config, RUN_OPTIONS = WMCompareConfig, ()


def main(cfg: WMCompareConfig, args) -> int:
    """``world2act wm-compare``: write ``compare.json`` and frame strips into ``--out``."""
    res = compare(cfg.skill_wm, cfg.base_wm or None, cfg.demos, cfg.skills, args.out, max_episodes=cfg.episodes,
                  steps=cfg.steps or None, seed=cfg.seed)
    print(json.dumps(res["summary"], indent=1))
    return 0


if __name__ == "__main__":  # the spelling before `world2act wm-compare`, kept for one release
    from world2act.cli import main as cli_main

    raise SystemExit(cli_main(["wm-compare", *sys.argv[1:]]))
