"""Turn a skill dataset + a frozen world model into cached Stage-1 pairs (latents, actions).

Windowing (follows :mod:`world2act.worldmodel.alignment`): a skill clip of ``L`` control steps
(LeRobot rows: row t = observation before step t + action at step t) is cut into consecutive
world-model windows starting at steps ``0, S, 2S, ...`` with ``S = (num_frames-1)·frame_stride``
(64 by default). A window starting at step ``w`` takes clip frames at rows ``w + s·i``
(i = 0..num_frames-1) — rows past the clip's end repeat its last frame — and for latent frame
``j >= 1`` the actions of steps ``w + [K(j-1), Kj)`` with ``K = 4·s``. Latent frame j is *valid*
(mask True) only if all its K actions lie inside the clip and its last frame (row ``w + Kj``) is
a real frame; a window is kept when it has at least one valid latent frame (so a 40-row clip
gives one window with 2 valid latent frames, the padded rest masked out). Windows are those of
the world model's own clip rule (``world2act.worldmodel.data.skill_windows``). Latent frame 0 (the first frame alone) carries no actions and is
dropped.

Latents: ``denoised`` — ``wm.denoised_latents(clip, prompt, sigma)``, the denoiser's x0
prediction for the ground-truth clip at noise level ``sigma`` (what the authors use);
``generated`` — latents of a clip the WM generates from the window's first frame and the skill
prompt (``wm.generate_clip``); the actions are the ground-truth clip's in both cases.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from pathlib import Path

import numpy as np
import torch

from world2act import World2ActError
from world2act.align.bundle import AdapterConfig
from world2act.align.data import AlignData
from world2act.utils.io import write_json

log = logging.getLogger(__name__)


def check_inputs(cfg) -> None:
    """Cheap existence checks of ``cfg.skills`` and ``cfg.wm`` before any output is written.

    Raises:
        World2ActError: a folder is missing or is not what the option expects.
    """
    skills, wm = Path(cfg.skills), Path(cfg.wm)
    if not skills.is_dir():
        raise World2ActError(f"--skills {skills}: folder not found (the output of `world2act segment`)")
    if not (skills / "meta" / "info.json").is_file():
        raise World2ActError(f"--skills {skills}: not a LeRobot dataset (no meta/info.json)")
    if not wm.is_dir():
        raise World2ActError(f"--wm {wm}: folder not found (the output of `world2act train-wm`)")
    if not any((wm / f).exists() for f in ("config.json", "model_index.json", "transformer")):
        raise World2ActError(f"--wm {wm}: not a world-model folder (no config.json / model_index.json)")


def clip_windows(length: int, num_frames: int, frame_stride: int) -> list[tuple[int, int]]:
    """Windows of a clip of ``length`` rows: ``[(start_step, n_valid_latent_frames)]``.

    Uses the world model's own clip rule (:func:`world2act.worldmodel.data.skill_windows`, short
    clips skipped) so Stage 1 sees exactly the windows the Skill-WM was trained on. A latent frame
    ``j >= 1`` is valid when its K actions exist and its last frame (row ``start + K·j``) is a
    real frame of the clip, not padding.
    """
    from world2act.worldmodel.alignment import actions_per_latent_frame, num_latent_frames
    from world2act.worldmodel.data import skill_windows

    K = actions_per_latent_frame(frame_stride)
    n_lat = num_latent_frames(num_frames) - 1
    out = []
    for rows, _real in skill_windows(length, num_frames, frame_stride, short_clips="skip"):
        start = rows[0]
        n_valid = min(n_lat, (length - 1 - start) // K)
        if n_valid >= 1:
            out.append((start, n_valid))
    return out


def window_pair(actions: np.ndarray, frames: np.ndarray, start: int, num_frames: int, frame_stride: int):
    """Frames and per-latent-frame action chunks of one window.

    Args:
        actions: the clip's ``[L, A]``; frames: the clip's stitched ``[L, H, W, 3]`` uint8.
        start: window start step.

    Returns:
        (video uint8 ``[num_frames, H, W, 3]``, actions ``[T'-1, K, A]`` (zeros past the clip),
        mask bool ``[T'-1]``).
    """
    from world2act.worldmodel.alignment import latent_action_ranges

    L, A = actions.shape
    rows = np.minimum(start + frame_stride * np.arange(num_frames), frames.shape[0] - 1)
    video = frames[rows]
    ranges = latent_action_ranges(num_frames, frame_stride)[1:]
    K = ranges[0][1] - ranges[0][0]
    chunks = np.zeros((len(ranges), K, A), dtype=np.float32)
    mask = np.zeros(len(ranges), dtype=bool)
    for j, (a, b) in enumerate(ranges):
        lo, hi = start + a, start + b
        if hi <= min(L, frames.shape[0] - 1):  # actions exist and the chunk's last frame is real
            chunks[j] = actions[lo:hi]
            mask[j] = True
    return video, chunks, mask


def _stitch(images: dict, cameras, layout: str) -> np.ndarray:
    from world2act.data import stitch_views

    if layout == "1x1":
        return np.asarray(images[cameras[0]])
    return stitch_views(images, cameras, layout)


def _resize(frames: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    if tuple(frames.shape[1:3]) == tuple(size):
        return frames
    x = torch.from_numpy(frames).permute(0, 3, 1, 2).float()
    x = torch.nn.functional.interpolate(x, size=size, mode="bilinear", antialias=True, align_corners=False)
    return x.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()


def _cache_key(cfg, wm_dir: Path, ds) -> str:
    stamp = []
    for p in sorted(wm_dir.rglob("*.safetensors")) + sorted(wm_dir.glob("*.json")):
        st = p.stat()
        stamp.append((str(p.relative_to(wm_dir)), st.st_size, int(st.st_mtime)))
    blob = json.dumps({"skills": str(Path(cfg.skills).resolve()), "episodes": ds.num_episodes, "frames": ds.num_frames,
                       "wm": str(wm_dir.resolve()), "wm_files": stamp, "source": cfg.latent_source,
                       "sigma": cfg.sigma, "gen_steps": cfg.generate_steps, "max_clips": cfg.max_clips, "seed": cfg.seed},
                      sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def build_cache(cfg, cache_dir: str | Path, device: str = "cpu", progress: bool = True) -> tuple[AlignData, AdapterConfig]:
    """Compute (or load) the WM latents for every window of every skill clip.

    Results are cached in ``cache_dir/latents.safetensors`` keyed on the inputs and latent
    settings; partial work is kept in ``cache_dir/parts/`` so an interrupted run resumes.

    Phases: :func:`_open_cache_inputs` (dataset, world model, adapter config), the cache-key
    check, :func:`_enumerate_windows` (metadata only), :func:`_compute_parts` (latents in
    resumable parts) and :func:`_assemble_cache` (one :class:`AlignData`, saved).

    Returns:
        (:class:`AlignData` with raw actions, :class:`AdapterConfig` filled with the WM facts).

    Raises:
        World2ActError: unreadable inputs, a dataset whose cameras or action rows do not fit
            the world model, or no usable clip.
    """
    cache_dir = Path(cache_dir)
    ds, wm_dir, wm, acfg = _open_cache_inputs(cfg, device)
    key = _cache_key(cfg, wm_dir, ds)
    final = cache_dir / "latents.safetensors"
    if final.is_file():
        data = AlignData.load(final)
        if data.info.get("cache_key") == key:
            log.info("align: using cached latents %s (%d windows)", final, len(data))
            return data, acfg
        log.info("align: cache %s is for other inputs; rebuilding", final)
    win = _enumerate_windows(cfg, ds, wm.config, wm_dir)
    parts_dir, n_parts = _compute_parts(cfg, cache_dir, key, ds, wm, win.items, progress)
    return _assemble_cache(cfg, cache_dir, key, win, parts_dir, n_parts, final), acfg


def _open_cache_inputs(cfg, device: str):
    """Open the skill dataset and the world model (eval mode); check the dataset has the world
    model's cameras; fill the :class:`AdapterConfig` with the world model's facts.

    Returns:
        ``(dataset, world-model folder, world model, adapter config)``.

    Raises:
        World2ActError: unreadable inputs or missing cameras.
    """
    from world2act.data import LeRobotDataset
    from world2act.worldmodel import WorldModel

    ds = LeRobotDataset(cfg.skills)
    wm_dir = Path(cfg.wm)
    wm = WorldModel.load(wm_dir, device=device)
    wm.eval()
    wc = wm.config
    missing = [c for c in wc.cameras if c not in ds.cameras]
    if missing:
        raise World2ActError(f"--skills {cfg.skills}: cameras {list(ds.cameras)} lack {missing}, which world model "
                             f"{cfg.wm} needs (its cameras: {list(wc.cameras)})")
    acfg = AdapterConfig(action_dim=ds.spec.action_dim, chunk_size=4 * wc.frame_stride, latent_dim=cfg.latent_dim,
                         latent_channels=wc.latent_channels, latent_size=tuple(wc.latent_size),
                         frame_stride=wc.frame_stride, num_frames=wc.num_frames, cameras=tuple(wc.cameras),
                         layout=wc.layout, wm=str(wm_dir), latent_source=cfg.latent_source, sigma=cfg.sigma,
                         variant=cfg.variant)
    return ds, wm_dir, wm, acfg


@dataclasses.dataclass
class _Windows:
    """The windows to encode and the metadata :class:`AlignData` records about them."""

    metas: list
    episodes: list
    items: list  # (episode, start, n_valid)
    skill_names: list
    demo_of: dict
    demo_groups: dict
    wm_heldout: list


def _enumerate_windows(cfg, ds, wc, wm_dir: Path) -> _Windows:
    """Every window of every (sampled, ``--max-clips``) skill clip, from metadata only, plus
    the source demonstration of each clip and the world model's held-out demonstrations.

    Raises:
        World2ActError: no clip long enough for one latent frame.
    """
    metas = [ds.episode_meta(i) for i in range(ds.num_episodes)]
    episodes = list(range(ds.num_episodes))
    if cfg.max_clips and cfg.max_clips < len(episodes):
        rng = np.random.default_rng(cfg.seed)
        episodes = sorted(rng.choice(episodes, size=cfg.max_clips, replace=False).tolist())
    items = []  # (episode, start, n_valid)
    for e in episodes:
        for w, nv in clip_windows(int(metas[e]["length"]), wc.num_frames, wc.frame_stride):
            items.append((e, w, nv))
    if not items:
        raise World2ActError(f"--skills {cfg.skills}: no clip is long enough for one latent frame "
                             f"({4 * wc.frame_stride} control steps)")
    skill_names = list(ds.tasks)
    demo_of = {e: int(metas[e].get("source_episode", e)) for e in episodes}
    demo_groups = {demo_of[e]: str(metas[e].get("instruction") or metas[e].get("task", "")) for e in episodes}
    wm_heldout = []
    clips_json = wm_dir / "clips.json"
    if clips_json.is_file():
        from world2act.utils.io import read_json

        wm_heldout = [int(x) for x in read_json(clips_json).get("held_out_source_episodes", [])]
    return _Windows(metas, episodes, items, skill_names, demo_of, demo_groups, wm_heldout)


def _compute_parts(cfg, cache_dir: Path, key: str, ds, wm, items: list, progress: bool) -> tuple[Path, int]:
    """Encode the windows in parts of ``8 * wm_batch`` into ``cache_dir/parts/`` (parts already
    there for the same ``key`` are kept, so an interrupted run resumes). Returns
    ``(parts folder, number of parts)``."""
    from world2act.utils.progress import progress_bar

    parts_dir = cache_dir / "parts"
    parts_dir.mkdir(parents=True, exist_ok=True)
    key_file = cache_dir / "key.txt"
    if not key_file.is_file() or key_file.read_text().strip() != key:
        for p in parts_dir.glob("*.safetensors"):
            p.unlink()
        key_file.write_text(key)
    per_part = max(1, int(cfg.wm_batch)) * 8
    n_parts = (len(items) + per_part - 1) // per_part
    loaded_ep: dict = {}
    bar = progress_bar(total=len(items), desc="WM latents", disable=not progress, dynamic_ncols=True, leave=False)
    for pi in range(n_parts):
        path = parts_dir / f"part-{pi:05d}.safetensors"
        chunk = items[pi * per_part:(pi + 1) * per_part]
        if path.is_file():
            bar.update(len(chunk))
            continue
        _compute_part(cfg, ds, wm, chunk, pi * per_part, loaded_ep, bar, path)
    bar.close()
    return parts_dir, n_parts


def _compute_part(cfg, ds, wm, chunk: list, first: int, loaded_ep: dict, bar, path: Path) -> None:
    """Encode one part's windows in batches of ``wm_batch`` (latents from the chosen
    ``latent_source``; seeds offset by the window's position ``first + bi``) and save the
    latents, action rows and masks to ``path`` atomically."""
    from safetensors.torch import save_file

    from world2act.utils.io import atomic_path

    wc = wm.config
    lat_out, act_out, mask_out = [], [], []
    for bi in range(0, len(chunk), cfg.wm_batch):
        sub = chunk[bi:bi + cfg.wm_batch]
        vids, prompts = [], []
        for (e, w, _nv) in sub:
            if e not in loaded_ep:
                loaded_ep.clear()
                ep = ds.load_episode(e, cameras=list(wc.cameras))
                views = {c: _resize(ep.images[c], tuple(wc.image_size)) for c in wc.cameras}
                loaded_ep[e] = (ep.actions.astype(np.float32), _stitch(views, list(wc.cameras), wc.layout), ep.task)
            acts, frames, task = loaded_ep[e]
            v, c, m = window_pair(acts, frames, w, wc.num_frames, wc.frame_stride)
            vids.append(v)
            prompts.append(task)
            act_out.append(torch.from_numpy(c))
            mask_out.append(torch.from_numpy(m))
        with torch.no_grad():
            if cfg.latent_source == "denoised":
                z = wm.denoised_latents(np.stack(vids), prompts, cfg.sigma, seed=cfg.seed + first + bi)
            else:
                z = torch.stack([wm.generate_clip(v[0], p, num_inference_steps=cfg.generate_steps,
                                                  seed=cfg.seed + first + bi + k)[1]
                                 for k, (v, p) in enumerate(zip(vids, prompts))])
        lat_out.append(z[:, 1:].float().cpu())
        bar.update(len(sub))
    with atomic_path(path) as tmp:
        save_file({"latents": torch.cat(lat_out).contiguous(), "actions": torch.stack(act_out).contiguous(),
                   "mask": torch.stack(mask_out).to(torch.uint8).contiguous()}, str(tmp))


def _assemble_cache(cfg, cache_dir: Path, key: str, win: _Windows, parts_dir: Path, n_parts: int,
                    final: Path) -> AlignData:
    """Concatenate the parts into one :class:`AlignData` (with skill, demo and clip ids and the
    cache info), save it to ``final`` with ``cache_info.json``, delete the parts."""
    from safetensors.torch import load_file

    parts = [load_file(str(parts_dir / f"part-{pi:05d}.safetensors")) for pi in range(n_parts)]
    latents = torch.cat([p["latents"] for p in parts])
    actions = torch.cat([p["actions"] for p in parts])
    mask = torch.cat([p["mask"] for p in parts]).bool()
    items, metas, demo_of = win.items, win.metas, win.demo_of
    ep_arr = np.array([it[0] for it in items])
    data = AlignData(
        latents, actions, mask,
        skill_ids=np.array([metas[e]["task_index"] for e in ep_arr]),
        demo_ids=np.array([demo_of[e] for e in ep_arr]),
        clip_ids=ep_arr, skill_names=win.skill_names,
        info={"cache_key": key, "skills": str(cfg.skills), "wm": str(cfg.wm), "latent_source": cfg.latent_source,
              "sigma": cfg.sigma, "window_starts": [it[1] for it in items],
              "demo_groups": {str(k): v for k, v in win.demo_groups.items()}, "wm_heldout_demos": win.wm_heldout,
              "latent_stats": {"mean": float(latents.mean()), "std": float(latents.std())}},
    )
    data.save(final)
    write_json(cache_dir / "cache_info.json", {"windows": len(data), "clips": len(win.episodes), "key": key,
                                                **data.shape_info, "valid_latent_frames": int(mask.sum())})
    for p in parts_dir.glob("*.safetensors"):
        p.unlink()
    return data
