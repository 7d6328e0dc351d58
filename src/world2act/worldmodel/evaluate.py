"""``world2act wm-eval``: world-model fidelity on held-out demonstrations, on robot pixels too.

Whole-frame PSNR is dominated by the static background (a table, a wall), so a world model that
leaves the arm out of its imagination can still score well on it. This command restores every
held-out demonstration's stored simulator states, renders the simulator's segmentation masks of
the world model's cameras at the frames it uses (``render_segmentation`` of
:class:`~world2act.envs.metaworld.MetaWorldEnv` / :class:`~world2act.envs.libero.LiberoEnv`:
the arm and gripper), stitches them in the world model's layout, and reports for the demo's
frames ``i = 1 ..`` (frame ``i`` = the observation before control step ``stride · i``):

* **reconstruction**: the VAE's encode → decode of the real video, cut into the world model's
  17-frame windows exactly as a rollout concatenates its clips (window k gives frames
  ``16k+1 .. 16k+16``);
* **generation**: the skill-compositional imagination Stage 2 uses
  (:func:`world2act.posttrain.loop.imagine_targets`: schema decomposition, ``clip_prompts``,
  ``WorldModel.rollout`` from the demo's first frame; same seed as ``world2act diagnose``'s
  imagined row, so both commands judge the same imagination), compared frame by frame with the
  real demo on the episode grid (frames the shorter of the two has);
* **repeat-first baseline**: the first real frame held still;

each as PSNR/SSIM over all pixels and over robot pixels (the real frame's mask;
:func:`world2act.worldmodel.metrics.masked_psnr`), per view, and per latent frame (latent
frame ``j ≥ 1`` = frames ``4j−3 .. 4j``). It also writes frame strips (real above
reconstruction above imagination, every 4th frame, the real robot outlined) as PNG.

Pure helpers (:func:`select_episodes`, :func:`view_boxes`, :func:`window_starts`,
:func:`frame_metrics`, :func:`aggregate`, :func:`outline`, :func:`strip_image`) hold the logic
and are unit-tested; :func:`run` loads, renders, generates and writes.
"""
from __future__ import annotations

import dataclasses
import logging
import math
import time
from pathlib import Path

import numpy as np

from world2act import World2ActError
from world2act.envs.registry import SPECS
from world2act.utils.config import opt

log = logging.getLogger(__name__)

KINDS = ("reconstruction", "generation", "repeat_first")
SSIM_WINDOW = 7  # metrics.ssim's default Gaussian window
KIND_LABELS = {"reconstruction": "VAE reconstruction", "generation": "generation (skill-compositional rollout)",
               "repeat_first": "repeat the first frame (baseline)"}
ROBOT_BODIES = {"metaworld": "Sawyer arm and gripper (body subtree of right_arm_base_link, head excluded)",
                "libero": "Panda arm and gripper (bodies robot0_*, gripper0_*; mount excluded)"}


# --------------------------------------------------------------------------- config
@dataclasses.dataclass
class WMEvalConfig:
    """Configuration of ``world2act wm-eval``.

    Attributes:
        wm: world-model folder (``world2act train-wm``); its ``clips.json`` names the held-out
            demos (``held_out_source_episodes``).
        dataset: the demonstration dataset (``world2act collect``, with ``sim_state``) the world
            model's skill dataset was segmented from.
        episodes: held-out demos to evaluate (0 = all), one per task in turn.
        steps: flow-matching sampling steps per imagined clip (Stage 2's default 10).
        strips: demos that get a frame strip PNG (one per task in turn).
        strip_every: frame interval of a strip's columns (4 = one per latent frame).
        strip_scale: nearest-neighbour magnification of strip tiles.
        seed: imagination seed (clip k of demo d uses ``seed·100003 + 1000·d + k``, as ``diagnose``).
        cond_frames: conditioning latent frames of clips after the first (``WorldModel.rollout``;
            1 = the last frame of the previous clip, as the paper; n > 1 needs a world model
            trained with ``train-wm cond_frames >= n``).
    """

    wm: str = opt("", "world-model folder (output of `world2act train-wm`)")
    dataset: str = opt("", "demonstration dataset with sim_state (output of `world2act collect`)")
    episodes: int = opt(8, "held-out demos to evaluate, one per task in turn (default 8; 0 = all)")
    steps: int = opt(10, "sampling steps per imagined clip (default 10)")
    strips: int = opt(3, "demos that get a frame strip PNG (default 3)")
    strip_every: int = 4
    strip_scale: int = 2
    seed: int = 0
    cond_frames: int = opt(1, "conditioning latent frames of clips after the first (default 1, the paper's)")

    def __post_init__(self) -> None:
        if self.cond_frames < 1:
            raise World2ActError(f"wm-eval: cond_frames must be >= 1, got {self.cond_frames}")
        if self.episodes < 0:
            raise World2ActError(f"wm-eval: episodes must be ≥ 0 (0 = all), got {self.episodes}")
        if self.steps < 1 or self.strip_every < 1 or self.strip_scale < 1 or self.strips < 0:
            raise World2ActError(f"wm-eval: steps, strip_every and strip_scale must be ≥ 1 and strips ≥ 0 (got "
                                 f"{self.steps}, {self.strip_every}, {self.strip_scale}, {self.strips})")


# --------------------------------------------------------------------------- pure helpers
def _nanmean(xs) -> float:
    xs = np.asarray([float(x) for x in xs], dtype=np.float64)
    xs = xs[np.isfinite(xs)]
    return float(xs.mean()) if xs.size else float("nan")


def select_episodes(ids: list[int], task_of: dict[int, str], n: int) -> list[int]:
    """Up to ``n`` held-out demos (0 = all): one per task in turn (tasks in order of their first
    demo), so a few demos cover as many tasks as possible. Returned sorted."""
    groups: dict[str, list[int]] = {}
    for i in sorted(ids):
        groups.setdefault(task_of[i], []).append(i)
    budget = n or len(ids)
    chosen: list[int] = []
    r = 0
    while len(chosen) < budget and any(len(g) > r for g in groups.values()):
        for g in groups.values():
            if len(chosen) < budget and len(g) > r:
                chosen.append(g[r])
        r += 1
    return sorted(chosen)


def view_boxes(cameras, layout: str, image_size: tuple[int, int]) -> dict[str, tuple[int, int, int, int]]:
    """Where each view lies in a stitched frame: camera -> ``(y0, y1, x0, x1)``
    (``world2act.data.stitch_views``: ``1x2`` side by side, ``2x2`` row-major, ``1x1`` alone)."""
    H, W = (int(v) for v in image_size)
    if layout == "1x1":
        return {cameras[0]: (0, H, 0, W)}
    out = {}
    for k, cam in enumerate(cameras):
        r, c = divmod(k, 2)
        out[cam] = (r * H, (r + 1) * H, c * W, (c + 1) * W)
    return out


def stitch_masks(masks: dict[str, np.ndarray], cameras, layout: str, image_size) -> np.ndarray:
    """Bool masks camera -> ``[..., H, W]`` tiled like :func:`world2act.data.stitch_views`
    (an empty cell is False)."""
    boxes = view_boxes(cameras, layout, image_size)
    first = np.asarray(masks[cameras[0]])
    rows, cols = {"1x1": (1, 1), "1x2": (1, 2), "2x2": (2, 2)}[layout]
    out = np.zeros(first.shape[:-2] + (rows * int(image_size[0]), cols * int(image_size[1])), dtype=bool)
    for cam, (y0, y1, x0, x1) in boxes.items():
        out[..., y0:y1, x0:x1] = masks[cam]
    return out


def window_starts(num_real: int, num_frames: int) -> list[int]:
    """First frame of each world-model window covering ``num_real`` frames the way a rollout
    concatenates its clips: windows start every ``num_frames − 1`` frames (shared boundary
    frame), as many as needed to reach the last real frame (at least one)."""
    span = num_frames - 1
    n = max(1, math.ceil((num_real - 1) / span))
    return [k * span for k in range(n)]


def assemble_windows(windows: np.ndarray, num_real: int) -> np.ndarray:
    """Concatenate decoded windows ``[n, T, ...]`` like a rollout (window 0 whole, later windows
    from their frame 1) and keep the first ``num_real`` frames."""
    parts = [windows[0]] + [w[1:] for w in windows[1:]]
    return np.concatenate(parts, 0)[:num_real]


def frame_metrics(pred: np.ndarray, real: np.ndarray, masks: np.ndarray, boxes: dict) -> dict[str, dict[str, np.ndarray]]:
    """Per-frame PSNR/SSIM of ``pred`` vs ``real`` (uint8 ``[N, H, W, 3]``, stitched) over all pixels,
    robot pixels (``masks`` bool ``[N, H, W]``), and per view.

    Returns:
        region -> ``{"psnr": [N], "ssim": [N]}`` for regions ``all``, ``robot``, ``<cam>/all``,
        ``<cam>/robot`` (NaN for a frame without robot pixels in that region).
    """
    from world2act.worldmodel.metrics import psnr_per_frame, ssim_from_map, ssim_map

    w, r = SSIM_WINDOW, SSIM_WINDOW // 2
    smap = ssim_map(pred, real, w)  # one map for every region: a view's SSIM = windows centred inside the view
    out = {"all": {"psnr": psnr_per_frame(pred, real), "ssim": ssim_from_map(smap, None, w)},
           "robot": {"psnr": psnr_per_frame(pred, real, masks), "ssim": ssim_from_map(smap, masks, w)}}
    for cam, (y0, y1, x0, x1) in boxes.items():
        p, q, m = pred[:, y0:y1, x0:x1], real[:, y0:y1, x0:x1], masks[:, y0:y1, x0:x1]
        view = np.zeros(masks.shape[1:], bool)  # centres whose whole window lies in the view (= the crop's windows)
        view[y0 + r:y1 - r, x0 + r:x1 - r] = True
        out[f"{cam}/all"] = {"psnr": psnr_per_frame(p, q), "ssim": ssim_from_map(smap, view, w)}
        out[f"{cam}/robot"] = {"psnr": psnr_per_frame(p, q, m), "ssim": ssim_from_map(smap, masks & view, w)}
    return out


def aggregate(per_demo: list[dict[str, dict[str, dict[str, np.ndarray]]]], frames_per_latent: int = 4) -> tuple[dict, list[dict]]:
    """Means over demos (each demo: the NaN-mean over its frames) and per latent frame.

    Args:
        per_demo: per demo, kind -> region -> metric -> per-frame values for frames ``1..N``
            (index 0 = frame 1).
        frames_per_latent: frames per latent frame (4: latent frame j ≥ 1 = frames 4j−3..4j).

    Returns:
        (summary kind -> region -> metric -> mean over demos with a finite value,
        per latent frame ``[{"latent_frame": j, "frames": [4j−3, 4j], "n_demos",
        kind: {"all"|"robot": {metric: mean}}}]``; the per-latent value of a demo is its
        NaN-mean over that latent frame's frames).
    """
    summary: dict = {}
    for kind in (per_demo[0] if per_demo else {}):
        summary[kind] = {reg: {met: _nanmean(_nanmean(d[kind][reg][met]) for d in per_demo)
                               for met in per_demo[0][kind][reg]} for reg in per_demo[0][kind]}
    def n_frames(d) -> int:  # frames of a demo: any kind, any region
        return len(next(iter(next(iter(d.values())).values()))["psnr"])

    n_max = max((n_frames(d) for d in per_demo), default=0)
    J = math.ceil(n_max / frames_per_latent)
    latent = []
    for j in range(1, J + 1):
        lo, hi = frames_per_latent * (j - 1), frames_per_latent * j  # indices of frames 4j-3 .. 4j
        row: dict = {"latent_frame": j, "frames": [lo + 1, hi], "n_demos": 0}
        for kind in summary:
            row[kind] = {}
            for reg in ("all", "robot"):
                row[kind][reg] = {}
                for met in ("psnr", "ssim"):
                    vals = [_nanmean(d[kind][reg][met][lo:hi]) for d in per_demo if len(d[kind][reg][met]) > lo]
                    row[kind][reg][met] = _nanmean(vals)
                    row["n_demos"] = max(row["n_demos"], len(vals))
        latent.append(row)
    return summary, latent


def init_state_dependence(gens: dict[int, np.ndarray], reals: dict[int, np.ndarray], masks: dict[int, np.ndarray],
                          task_of: dict[int, str]) -> dict:
    """Does an imagination depend on its init state? PSNR of demo ``d``'s imagination against its
    own real video and against the real videos of the other evaluated demos of the same task.

    A world model that renders the task's typical motion and ignores where things are in the
    conditioning frame scores the same against every demo of the task (own − other ≈ 0); one that
    follows its init state scores higher against its own demo. ``real_vs_other`` (demo ``d``'s
    real video against the others') says how far apart the demos of a task are at all.

    Args:
        gens / reals: episode → uint8 frames ``[N, H, W, 3]`` (frame 0 = the conditioning frame,
            skipped); frames compared up to the shorter video of each pair.
        masks: episode → bool robot masks ``[N, H, W]`` of the real frames; the robot pixels of a
            pair are those of either demo.
        task_of: episode → task; demos without another demo of their task are skipped.

    Returns:
        ``{"demos": n, "per_demo": [{episode, others, own, other, real_vs_other}], "all"|"robot":
        {"own", "other", "own_minus_other", "real_vs_other", "demos_own_above_other"}}`` (PSNR dB,
        means over demos; a demo's "other" is its mean over the other demos).
    """
    from world2act.worldmodel.metrics import psnr_per_frame

    def pair(a, b, ma, mb) -> dict[str, float]:
        n = min(len(a), len(b))
        if n < 2:
            return {"all": float("nan"), "robot": float("nan")}
        return {"all": _nanmean(psnr_per_frame(a[1:n], b[1:n])),
                "robot": _nanmean(psnr_per_frame(a[1:n], b[1:n], ma[1:n] | mb[1:n]))}

    rows = []
    for d in sorted(gens):
        others = [e for e in sorted(gens) if e != d and task_of[e] == task_of[d]]
        if not others:
            continue
        own = pair(gens[d], reals[d], masks[d], masks[d])
        oth = [pair(gens[d], reals[e], masks[d], masks[e]) for e in others]
        rr = [pair(reals[d], reals[e], masks[d], masks[e]) for e in others]
        rows.append({"episode": d, "others": others, "own": own,
                     "other": {r: _nanmean(o[r] for o in oth) for r in ("all", "robot")},
                     "real_vs_other": {r: _nanmean(o[r] for o in rr) for r in ("all", "robot")}})
    out: dict = {"demos": len(rows), "per_demo": rows}
    for r in ("all", "robot"):
        diff = [p["own"][r] - p["other"][r] for p in rows]
        out[r] = {"own": _nanmean(p["own"][r] for p in rows), "other": _nanmean(p["other"][r] for p in rows),
                  "own_minus_other": _nanmean(diff), "real_vs_other": _nanmean(p["real_vs_other"][r] for p in rows),
                  "demos_own_above_other": int(sum(1 for x in diff if x > 0))}
    return out


def outline(mask: np.ndarray) -> np.ndarray:
    """Boundary pixels of a bool mask ``[H, W]`` (mask pixels with a 4-neighbour outside it;
    the image border counts as inside)."""
    m = np.asarray(mask, bool)
    p = np.pad(m, 1, mode="edge")
    inner = p[:-2, 1:-1] & p[2:, 1:-1] & p[1:-1, :-2] & p[1:-1, 2:]
    return m & ~inner


def strip_image(rows: list[tuple[str, np.ndarray]], masks: np.ndarray, columns: list[int], *, outlined=(0,),
                scale: int = 2, header=None, color=(255, 0, 255)) -> np.ndarray:
    """A frame strip: one row of tiles per video, one column per frame index.

    Args:
        rows: ``(label, frames uint8 [N, H, W, 3])`` top to bottom (all ``N ≥ max(columns)+1``).
        masks: bool ``[N, H, W]`` robot masks of the real frames.
        columns: frame indices to show.
        outlined: row indices whose tiles get the robot mask's outline (default: the first row).
        scale: nearest-neighbour magnification.
        header: optional per-column captions.

    Returns:
        uint8 ``[rows·(H·s+gap) + header, label + columns·(W·s+gap), 3]``.
    """
    from PIL import Image, ImageDraw

    H, W = rows[0][1].shape[1:3]
    gap, label_w, head_h = 2, 76, 14 if header else 0
    th, tw = H * scale, W * scale
    img = np.full((head_h + len(rows) * (th + gap), label_w + len(columns) * (tw + gap), 3), 255, np.uint8)
    for r, (_, frames) in enumerate(rows):
        for c, i in enumerate(columns):
            tile = frames[i].repeat(scale, 0).repeat(scale, 1).copy()
            if r in outlined:
                tile[outline(masks[i].repeat(scale, 0).repeat(scale, 1))] = color
            y, x = head_h + r * (th + gap), label_w + c * (tw + gap)
            img[y:y + th, x:x + tw] = tile
    pil = Image.fromarray(img)
    draw = ImageDraw.Draw(pil)
    for r, (label, _) in enumerate(rows):
        draw.text((3, head_h + r * (th + gap) + th // 2 - 6), label, fill=(0, 0, 0))
    for c, cap in enumerate(header or []):
        draw.text((label_w + c * (tw + gap) + 2, 1), str(cap), fill=(0, 0, 0))
    return np.asarray(pil)


# --------------------------------------------------------------------------- inputs
def heldout_episodes(wm_dir: Path, ds, dataset: str) -> list[int]:
    """The world model's held-out demos (``WM/clips.json`` → ``held_out_source_episodes``).

    Raises:
        World2ActError: no ``clips.json`` or an empty list, an index outside the dataset, or a
            held-out demo whose instruction differs from what the world model recorded for it.
    """
    from world2act.utils.io import read_json

    p = wm_dir / "clips.json"
    if not p.is_file():
        raise World2ActError(f"--wm {wm_dir}: no clips.json, so the world model's held-out demos are unknown")
    cj = read_json(p)
    ids = sorted({int(x) for x in cj.get("held_out_source_episodes", [])})
    if not ids:
        raise World2ActError(f"--wm {wm_dir}: clips.json lists no held-out demos (held_out_source_episodes)")
    outside = [i for i in ids if not 0 <= i < ds.num_episodes]
    if outside:
        raise World2ActError(f"--dataset {dataset}: has {ds.num_episodes} episodes but the world model's held-out demos "
                             f"{outside} lie outside it; pass the demo dataset the world model's skills came from")
    records = {int(c["source_episode"]): str(c["instruction"]).strip()
               for c in cj.get("clips", []) if "source_episode" in c and c.get("instruction")}
    for i in ids:
        task = str(ds.episode_meta(i)["task"]).strip()
        if i in records and records[i] != task:
            raise World2ActError(f"--dataset {dataset}: episode {i} is {task!r} but the world model's held-out demo {i} "
                                 f"was {records[i]!r}; pass the demo dataset the world model came from")
    return ids


def check_inputs(wc, ds, cfg: WMEvalConfig, episodes: list[int]) -> dict[int, tuple[str, object]]:
    """Check the dataset can be re-rendered for the world model; returns episode -> (benchmark, task_id).

    Raises:
        World2ActError: a camera the world model reads is missing, the dataset stores no
            ``sim_state``, or an episode does not record its benchmark and task (one line each).
    """
    from world2act.envs import BENCHMARKS, check_cameras

    missing = [c for c in wc.cameras if c not in ds.cameras]
    if missing:
        raise World2ActError(f"mismatched components: dataset {cfg.dataset} lacks cameras {missing} that world model "
                             f"{cfg.wm} needs (dataset has {list(ds.cameras)})")
    if ds.spec.sim_state_dim is None:
        raise World2ActError(f"--dataset {cfg.dataset}: no sim_state feature, so the robot masks cannot be rendered "
                             "(collect stores it; datasets from elsewhere lack it)")
    out = {}
    for i in episodes:
        m = ds.episode_meta(i)
        bm, tid = m.get("benchmark"), m.get("task_id")
        if bm not in BENCHMARKS or tid is None:
            raise World2ActError(f"--dataset {cfg.dataset}: episode {i} does not record its benchmark and task_id "
                                 f"(meta has benchmark={bm!r}, task_id={tid!r}); wm-eval re-renders collect's datasets")
        check_cameras(bm, list(wc.cameras))
        out[i] = (bm, tid)
    return out


@dataclasses.dataclass
class DemoFrames:
    """One held-out demo on the world model's frame grid (frame i = row ``stride·i``)."""

    episode: int
    task: str
    benchmark: str
    task_id: object
    length: int
    rows: np.ndarray        # [F] dataset rows
    frames: np.ndarray      # [F, H, W, 3] uint8, stitched in the WM layout
    masks: np.ndarray       # [F, H, W] bool robot pixels, stitched
    rerender_psnr: float    # PSNR of the re-rendered RGB vs the stored frames (mask alignment check)
    view_fraction: dict     # camera -> mean robot-pixel fraction


def load_demo_frames(ds, episode: int, wc, env, benchmark: str, task_id) -> DemoFrames:
    """Read a demo's frames at the world model's stride and render its robot masks from the stored
    simulator states (``env.set_sim_state`` then ``env.render_segmentation``)."""
    from world2act.align.wm_cache import _resize, _stitch
    from world2act.worldmodel.metrics import psnr

    cams = list(wc.cameras)
    ep = ds.load_episode(episode, cameras=cams)
    if ep.sim_states is None:
        raise World2ActError(f"--dataset {ds.root}: episode {episode} has no sim_state")
    L = len(ep.actions)
    rows = np.arange(0, L, int(wc.frame_stride))
    size = tuple(int(v) for v in wc.image_size)
    views = {c: _resize(ep.images[c][rows], size) for c in cams}
    frames = _stitch(views, cams, wc.layout)
    masks, rgb = {c: [] for c in cams}, {c: [] for c in cams}
    for r in rows:
        env.set_sim_state(ep.sim_states[r])
        seg = env.render_segmentation(cams, size)
        img = env.render(cams, size)
        for c in cams:
            masks[c].append(seg[c])
            rgb[c].append(img[c])
    mk = {c: np.stack(v) for c, v in masks.items()}
    rerender = psnr(np.concatenate([np.stack(rgb[c]) for c in cams], -2), np.concatenate([views[c] for c in cams], -2))
    return DemoFrames(episode, ep.task, benchmark, task_id, L, rows, frames,
                      stitch_masks(mk, cams, wc.layout, size), rerender,
                      {c: float(v.mean()) for c, v in mk.items()})


def reconstruct(wm, frames: np.ndarray) -> np.ndarray:
    """VAE encode → decode of a demo's frames ``[F, H, W, 3]`` in rollout-shaped windows
    (:func:`window_starts`, the last window padded by repeating the last frame)."""
    T, F = int(wm.config.num_frames), len(frames)
    wins = np.stack([frames[np.minimum(s + np.arange(T), F - 1)] for s in window_starts(F, T)])
    rec = np.concatenate([wm.decode(wm.encode(wins[i:i + 4])) for i in range(0, len(wins), 4)])
    return assemble_windows(rec, F)


# --------------------------------------------------------------------------- stage entry
def run(cfg: WMEvalConfig, out: str | Path, *, device: str = "cpu", overwrite: bool = False, progress: bool = True) -> dict:
    """Evaluate the world model on held-out demos and write ``wm_eval.json``, ``wm_eval.md``,
    ``strips/*.png`` and ``manifest.json`` under ``out``.

    Raises:
        World2ActError: a missing input, no held-out demos, a dataset without ``sim_state`` or
            the world model's cameras, an instruction the decomposer cannot split; all checked
            before the world model's weights are loaded or ``out`` is touched.
    """
    from world2act.utils.io import prepare_out_dir
    from world2act.utils.seeding import seed_everything
    from world2act.worldmodel import WorldModel

    started = time.time()
    ds, wm_dir, wc, wm, held, task_of, used, where, skills = _check_inputs(cfg, device)
    out = prepare_out_dir(out, overwrite=overwrite)
    seed_everything(cfg.seed)
    timings: dict[str, float] = {"checks": time.time() - started}

    # ---- robot masks: one simulator per task, closed before the next
    t0 = time.time()
    demos = _load_demos(ds, wc, used, where)
    timings["masks"] = time.time() - t0
    log.info("wm-eval: %d held-out demos, using %s", len(held), used)

    t0 = time.time()
    if wm is None:
        wm = WorldModel.load(wm_dir, device=device)
    wm.eval()
    timings["load_wm"] = time.time() - t0
    per_frame, per_demo, strips, dependence = _evaluate_demos(cfg, out, wm, wc, demos, used, task_of, skills, timings,
                                                              progress)
    return _write_outputs(cfg, out, wc, held, used, task_of, where, per_frame, per_demo, strips, timings, started,
                          dependence)


def _check_inputs(cfg: WMEvalConfig, device: str):
    """The checks made before the world model's weights are loaded (bar a diffusers folder,
    whose config comes with them) or ``out`` is touched. Returns ``(ds, wm_dir, wc, wm, held,
    task_of, used, where, skills)``, ``wm`` being ``None`` unless loaded here."""
    from world2act.data import LeRobotDataset
    from world2act.posttrain.loop import decompose_episodes
    from world2act.worldmodel import WorldModel

    for name in ("wm", "dataset"):
        if not getattr(cfg, name):
            raise World2ActError(f"wm-eval: --{name} is required")
    wm_dir = Path(cfg.wm)
    if not wm_dir.is_dir():
        raise World2ActError(f"--wm {wm_dir}: world-model folder not found")
    ds = LeRobotDataset(cfg.dataset)
    from world2act.worldmodel.model import read_config

    wc = read_config(wm_dir)
    wm = None
    if wc is None:
        wm = WorldModel.load(wm_dir, device=device)
        wc = wm.config
    held = heldout_episodes(wm_dir, ds, cfg.dataset)
    task_of = {i: str(ds.episode_meta(i)["task"]).strip() for i in held}
    used = select_episodes(held, task_of, cfg.episodes)
    where = check_inputs(wc, ds, cfg, used)
    skills = decompose_episodes(used, task_of, cfg.dataset)
    return ds, wm_dir, wc, wm, held, task_of, used, where, skills


def _load_demos(ds, wc, used: list[int], where: dict) -> dict[int, DemoFrames]:
    """The used demos' frames and robot masks: one simulator per task, closed before the next."""
    from world2act.envs import make_env

    demos: dict[int, DemoFrames] = {}
    by_task: dict[tuple, list[int]] = {}
    for i in used:
        by_task.setdefault((where[i][0], str(where[i][1])), []).append(i)
    for (bm, _), eps in by_task.items():
        env = make_env(bm, where[eps[0]][1], camera_size=tuple(wc.image_size), cameras=tuple(wc.cameras))
        try:
            for i in eps:
                demos[i] = load_demo_frames(ds, i, wc, env, bm, where[i][1])
        finally:
            env.close()
    return demos


def _evaluate_demos(cfg: WMEvalConfig, out: Path, wm, wc, demos: dict, used: list[int], task_of: dict, skills: dict,
                    timings: dict, progress: bool):
    """Per demo: VAE reconstruction, imagination from its first frame, the frame metrics of both
    and of the repeated first frame, and (for the chosen demos) a strip under ``out/strips``.
    Adds the phase times to ``timings``; returns ``(per_frame, per_demo, strips)``."""
    from world2act.utils.progress import progress_bar

    boxes = view_boxes(list(wc.cameras), wc.layout, tuple(wc.image_size))
    (out / "strips").mkdir(exist_ok=True)
    strip_eps = set(select_episodes(used, {i: task_of[i] for i in used}, cfg.strips)) if cfg.strips else set()
    per_frame, per_demo, strips, gens = [], [], [], {}
    tt = {"reconstruction": 0.0, "generation": 0.0, "metrics": 0.0, "strips": 0.0}
    for i in progress_bar(used, desc="wm-eval demos", disable=not progress, leave=False):
        d = demos[i]
        t0 = time.time()
        rec = reconstruct(wm, d.frames)
        tt["reconstruction"] += time.time() - t0
        t0 = time.time()
        prompts = wm.clip_prompts(skills[d.task])
        gen, _ = wm.rollout(d.frames[0], prompts, num_inference_steps=cfg.steps, seed=cfg.seed * 100_003 + 1000 * i,
                            cond_frames=cfg.cond_frames)
        tt["generation"] += time.time() - t0
        M = min(len(d.frames), len(gen))
        gens[i] = gen[:M]
        real, mk = d.frames[1:M], d.masks[1:M]
        rep = np.repeat(d.frames[:1], M - 1, 0)
        t0 = time.time()
        pf = {"reconstruction": frame_metrics(rec[1:M], real, mk, boxes),
              "generation": frame_metrics(gen[1:M], real, mk, boxes),
              "repeat_first": frame_metrics(rep, real, mk, boxes)}
        tt["metrics"] += time.time() - t0
        per_frame.append(pf)
        rec_d = {"episode": i, "task": d.task, "benchmark": d.benchmark, "task_id": d.task_id, "length": d.length,
                 "real_frames": len(d.frames), "imagined_frames": int(len(gen)), "frames_compared": M - 1,
                 "prompts": prompts, "robot_fraction": float(mk.mean()) if M > 1 else float("nan"),
                 "robot_fraction_per_view": {c: round(v, 4) for c, v in d.view_fraction.items()},
                 "frames_with_robot": int((mk.reshape(len(mk), -1).any(1)).sum()),
                 "rerender_psnr": round(d.rerender_psnr, 2),
                 **{k: {reg: {met: _nanmean(v) for met, v in r.items()} for reg, r in pf[k].items()} for k in KINDS}}
        if i in strip_eps and M > 1:
            t0 = time.time()
            rec_d["strip"] = _save_strip(cfg, out, i, d, rec, gen, M)
            strips.append(rec_d["strip"])
            tt["strips"] += time.time() - t0
        per_demo.append(rec_d)
        if d.rerender_psnr < 25:
            log.warning("episode %d: re-rendered frames differ from the stored ones (%.1f dB): the masks may not "
                        "line up with the images", i, d.rerender_psnr)
    t0 = time.time()
    dependence = init_state_dependence(gens, {i: demos[i].frames for i in gens}, {i: demos[i].masks for i in gens},
                                       task_of)
    tt["metrics"] += time.time() - t0
    timings.update(tt)
    return per_frame, per_demo, strips, dependence


def _save_strip(cfg: WMEvalConfig, out: Path, i: int, d: DemoFrames, rec, gen, M: int) -> str:
    """Save demo ``i``'s real / reconstructed / imagined strip; returns its path relative to ``out``."""
    from PIL import Image

    cols = list(range(0, M, cfg.strip_every))
    png = strip_image([("real", d.frames), ("VAE recon", rec), ("imagined", gen)], d.masks, cols,
                      scale=cfg.strip_scale, header=[f"step {int(d.rows[c])}" for c in cols])
    path = out / "strips" / f"episode_{i:06d}.png"
    Image.fromarray(png).save(path, optimize=True)
    return str(path.relative_to(out))


def _write_outputs(cfg: WMEvalConfig, out: Path, wc, held, used, task_of: dict, where: dict, per_frame, per_demo,
                   strips, timings: dict, started: float, dependence: dict) -> dict:
    """Aggregate the per-frame metrics; write ``wm_eval.json``, ``wm_eval.md`` and
    ``manifest.json``; returns the report."""
    from world2act.utils.io import atomic_write, write_json
    from world2act.utils.manifest import write_manifest

    summary, latent = aggregate(per_frame)
    fr = {"all": _nanmean(p["robot_fraction"] for p in per_demo),
          **{c: _nanmean(p["robot_fraction_per_view"][c] for p in per_demo) for c in wc.cameras}}
    report = {
        "inputs": {"wm": str(cfg.wm), "dataset": str(cfg.dataset)},
        "world_model": {"cameras": list(wc.cameras), "layout": wc.layout, "image_size": list(wc.image_size),
                        "num_frames": int(wc.num_frames), "frame_stride": int(wc.frame_stride)},
        "heldout": {"source": "WM/clips.json held_out_source_episodes", "demo_ids": held, "used": used,
                    "tasks": {t: [i for i in used if task_of[i] == t] for t in dict.fromkeys(task_of[i] for i in used)}},
        "robot_pixels": {bm: ROBOT_BODIES[SPECS[bm].family if bm in SPECS else "libero"]
                         for bm in dict.fromkeys(where[i][0] for i in used)},
        "sampling_steps": cfg.steps, "cond_frames": cfg.cond_frames, "summary": summary, "robot_fraction": fr,
        "per_latent_frame": latent,
        "per_demo": per_demo, "strips": strips, "init_state_dependence": dependence,
        "timings_s": {k: round(v, 2) for k, v in timings.items()}, "seconds": round(time.time() - started, 2),
    }
    write_json(out / "wm_eval.json", report)
    atomic_write(out / "wm_eval.md", render_markdown(report))
    metrics = {f"{k}_{reg}_{met}": summary[k][reg][met] for k in KINDS for reg in ("all", "robot") for met in ("psnr", "ssim")}
    if report["init_state_dependence"]["demos"]:
        metrics["generation_robot_psnr_own_minus_other"] = report["init_state_dependence"]["robot"]["own_minus_other"]
    write_manifest(out, stage="wm-eval", config=cfg, inputs=report["inputs"], metrics=metrics, started=started)
    return report


# --------------------------------------------------------------------------- report
def _f(x, nd: int = 2) -> str:
    return "—" if x is None or x != x else f"{x:.{nd}f}"


def render_markdown(r: dict) -> str:
    """The ``wm_eval.md`` tables from the ``wm_eval.json`` dict."""
    w, s = r["world_model"], r["summary"]
    cams = w["cameras"]
    fr = r["robot_fraction"]
    per_view = ", ".join(f"{c} {_f(100 * fr[c], 1)}%" for c in cams)
    L = ["# World-model fidelity on held-out demos (`world2act wm-eval`)", "",
         f"World model `{r['inputs']['wm']}` ({' | '.join(cams)}, layout {w['layout']}, {w['image_size'][0]}×"
         f"{w['image_size'][1]} per view, {w['num_frames']} frames at stride {w['frame_stride']}); demos "
         f"`{r['inputs']['dataset']}`: {len(r['heldout']['used'])} of the world model's held-out demos "
         + "; ".join(f"{t!r}: {ids}" for t, ids in r["heldout"]["tasks"].items()) + ".", "",
         "Frames 1.. of each demo on the episode grid (frame i = the observation before step "
         f"{w['frame_stride']}·i), compared where both videos have the frame. Robot pixels = the real frame's "
         "segmentation mask (" + "; ".join(r["robot_pixels"].values()) + "), "
         f"{_f(100 * fr['all'], 1)}% of the pixels ({per_view}). "
         f"Generation: skill-compositional rollout from the first frame, {r['sampling_steps']} sampling steps. "
         "Means over demos of per-frame PSNR (dB) / SSIM.", "",
         "| | PSNR all | SSIM all | PSNR robot | SSIM robot |", "|---|---|---|---|---|"]
    for k in KINDS:
        L.append(f"| {KIND_LABELS[k]} | {_f(s[k]['all']['psnr'])} | {_f(s[k]['all']['ssim'], 3)} | "
                 f"**{_f(s[k]['robot']['psnr'])}** | **{_f(s[k]['robot']['ssim'], 3)}** |")
    L += ["", "Per view (PSNR / SSIM):", "",
          "| view | region | reconstruction | generation | repeat first |", "|---|---|---|---|---|"]
    for c in cams:
        for reg in ("all", "robot"):
            key = f"{c}/{reg}"
            L.append(f"| {c} | {reg} | " + " | ".join(f"{_f(s[k][key]['psnr'])} / {_f(s[k][key]['ssim'], 3)}" for k in KINDS) + " |")
    L += ["", "Per latent frame (PSNR dB, all / robot pixels; latent frame j = frames 4j−3..4j):", "",
          "| latent frame | frames | demos | reconstruction | generation | repeat first | generation SSIM robot | repeat-first SSIM robot |",
          "|---|---|---|---|---|---|---|---|"]
    for row in r["per_latent_frame"]:
        L.append(f"| {row['latent_frame']} | {row['frames'][0]}–{row['frames'][1]} | {row['n_demos']} | "
                 + " | ".join(f"{_f(row[k]['all']['psnr'])} / {_f(row[k]['robot']['psnr'])}" for k in KINDS)
                 + f" | {_f(row['generation']['robot']['ssim'], 3)} | {_f(row['repeat_first']['robot']['ssim'], 3)} |")
    dep = r.get("init_state_dependence") or {"demos": 0}
    if dep["demos"]:
        L += ["", f"Does the imagination depend on its init state? Generation PSNR against the demo's own real video "
              f"and against the other evaluated demos of its task ({dep['demos']} demos; real vs other = the real "
              "videos against each other):", "",
              "| region | own | other demos | own − other | demos own > other | real vs other |", "|---|---|---|---|---|---|"]
        for reg in ("all", "robot"):
            q = dep[reg]
            L.append(f"| {reg} | {_f(q['own'])} | {_f(q['other'])} | **{_f(q['own_minus_other'])}** | "
                     f"{q['demos_own_above_other']}/{dep['demos']} | {_f(q['real_vs_other'])} |")
    L += ["", "Per demo (PSNR dB on robot pixels; re-render = stored frames vs the frames re-rendered from the stored "
          "states, the masks' alignment check):", "",
          "| episode | task | frames compared (real / imagined) | robot % | reconstruction | generation | repeat first | re-render dB | strip |",
          "|---|---|---|---|---|---|---|---|---|"]
    for p in r["per_demo"]:
        L.append(f"| {p['episode']} | {p['task']} | {p['frames_compared']} ({p['real_frames']} / {p['imagined_frames']}) | "
                 f"{_f(100 * p['robot_fraction'], 1)} | "
                 + " | ".join(_f(p[k]['robot']['psnr']) for k in KINDS)
                 + f" | {_f(p['rerender_psnr'], 1)} | {('`' + p['strip'] + '`') if p.get('strip') else ''} |")
    L += ["", "Strips: the real frames (robot mask outlined) above the VAE reconstruction above the imagination, "
          "every few frames.", "",
          f"Wall time {r['seconds']:.1f} s ({', '.join(f'{k} {v:.1f} s' for k, v in r['timings_s'].items())}).", ""]
    return "\n".join(L)


# --------------------------------------------------------------------------- CLI
Config, RUN_OPTIONS = WMEvalConfig, ("overwrite",)


def main(cfg: WMEvalConfig, args) -> int:
    from world2act.utils.seeding import resolve_device, set_torch_threads

    set_torch_threads()
    r = run(cfg, args.out, device=resolve_device(args.device), overwrite=args.overwrite)
    s = r["summary"]
    for k in KINDS:
        print(f"{KIND_LABELS[k]}: PSNR {_f(s[k]['all']['psnr'])} dB all, {_f(s[k]['robot']['psnr'])} dB robot; "
              f"SSIM {_f(s[k]['all']['ssim'], 3)} all, {_f(s[k]['robot']['ssim'], 3)} robot")
    print(f"wrote {Path(args.out) / 'wm_eval.md'}")
    return 0
