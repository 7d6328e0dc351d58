"""Synthetic skill clips for world-model tests: a coloured square moving on a plain background."""
from __future__ import annotations

import numpy as np

from world2act.worldmodel.data import ClipRecord

PROMPTS = ("move the square right", "move the square down")


def moving_square(num_frames: int, hw: tuple[int, int], direction: int, seed: int) -> np.ndarray:
    """uint8 ``[T, H, W, 3]``: a square moving right (direction 0) or down (1), one pixel per frame."""
    rng = np.random.default_rng(seed)
    h, w = hw
    v = np.zeros((num_frames, h, w, 3), np.uint8)
    v[..., 2] = 60
    y0, x0 = rng.integers(2, h // 2), rng.integers(2, w // 2)
    color = rng.integers(150, 256, 3)
    for t in range(num_frames):
        y, x = (y0, x0 + t) if direction == 0 else (y0 + t // 2, x0)
        v[t, y:y + 6, x:x + 6] = color
    return v


def synthetic_clips(n: int, hw=(32, 64), num_frames: int = 17):
    """n clip records (2 instructions, one source episode per clip) and uint8 clips ``[n, T, H, W, 3]``."""
    recs, vids = [], []
    for i in range(n):
        d = i % 2
        recs.append(ClipRecord(episode=i, source_episode=i, prompt=PROMPTS[d], instruction=PROMPTS[d],
                               frame_indices=list(range(0, 4 * num_frames, 4)), num_real=num_frames,
                               source_start=0, stride=4.0))
        vids.append(moving_square(num_frames, hw, d, i))
    return recs, np.stack(vids)
