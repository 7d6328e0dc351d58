"""Synthetic demonstrations for the skill-decomposition tests (no simulator needed)."""
from __future__ import annotations

import numpy as np

from world2act.data.schema import Episode


def width_profile(T: int, grasps, w_open: float = 0.08, ramp: int = 4, start: float | None = None,
                  noise: float = 0.0, seed: int = 0) -> np.ndarray:
    """``[T]`` gripper width: open, then for each (t_close, t_open, held_width) a ramp down to
    held_width starting at t_close and a ramp back up starting at t_open (t_open None = hold to the end).
    ``start``: initial width that ramps to open over the first ``ramp`` frames (a half-open start)."""
    w = np.full(T, w_open, dtype=np.float64)
    if start is not None:
        w[:ramp] = np.linspace(start, w_open, ramp)
    for t_close, t_open, held in grasps:
        stop = T if t_open is None else t_open
        for t in range(t_close, stop):
            f = min(1.0, (t - t_close + 1) / ramp)
            w[t] = w_open + f * (held - w_open)
        if t_open is not None:
            for t in range(t_open, min(T, t_open + ramp)):
                f = (t - t_open + 1) / ramp
                w[t] = held + f * (w_open - held)
    if noise:
        w = w + np.random.default_rng(seed).normal(0, noise, T)
    return w


def make_episode(task: str, width: np.ndarray, *, A: int = 7, S: int = 8, cams=("agentview",), size=(16, 16),
                 sim_dim: int | None = 5, meta: dict | None = None, success: bool = True) -> Episode:
    T = width.shape[0]
    rng = np.random.default_rng(T)
    actions = rng.uniform(-1, 1, (T, A)).astype(np.float32)
    closing = width < width.max() - 1e-4
    actions[:, -1] = np.where(closing, 1.0, -1.0)
    states = rng.normal(size=(T, S)).astype(np.float32)
    images = {c: (np.arange(T)[:, None, None, None] * 3 % 255 + np.zeros((T, *size, 3))).astype(np.uint8) for c in cams}
    sim = None if sim_dim is None else np.cumsum(np.ones((T, sim_dim)), axis=0)
    return Episode(task=task, actions=actions, states=states, gripper_width=width.astype(np.float32), images=images,
                   sim_states=sim, success=success, meta=dict(meta or {}))


PNP = "pick up the alphabet soup and place it in the basket"


def pnp_episode(T: int = 90, c: int = 30, o: int = 65, held: float = 0.063, **kw) -> Episode:
    return make_episode(PNP, width_profile(T, [(c, o, held)], start=0.05), **kw)


