"""Benchmark registry: every static fact about a benchmark, in one place.

One frozen :class:`BenchmarkSpec` per benchmark (``libero_object``, ``libero_spatial``,
``libero_goal``, ``libero_10``, ``libero_90``, ``metaworld``); :func:`benchmark_spec` is the one
accessor. Modules ask it instead of hard-coding action widths, camera names, step budgets or
``benchmark == "metaworld"`` branches. Importing this module starts no simulator and imports
neither LIBERO nor Meta-World, so it is safe before workers start.

Sources of the facts (checked against the live simulators in ``tests/envs/test_registry.py``):

* LIBERO (robosuite Panda, OSC_POSE controller, 20 Hz): action ``[7]`` = xyz delta (×0.05 m),
  axis-angle delta (×0.5 rad), gripper (-1 open, +1 close); state ``[8]`` = eef position (m),
  eef axis-angle (rad), the two finger joint positions (m; width = left − right, ≈0.080 open).
  Cameras ``agentview`` (robosuite ``agentview``) and ``wrist`` (``robot0_eye_in_hand``), both
  rendered upside down and mirrored by MuJoCo's OpenGL convention and flipped on both axes.
  10 settle steps of ``[0,0,0,0,0,0,-1]`` after every reset; 50 official init states per task.
* Meta-World v3 (Sawyer, 80 Hz, ``metadata["render_fps"]``): action ``[4]`` = xyz hand
  displacement and gripper effort (+1 close); state ``[4]`` = hand position and the normalised
  finger gap (1 open). Cameras are the MuJoCo model's names: the wrist camera is
  ``gripperPOV`` (the model has no camera called ``gripper``); the ``corner*`` cameras are
  mounted upside down and rotated by 180°. No official init states: seeded resets.
"""
from __future__ import annotations

import dataclasses

from world2act import World2ActError
from world2act.envs.libero_robustness import ROBUSTNESS_SUITES

FLIP_NONE = "none"
"""Image orientation: the simulator's image is already upright."""
FLIP_BOTH = "flip_both"
"""Image orientation: flip both axes (``img[::-1, ::-1]``, i.e. a 180° rotation) to get it upright."""


@dataclasses.dataclass(frozen=True)
class CameraSpec:
    """One camera of a benchmark.

    Attributes:
        name: the name used throughout world2act (``--cameras``, dataset keys).
        sim_name: the camera's name in the simulator's MuJoCo model.
        flip: :data:`FLIP_NONE` or :data:`FLIP_BOTH` (how the raw render is made upright).
        role: ``"third_person"``, ``"wrist"`` or ``"other"``.
    """

    name: str
    sim_name: str
    flip: str = FLIP_NONE
    role: str = "other"


@dataclasses.dataclass(frozen=True)
class BenchmarkSpec:
    """Static facts of one benchmark (no simulator needed).

    Attributes:
        name: benchmark name (``--benchmark``).
        family: ``"libero"`` (all LIBERO suites share robot, cameras and action space) or
            ``"metaworld"``.
        robot: robot type written to datasets (``"panda"``, ``"sawyer"``).
        num_tasks: tasks in the benchmark.
        action_names: one name per action dimension (``action_dim = len(action_names)``).
        state_names: one name per proprioceptive-state dimension.
        cameras: every renderable camera, the defaults first.
        default_cameras: the cameras rendered when none are given (third-person, then wrist).
        default_camera: the single main camera (e.g. Stage-2 post-training's camera).
        step_budget: control steps allowed per episode (after the settle steps).
        settle_steps: no-op steps run after every reset before control starts.
        settle_action: the action used for settling (empty when ``settle_steps == 0``).
        init_states: ``"official"`` (fixed init states shipped with the benchmark, reserved for
            evaluation) or ``"seeded"`` (random layouts drawn from a reset seed).
        num_init_states: official init states per task (0 when seeded).
        gripper_action_dim: index of the gripper command in the action.
        gripper_action_close_sign: sign of the gripper command that closes (+1: +1 closes).
        gripper_state_dims: state dimensions that carry the gripper opening.
        gripper_state_closed: ``"low"``: a smaller opening (width) means closed.
        gripper_open_width: the robot's fully open width (m for LIBERO, normalised for Meta-World).
        gripper_tau: default closure threshold for contact detection (fraction of the open width).
        scripted_expert: whether a scripted expert exists (for at least some tasks; see
            :func:`world2act.experts.supported_tasks`).
        fps: control (and recording) frequency in Hz.
    """

    name: str
    family: str
    robot: str
    num_tasks: int
    action_names: tuple[str, ...]
    state_names: tuple[str, ...]
    cameras: tuple[CameraSpec, ...]
    default_cameras: tuple[str, ...]
    default_camera: str
    step_budget: int
    settle_steps: int
    settle_action: tuple[float, ...]
    init_states: str
    num_init_states: int
    gripper_action_dim: int
    gripper_action_close_sign: int
    gripper_state_dims: tuple[int, ...]
    gripper_state_closed: str
    gripper_open_width: float
    gripper_tau: float
    scripted_expert: bool
    fps: float

    @property
    def action_dim(self) -> int:
        """``A``: width of an action."""
        return len(self.action_names)

    @property
    def state_dim(self) -> int:
        """``S``: width of the proprioceptive state."""
        return len(self.state_names)

    @property
    def camera_names(self) -> tuple[str, ...]:
        """Names of every renderable camera, the defaults first."""
        return tuple(c.name for c in self.cameras)

    @property
    def is_libero(self) -> bool:
        return self.family == "libero"

    @property
    def is_metaworld(self) -> bool:
        return self.family == "metaworld"

    @property
    def has_official_init_states(self) -> bool:
        return self.init_states == "official"

    def camera(self, name: str) -> CameraSpec:
        """The :class:`CameraSpec` called ``name``.

        Raises:
            World2ActError: no such camera (lists the valid ones).
        """
        for c in self.cameras:
            if c.name == name:
                return c
        raise World2ActError(f"unknown camera {name!r} for {self.name}; valid: {', '.join(self.camera_names)}")


_LIBERO_CAMERAS = (
    CameraSpec("agentview", "agentview", FLIP_BOTH, "third_person"),
    CameraSpec("wrist", "robot0_eye_in_hand", FLIP_BOTH, "wrist"),
)
_METAWORLD_CAMERAS = (
    CameraSpec("corner2", "corner2", FLIP_BOTH, "third_person"),
    CameraSpec("gripperPOV", "gripperPOV", FLIP_NONE, "wrist"),
    CameraSpec("corner", "corner", FLIP_BOTH),
    CameraSpec("corner3", "corner3", FLIP_BOTH),
    CameraSpec("corner4", "corner4", FLIP_BOTH),
    CameraSpec("topview", "topview", FLIP_NONE),
    CameraSpec("behindGripper", "behindGripper", FLIP_NONE),
)

_LIBERO_SUITE_FACTS = {  # name: (tasks, step budget, scripted expert)
    "libero_object": (10, 280, True),
    "libero_spatial": (10, 220, True),
    "libero_goal": (10, 300, True),
    "libero_10": (10, 520, True),
    "libero_90": (90, 400, False),
}


def _libero(name: str) -> BenchmarkSpec:
    n, budget, expert = _LIBERO_SUITE_FACTS[name]
    return BenchmarkSpec(
        name=name, family="libero", robot="panda", num_tasks=n,
        action_names=("x", "y", "z", "roll", "pitch", "yaw", "gripper"),
        state_names=("x", "y", "z", "axis_angle_x", "axis_angle_y", "axis_angle_z", "finger_left", "finger_right"),
        cameras=_LIBERO_CAMERAS, default_cameras=("agentview", "wrist"), default_camera="agentview",
        step_budget=budget, settle_steps=10, settle_action=(0.0, 0.0, 0.0, 0.0, 0.0, 0.0, -1.0),
        init_states="official", num_init_states=50,
        gripper_action_dim=6, gripper_action_close_sign=1, gripper_state_dims=(6, 7), gripper_state_closed="low",
        gripper_open_width=0.080, gripper_tau=0.10, scripted_expert=expert, fps=20.0,
    )


METAWORLD_SPEC = BenchmarkSpec(
    name="metaworld", family="metaworld", robot="sawyer", num_tasks=50,
    action_names=("x", "y", "z", "gripper"), state_names=("x", "y", "z", "gripper"),
    cameras=_METAWORLD_CAMERAS, default_cameras=("corner2", "gripperPOV"), default_camera="corner2",
    step_budget=500, settle_steps=0, settle_action=(),
    init_states="seeded", num_init_states=0,
    gripper_action_dim=3, gripper_action_close_sign=1, gripper_state_dims=(3,), gripper_state_closed="low",
    gripper_open_width=1.0, gripper_tau=0.30, scripted_expert=True, fps=80.0,
)

SPECS: dict[str, BenchmarkSpec] = {
    **{name: _libero(name) for name in ("libero_spatial", "libero_object", "libero_goal", "libero_10", "libero_90")},
    "metaworld": METAWORLD_SPEC,
}
"""Every benchmark's spec, in the order of :data:`world2act.envs.BENCHMARKS`."""
# LIBERO-Object robustness suites: the base suite's facts under their own names.
SPECS.update({name: dataclasses.replace(SPECS[base], name=name) for name, (base, _) in ROBUSTNESS_SUITES.items()})

BENCHMARK_NAMES: tuple[str, ...] = tuple(SPECS)
LIBERO_SUITES: tuple[str, ...] = tuple(n for n, s in SPECS.items() if s.is_libero)
FAMILIES: dict[str, BenchmarkSpec] = {"libero": SPECS["libero_object"], "metaworld": METAWORLD_SPEC}
"""One representative spec per family (the facts shared by all of a family's benchmarks)."""


def benchmark_spec(name: str) -> BenchmarkSpec:
    """The :class:`BenchmarkSpec` of benchmark ``name``.

    Raises:
        World2ActError: unknown benchmark (one line, lists the valid names).
    """
    spec = SPECS.get(name) if isinstance(name, str) else None
    if spec is None:
        raise World2ActError(f"unknown benchmark {name!r}; valid: {', '.join(SPECS)}")
    return spec


def family_spec(family_or_benchmark: str) -> BenchmarkSpec:
    """A spec for a family name (``"libero"``, ``"metaworld"``) or any benchmark name.

    Raises:
        World2ActError: neither a family nor a benchmark.
    """
    if family_or_benchmark in FAMILIES:
        return FAMILIES[family_or_benchmark]
    return benchmark_spec(family_or_benchmark)


def family_of(name) -> str | None:
    """The family (``"libero"`` / ``"metaworld"``) of a benchmark name, None when unknown.

    Registered names map through their spec; other names by prefix, as dataset metadata may
    carry them: ``libero*`` → libero, ``metaworld*`` / ``meta-world*`` → metaworld. Never raises.
    """
    spec = SPECS.get(name) if isinstance(name, str) else None
    if spec is not None:
        return spec.family
    b = str(name or "").lower()
    if b.startswith("libero"):
        return "libero"
    if b.startswith("metaworld") or b.startswith("meta-world"):
        return "metaworld"
    return None


def is_metaworld(name: str) -> bool:
    """True for Meta-World (seeded resets, no settle steps), False for a LIBERO suite.

    Raises:
        World2ActError: unknown benchmark.
    """
    return benchmark_spec(name).is_metaworld


__all__ = [
    "BENCHMARK_NAMES", "BenchmarkSpec", "CameraSpec", "FAMILIES", "FLIP_BOTH", "FLIP_NONE", "LIBERO_SUITES",
    "METAWORLD_SPEC", "SPECS", "benchmark_spec", "family_of", "family_spec", "is_metaworld",
]
