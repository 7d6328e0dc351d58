"""The in-memory episode: what collectors produce and dataset readers return.

Conventions (LeRobot): row ``t`` pairs the observation *before* step ``t`` with the action
taken at step ``t``; an episode of ``T`` rows has ``T`` actions. Control runs at the
benchmark's rate (LIBERO 20 Hz, Meta-World 80 Hz simulated, recorded at the env's rate).
"""
from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np


@dataclasses.dataclass
class Episode:
    """One demonstration (or one skill clip) as numpy arrays.

    Attributes:
        task: the language instruction (for a skill clip: its atomic skill prompt).
        actions: ``[T, A]`` float32. LIBERO: 7-D OSC_POSE deltas in [-1, 1] (xyz ×0.05 m,
            rotation ×0.5 rad, gripper -1 open / +1 close). Meta-World: 4-D (xyz delta, grip).
        states: ``[T, S]`` float32 proprioception ``observation.state``. LIBERO (S=8):
            end-effector position (m, 3), end-effector orientation as axis-angle (rad, 3),
            gripper finger joint positions (m, 2). Meta-World (S=4): hand position (m, 3),
            normalised finger gap (1 open).
        gripper_width: ``[T]`` float32 ``observation.gripper_width``. LIBERO: finger
            separation in metres (≈0.08 open); Meta-World: normalised gap (≈1.0 open).
        images: camera name -> ``[T, H, W, 3]`` uint8, upright (already flipped). May be
            empty when cameras were not loaded.
        sim_states: ``[T, N]`` float64 flattened simulator state before each step (enough to
            re-render any frame later), or None.
        success: whether the episode ended in task success.
        meta: free-form per-episode metadata (benchmark, task id/name, reset seed,
            init-state index, and for skill clips source episode / frame range / skill index).
    """

    task: str
    actions: np.ndarray
    states: np.ndarray
    gripper_width: np.ndarray
    images: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)
    sim_states: np.ndarray | None = None
    success: bool = True
    meta: dict[str, Any] = dataclasses.field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.actions.shape[0])

    def validate(self, where: str = "episode") -> None:
        """Check shapes and finiteness.

        Raises:
            ValueError: mismatched lengths, wrong dtypes/ranks, or NaN/inf values (message
                starts with ``where``).
        """
        T = len(self)
        if self.actions.ndim != 2 or T == 0:
            raise ValueError(f"{where}: actions must be [T, A] with T > 0, got {self.actions.shape}")
        for name, arr, nd in (("states", self.states, 2), ("gripper_width", self.gripper_width, 1)):
            if arr.ndim != nd or arr.shape[0] != T:
                raise ValueError(f"{where}: {name} has shape {arr.shape}, expected {T} rows")
        for name, arr in (("actions", self.actions), ("states", self.states), ("gripper_width", self.gripper_width)):
            if not np.all(np.isfinite(arr)):
                raise ValueError(f"{where}: {name} contains NaN or inf")
        for cam, frames in self.images.items():
            if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[0] != T or frames.shape[-1] != 3:
                raise ValueError(f"{where}: images[{cam!r}] must be uint8 [{T}, H, W, 3], got {frames.dtype} {frames.shape}")
        if self.sim_states is not None and self.sim_states.shape[0] != T:
            raise ValueError(f"{where}: sim_states has {self.sim_states.shape[0]} rows, expected {T}")

    def slice(self, start: int, stop: int) -> "Episode":
        """Rows ``[start, stop)`` as a new Episode (arrays are views; meta is copied)."""
        return Episode(
            task=self.task,
            actions=self.actions[start:stop],
            states=self.states[start:stop],
            gripper_width=self.gripper_width[start:stop],
            images={k: v[start:stop] for k, v in self.images.items()},
            sim_states=None if self.sim_states is None else self.sim_states[start:stop],
            success=self.success,
            meta=dict(self.meta),
        )
