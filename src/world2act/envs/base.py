"""The one environment interface over LIBERO and Meta-World.

Every simulator wrapper implements :class:`ManipulationEnv`. Rendering is on demand and only
for the cameras asked for: stepping never renders (software rendering is the main CPU cost).
"""
from __future__ import annotations

import abc
import dataclasses
from typing import Any

import numpy as np


@dataclasses.dataclass(frozen=True)
class TaskInfo:
    """One task of a benchmark.

    Attributes:
        benchmark: ``"libero_object"``, ``"libero_spatial"``, ``"libero_goal"``, ``"libero_10"``,
            ``"libero_90"`` or ``"metaworld"``.
        task_id: LIBERO task index (int) within the suite, or Meta-World env name (str).
        name: LIBERO task name / Meta-World env name.
        instruction: natural-language instruction.
    """

    benchmark: str
    task_id: Any
    name: str
    instruction: str


class ManipulationEnv(abc.ABC):
    """A single-task manipulation environment.

    Class/instance attributes every implementation sets:
        benchmark: ``"libero_object"`` … or ``"metaworld"``.
        task_name: LIBERO task name (e.g. ``"pick_up_the_alphabet_soup_and_place_it_in_the_basket"``)
            or Meta-World env name (``"pick-place-v3"``).
        task_id: LIBERO task index within its suite, or the Meta-World env name.
        instruction: natural-language instruction.
        action_dim: ``A`` (LIBERO 7, Meta-World 4). state_dim: ``S`` (LIBERO 8, Meta-World 4).
        cameras: the camera names this benchmark offers (first = main third-person view,
            second = wrist / gripper view).
        max_steps: the suite's step budget after settling (spatial 220, object 280, goal 300,
            libero_10 520, libero_90 400, Meta-World 500).
        settle_steps: no-op steps run by :meth:`reset` before control starts (LIBERO 10, MW 0).
        control_hz: control frequency in Hz (LIBERO 20; Meta-World 80).
        num_init_states: number of official init states (LIBERO 50, Meta-World 0).
    """

    benchmark: str
    task_name: str
    task_id: Any
    instruction: str
    action_dim: int
    state_dim: int
    cameras: tuple[str, ...]
    max_steps: int
    settle_steps: int
    control_hz: float
    num_init_states: int = 0

    @abc.abstractmethod
    def reset(self, *, seed: int | None = None, init_state_index: int | None = None) -> None:
        """Reset to a random layout drawn from ``seed``, or to official init state
        ``init_state_index`` (LIBERO only), then run the settle steps.

        Raises:
            ValueError: both or neither given, or an index outside ``[0, num_init_states)``.
        """

    @abc.abstractmethod
    def step(self, action: np.ndarray) -> None:
        """Apply one action ``[A]`` (clipped to [-1, 1]) for one control step."""

    @abc.abstractmethod
    def proprio(self) -> np.ndarray:
        """``observation.state`` ``[S]`` float32 (see :class:`world2act.data.schema.Episode`)."""

    @abc.abstractmethod
    def gripper_width(self) -> float:
        """Finger separation: metres for LIBERO, normalised gap (1.0 open) for Meta-World."""

    @abc.abstractmethod
    def render(self, cameras: tuple[str, ...] | list[str], size: tuple[int, int]) -> dict[str, np.ndarray]:
        """Render the chosen cameras at ``size=(H, W)``: name -> uint8 ``[H, W, 3]``, upright.

        Raises:
            ValueError: an unknown camera name (message lists valid ones).
        """

    def render_segmentation(self, cameras: tuple[str, ...] | list[str], size: tuple[int, int]) -> dict[str, np.ndarray]:
        """Robot pixels of the chosen cameras at ``size=(H, W)``: name -> bool ``[H, W]``,
        aligned with :meth:`render` (True where the arm or gripper is drawn).

        Raises:
            NotImplementedError: the simulator wrapper has no segmentation pass.
        """
        raise NotImplementedError(f"{type(self).__name__} cannot render segmentation masks")

    @abc.abstractmethod
    def is_success(self) -> bool:
        """Whether the task is currently solved."""

    @abc.abstractmethod
    def get_sim_state(self) -> np.ndarray:
        """Flattened simulator state ``[N]`` float64 (restores the scene exactly)."""

    @abc.abstractmethod
    def set_sim_state(self, state: np.ndarray) -> None:
        """Restore a state from :meth:`get_sim_state` (used to re-render stored episodes)."""

    def snapshot(self) -> Any:
        """Everything the next steps depend on, for :meth:`restore` (look-ahead queries such as
        :meth:`expert_chunk`). Default: :meth:`get_sim_state`; wrappers whose simulator keeps
        state outside it (Meta-World: mocap targets, previous-frame observation, step counter)
        override both."""
        return self.get_sim_state()

    def restore(self, snap: Any) -> None:
        """Return to a :meth:`snapshot` exactly: the next step behaves as if nothing happened since."""
        self.set_sim_state(snap)

    @abc.abstractmethod
    def privileged(self) -> dict[str, Any]:
        """Privileged simulator information for scripted experts (object poses, sites...)."""

    def expert_chunk(self, k: int) -> np.ndarray:
        """The scripted expert's next ``k`` actions from the *current* state, leaving the state
        as it was (DAgger-style relabelling for Stage-2 oracles).

        The expert is built fresh at the current state, run ``k`` steps, and the simulator is
        put back with :meth:`restore` (physics, controls and mocap targets, and the wrapper's own
        state), so executing the returned chunk open loop reproduces the expert's look-ahead.
        LIBERO's phase-based expert re-plans from the current state.

        Returns:
            ``[k, A]`` float32 actions in [-1, 1].

        Raises:
            World2ActError: the task has no scripted expert.
        """
        from world2act.experts import make_expert

        saved = self.snapshot()
        expert = make_expert(self)
        expert.reset()
        actions = []
        try:
            for _ in range(int(k)):
                a = np.asarray(expert.act(), dtype=np.float32)
                actions.append(a)
                self.step(a)
        finally:
            self.restore(saved)
        return np.stack(actions)

    def observe(self, cameras: tuple[str, ...] | list[str] = (), size: tuple[int, int] = (64, 64)) -> dict[str, Any]:
        """A LeRobot-named observation for a policy (single env, no batch dim):
        ``observation.state`` ``[S]``, ``observation.gripper_width`` scalar, and
        ``observation.images.<cam>`` uint8 ``[H, W, 3]`` for each camera asked for, and
        ``task`` (the instruction)."""
        obs: dict[str, Any] = {
            "observation.state": self.proprio(),
            "observation.gripper_width": np.float32(self.gripper_width()),
            "task": self.instruction,
        }
        if cameras:
            for cam, img in self.render(cameras, size).items():
                obs[f"observation.images.{cam}"] = img
        return obs

    def close(self) -> None:
        """Release simulator resources."""

    def __enter__(self) -> "ManipulationEnv":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
