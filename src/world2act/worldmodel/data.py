"""Training clips for the world model: which frames (and control steps) each clip uses.

Clip rules (documented in docs/worldmodel.md, tested in tests/worldmodel/test_data.py):

``skills`` (Skill-WM): every episode of a skill dataset is one skill clip. A training clip has
``T`` frames (17) at fixed stride ``s`` (4): rows ``start + s*k``. Windows start at
``w * (T-1) * s`` (0, 64, 128, ... control steps), consecutive windows sharing their boundary
frame exactly like a rollout. A window whose rows run past the clip's last row is padded by
repeating the last frame (the robot holds still); window ``w >= 1`` is kept only if it has at
least one latent chunk (``4s`` control steps) of real motion. Clips shorter than one latent
chunk (``length - 1 < 4s``) are an error by default (``short_clips="error"``), or dropped
(``"skip"``) or padded (``"pad"``). The stride never changes, so latent frame ``j >= 1`` always
covers the ``4s`` actions ``[start + 4s(j-1), start + 4sj)`` of the record.

``episodes`` (Base-WM): each whole episode is one clip of ``T`` frames sampled uniformly over
its length (rows ``round(linspace(0, L-1, T))``, variable stride, recorded per clip) - the
"one long clip" the paper's Base-WM is trained on.

Each :class:`ClipRecord` stores its rows (``frame_indices``, relative to the dataset episode),
the source demonstration and the source row of frame 0 so Stage 1 can fetch matching actions.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from world2act import World2ActError

CLIP_MODES = ("skills", "episodes")
SHORT_MODES = ("error", "skip", "pad")


@dataclass
class ClipRecord:
    """One training clip.

    Attributes:
        episode: episode index in the dataset the clip was read from.
        source_episode: demonstration index (held-out split key; = ``episode`` for episodes).
        prompt: conditioning text (skill prompt, or the instruction for ``episodes``).
        instruction: the demonstration's global instruction.
        frame_indices: T rows of the dataset episode used as clip frames (padding repeats the last).
        num_real: frames before padding.
        source_start: row in the source demonstration of clip frame 0 (``frame_from + start``).
        stride: control steps between frames (float for resampled episodes).
        window: window number within the episode.
    """

    episode: int
    source_episode: int
    prompt: str
    instruction: str
    frame_indices: list[int]
    num_real: int
    source_start: int
    stride: float
    window: int = 0

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def skill_windows(length: int, num_frames: int, stride: int, short_clips: str = "error",
                  where: str = "clip") -> list[tuple[list[int], int]]:
    """Frame rows of each training window of a skill clip of ``length`` rows.

    Returns:
        list of (rows [num_frames], num_real). Empty when the clip is short and ``short_clips="skip"``.
    Raises:
        World2ActError: the clip is shorter than one latent chunk and ``short_clips="error"``.
    """
    if short_clips not in SHORT_MODES:
        raise World2ActError(f"short_clips={short_clips!r}: valid are {', '.join(SHORT_MODES)}")
    chunk = 4 * stride
    span = (num_frames - 1) * stride
    if length - 1 < chunk:
        if short_clips == "error":
            raise World2ActError(
                f"{where}: {length} frames is shorter than one latent chunk (needs >= {chunk + 1} control steps at "
                f"frame stride {stride}); pass data.short_clips=skip to drop such clips or data.short_clips=pad")
        if short_clips == "skip" or length < 1:
            return []
    out = []
    start = 0
    while True:
        rows = [start + stride * k for k in range(num_frames)]
        real = sum(r <= length - 1 for r in rows)
        out.append(([min(r, length - 1) for r in rows], real))
        start += span
        if start + chunk > length - 1:
            break
    return out


def episode_rows(length: int, num_frames: int) -> list[int]:
    """Rows of a whole episode resampled to ``num_frames`` frames (Base-WM clips)."""
    return [int(round(x)) for x in np.linspace(0, length - 1, num_frames)]


def build_clips(ds, mode: str, num_frames: int, stride: int, short_clips: str = "error") -> list[ClipRecord]:
    """Clip records for every episode of a LeRobot dataset (no frames are decoded).

    Args:
        ds: :class:`world2act.data.LeRobotDataset` (a skill dataset for ``skills``, demos for ``episodes``).
        mode: ``skills`` or ``episodes``.
    Raises:
        World2ActError: unknown mode, missing prompts, or short clips (see :func:`skill_windows`).
    """
    if mode not in CLIP_MODES:
        raise World2ActError(f"--clips {mode!r}: valid are {', '.join(CLIP_MODES)}")
    out: list[ClipRecord] = []
    for i in range(ds.num_episodes):
        m = ds.episode_meta(i)
        prompt = (m.get("task") or "").strip()
        if not prompt:
            raise World2ActError(f"{ds.root}: episode {i} has no prompt (task is empty)")
        length = int(m["length"])
        instruction = (m.get("instruction") or prompt).strip()
        if mode == "skills":
            src = int(m.get("source_episode", i))
            frame_from = int(m.get("frame_from", 0))
            for w, (rows, real) in enumerate(skill_windows(length, num_frames, stride, short_clips,
                                                           where=f"{ds.root} episode {i}")):
                out.append(ClipRecord(i, src, prompt, instruction, rows, real, frame_from + rows[0], float(stride), w))
        else:
            if length < 2:
                raise World2ActError(f"{ds.root}: episode {i} has {length} frame(s); need at least 2")
            src = int(m.get("source_episode", i))
            out.append(ClipRecord(i, src, prompt, instruction, episode_rows(length, num_frames), num_frames,
                                  int(m.get("frame_from", 0)), (length - 1) / (num_frames - 1), 0))
    if not out:
        raise World2ActError(f"{ds.root}: no usable clips")
    return out


def split_by_source(records: list[ClipRecord], val_fraction: float, seed: int = 0) -> tuple[set[int], set[int]]:
    """Hold out whole demonstrations: per instruction, the last ``ceil(val_fraction * n)`` source
    episodes (by index; at least 1 when an instruction has >= 2 demos and val_fraction > 0).

    Returns:
        (train source episodes, held-out source episodes).
    """
    by_instr: dict[str, set[int]] = {}
    for r in records:
        by_instr.setdefault(r.instruction, set()).add(r.source_episode)
    val: set[int] = set()
    for eps in by_instr.values():
        eps_sorted = sorted(eps)
        n = int(np.ceil(val_fraction * len(eps_sorted))) if val_fraction > 0 and len(eps_sorted) >= 2 else 0
        val.update(eps_sorted[len(eps_sorted) - n:] if n else [])
    train = {r.source_episode for r in records} - val
    return train, val


def first_sources_per_instruction(records: list[ClipRecord], sources: set[int], n: int) -> set[int]:
    """The first ``n`` source episodes (by index) of each instruction among ``sources``; all of
    them when ``n`` is 0. The data-scaling lever of ``train-wm`` (``train_demos``): the held-out
    split is made on every demonstration first, so models trained on different numbers of
    demonstrations are judged on the same held-out demos.

    Raises:
        World2ActError: ``n`` is negative.
    """
    if n < 0:
        raise World2ActError(f"train_demos must be >= 0 (0 = all), got {n}")
    if not n:
        return set(sources)
    by_instr: dict[str, set[int]] = {}
    for r in records:
        if r.source_episode in sources:
            by_instr.setdefault(r.instruction, set()).add(r.source_episode)
    return {e for eps in by_instr.values() for e in sorted(eps)[:n]}


def stitch(images: dict[str, np.ndarray], cameras, layout: str) -> np.ndarray:
    """Stitch camera views ``{cam: [T, H, W, 3]}`` with the data module's layouts (``1x1`` = one camera)."""
    if layout == "1x1":
        return images[cameras[0]]
    from world2act.data import stitch_views

    return stitch_views(images, list(cameras), layout=layout)


def check_dataset(ds, cfg) -> None:
    """Refuse a dataset whose cameras or image size do not fit the world-model config.

    Raises:
        World2ActError: naming the dataset, the mismatch and the valid values.
    """
    missing = [c for c in cfg.cameras if c not in ds.spec.cameras]
    if missing:
        raise World2ActError(f"{ds.root}: lacks cameras {missing} needed by the world model "
                             f"(dataset has {list(ds.spec.cameras)}; set model.cameras=...)")
    if tuple(ds.spec.image_size) != tuple(cfg.image_size):
        raise World2ActError(f"{ds.root}: image size {tuple(ds.spec.image_size)} but the world model takes "
                             f"{tuple(cfg.image_size)} per view (set model.image_size=H,W or re-collect)")


def load_clip_videos(ds, records: list[ClipRecord], cfg, progress: bool = True) -> np.ndarray:
    """Stitched uint8 clips ``[N, T, H, W, 3]`` for ``records`` (each episode decoded once)."""
    from world2act.utils.progress import progress_bar

    h, w = cfg.frame_size
    out = np.zeros((len(records), cfg.num_frames, h, w, 3), np.uint8)
    by_ep: dict[int, list[int]] = {}
    for k, r in enumerate(records):
        by_ep.setdefault(r.episode, []).append(k)
    for ep, ks in progress_bar(by_ep.items(), desc="reading clips", disable=not progress):
        e = ds.load_episode(ep, cameras=list(cfg.cameras))
        frames = stitch(e.images, cfg.cameras, cfg.layout)
        if frames.ndim != 4 or frames.shape[-1] != 3:
            raise World2ActError(f"{ds.root}: episode {ep} frames have shape {frames.shape}, expected [T, H, W, 3]")
        for k in ks:
            out[k] = frames[records[k].frame_indices]
    return out


def prompt_windows(records: list[ClipRecord]) -> dict[str, int]:
    """Median number of windows per skill clip, per prompt (``imagine`` repeats prompts accordingly)."""
    per: dict[tuple[int, str], int] = {}
    for r in records:
        per[(r.episode, r.prompt)] = max(per.get((r.episode, r.prompt), 0), r.window + 1)
    by_prompt: dict[str, list[int]] = {}
    for (_, p), n in per.items():
        by_prompt.setdefault(p, []).append(n)
    return {p: int(np.median(v)) for p, v in sorted(by_prompt.items())}
