"""Synthetic episodes for the dataset tests (smooth images that look like rendered scenes)."""
from __future__ import annotations

import numpy as np

from world2act.data import DatasetSpec, Episode

CAMS = ("agentview", "wrist")


def make_frames(T: int, H: int = 64, W: int = 64, seed: int = 0) -> np.ndarray:
    """``[T, H, W, 3]`` uint8: a shaded floor, a moving coloured block and a fixed object."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:H, :W].astype(np.float32)
    base = np.stack([90 + 60 * yy / H, 80 + 40 * xx / W, np.full((H, W), 70.0, np.float32)], -1)
    col = rng.uniform(40, 230, size=3)
    out = np.empty((T, H, W, 3), np.uint8)
    for t in range(T):
        img = base.copy()
        cx = int(8 + (W - 24) * t / max(T - 1, 1))
        img[H // 3:H // 3 + 10, cx:cx + 10] = col
        img[H - 20:H - 8, W // 2:W // 2 + 14] = (200, 200, 210)
        out[t] = np.clip(img, 0, 255).astype(np.uint8)
    return out


def make_spec(sim_state_dim=12, cameras=CAMS, size=(64, 64)) -> DatasetSpec:
    return DatasetSpec(fps=20, action_dim=7, state_dim=8, cameras=tuple(cameras), image_size=size,
                       benchmark="libero_object", robot_type="panda", sim_state_dim=sim_state_dim)


def make_episode(n: int, T: int = 12, spec: DatasetSpec | None = None, sim_width: int | None = None) -> Episode:
    spec = spec or make_spec()
    rng = np.random.default_rng(100 + n)
    H, W = spec.image_size
    sim = None
    if spec.sim_state_dim is not None:
        width = sim_width or (spec.sim_state_dim if spec.sim_state_dim > 0 else 10 + n)
        sim = rng.normal(size=(T, width))
    return Episode(
        task=f"put the object {n % 2} in the basket",
        actions=rng.uniform(-1, 1, size=(T, spec.action_dim)).astype(np.float32),
        states=rng.normal(size=(T, spec.state_dim)).astype(np.float32),
        gripper_width=rng.uniform(0, 0.08, size=T).astype(np.float32),
        images={c: make_frames(T, H, W, seed=n * 10 + k) for k, c in enumerate(spec.cameras)},
        sim_states=sim,
        success=(n % 3 != 2),
        meta={"benchmark": "libero_object", "task_id": n % 2, "seed": n, "init_state_index": n,
              "frame_range": [0, T], "source": {"episode": n, "note": None}, "score": 0.5 * n},
    )
