"""LIBERO environment wrapper (robosuite 1.4 + the packaged LIBERO benchmark).

:class:`LiberoEnv` implements :class:`world2act.envs.base.ManipulationEnv` for one task of one
LIBERO suite. Design choices (measured on the project's 2-core CPU machines):

* The simulator is built with ``use_camera_obs=False`` and an offscreen render context, so
  :meth:`LiberoEnv.step` never renders (≈14–20 ms/step). Images are rendered only on demand by
  :meth:`LiberoEnv.render` via ``sim.render`` (≈100+ ms for agentview + wrist; the scene's
  geometry dominates, not the resolution).
* Soft resets where possible: a reset re-samples the BDDL placement regions in the loaded model
  (≈20–40 ms) instead of re-compiling the MJCF (≈2 s). Tasks with objects placed on other
  objects or fixtures (most of libero_spatial/goal/10) need the full reload, because LIBERO's
  conditional samplers mis-place objects after a soft reset.
* ``reset(seed=s)`` draws a random layout from the BDDL regions with ``np.random`` seeded by
  ``s`` (LIBERO's samplers use the global NumPy RNG; its state is saved and restored around
  the reset). Continuous random layouts are disjoint from the 50 official init states, which
  stay reserved for evaluation: ``reset(init_state_index=i)`` loads official state ``i``.
* Fixture poses (table, cabinet, stove …) are model constants that LIBERO re-samples (by up
  to ~2 cm) on every reset, so :meth:`LiberoEnv.get_sim_state` returns the flattened MuJoCo
  state ``[time, qpos, qvel]`` followed by ``[pos(3), quat(4)]`` of every fixture body; the
  state restores the scene exactly. :meth:`LiberoEnv.set_sim_state` also accepts a bare
  flattened MuJoCo state (e.g. an official init state), which leaves fixtures as they are.
* :meth:`LiberoEnv.render_segmentation` gives the robot pixels (``robot0_*`` and ``gripper0_*``
  bodies) of the same cameras from MuJoCo's segmentation pass.
* The LIBERO-Object robustness suites (:mod:`world2act.envs.libero_robustness`) are served
  like their base suite; their instructions and task order come from :func:`libero_tasks`.
* Rendered images are flipped upright with ``[::-1, ::-1]`` (MuJoCo's OpenGL convention gives
  them upside down and mirrored, the LIBERO convention flips both axes).

Actions: 7-D OSC_POSE deltas in [-1, 1] (xyz ×0.05 m, axis-angle ×0.5 rad, gripper -1 open /
+1 close), 20 Hz. Proprioception ``[S=8]`` = eef position (3, m, world frame), eef orientation as
axis-angle (3, rad), gripper finger qpos (2, m).
"""
from __future__ import annotations

import contextlib
import os
from functools import lru_cache
from typing import Any, Iterator

import numpy as np

from world2act import World2ActError
from world2act.envs.base import ManipulationEnv, TaskInfo
from world2act.envs.libero_robustness import ROBUSTNESS_SUITES
from world2act.envs.registry import LIBERO_SUITES, benchmark_spec

_SPEC = benchmark_spec("libero_object")  # facts every LIBERO suite shares

STEP_BUDGETS = {s: benchmark_spec(s).step_budget for s in LIBERO_SUITES}
"""Control steps allowed per episode after the settle steps (common LIBERO evaluation budgets)."""

CAMERA_NAMES = {c.name: c.sim_name for c in _SPEC.cameras}
"""Our camera names -> robosuite camera names."""

ROBOT_BODY_PREFIXES = ("robot0_", "gripper0_")
"""Bodies whose geoms count as robot pixels in :meth:`LiberoEnv.render_segmentation`."""

SETTLE_STEPS = _SPEC.settle_steps
SETTLE_ACTION = np.array(_SPEC.settle_action, dtype=np.float64)


def _import_libero() -> tuple[Any, Any]:
    """Import LIBERO after writing its path config (so the import never prompts on stdin)."""
    from world2act.envs.libero_config import ensure_libero_config

    ensure_libero_config()
    with _quiet():
        from libero.libero import benchmark, get_libero_path  # noqa: WPS433
    return benchmark, get_libero_path


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Silence robosuite/LIBERO chatter printed to stdout (warnings, task-order info)."""
    import io
    import logging
    from contextlib import redirect_stdout

    logging.getLogger("robosuite").setLevel(logging.ERROR)
    with redirect_stdout(io.StringIO()):
        yield


def _check_suite(suite: str) -> None:
    if suite not in LIBERO_SUITES:
        raise World2ActError(f"unknown LIBERO suite {suite!r}; valid: {', '.join(LIBERO_SUITES)}")


@lru_cache(maxsize=None)
def _suite(suite: str) -> Any:
    _check_suite(suite)
    benchmark, _ = _import_libero()
    with _quiet():
        return benchmark.get_benchmark_dict()[suite]()


def _norm(text: str) -> str:
    return " ".join(str(text).lower().split())


def _bddl_language(task: Any) -> str | None:
    """The ``(:language ...)`` line of a task's BDDL file (None when absent)."""
    import re

    _, get_libero_path = _import_libero()
    path = os.path.join(get_libero_path("bddl_files"), task.problem_folder, task.bddl_file)
    if not os.path.isfile(path):
        return None
    with open(path) as f:
        m = re.search(r"\(:language\s+([^)]*)\)", f.read())
    return m.group(1).strip() if m else None


@lru_cache(maxsize=None)
def _task_entries(suite: str) -> tuple[tuple[int, Any, str], ...]:
    """``(package task index, LIBERO Task, instruction)`` per world2act task id.

    Standard suites: the package's order and ``task.language``. Robustness suites
    (:data:`ROBUSTNESS_SUITES`): a task whose BDDL language names a base-suite task (case and
    spacing ignored; the base's BDDL text or its instruction) gets that base task's instruction,
    else the BDDL's own text (``libero_object_lan``'s paraphrases). Suites that rename the base's
    tasks (the distractor scenes, listed alphabetically by the package) are put in the base's
    order; the others keep the package's order.
    """
    tasks = list(_suite(suite).tasks)
    if suite not in ROBUSTNESS_SUITES:
        return tuple((i, t, t.language) for i, t in enumerate(tasks))
    base = list(_suite(ROBUSTNESS_SUITES[suite][0]).tasks)
    lookup: dict[str, int] = {}
    for j, bt in enumerate(base):
        for text in (_bddl_language(bt), bt.language):
            if text:
                lookup.setdefault(_norm(text), j)
    entries, matched = [], []
    for i, t in enumerate(tasks):
        text = _bddl_language(t) or t.language
        j = lookup.get(_norm(text))
        entries.append((i, t, base[j].language if j is not None else text))
        matched.append(j)
    renamed = {t.name for t in tasks} != {bt.name for bt in base}
    if renamed and sorted(m for m in matched if m is not None) == list(range(len(tasks))):
        entries = [e for _, e in sorted(zip(matched, entries), key=lambda p: p[0])]
    return tuple(entries)


def libero_tasks(suite: str) -> list[TaskInfo]:
    """The tasks of a LIBERO suite, in the benchmark's official order (robustness suites: see
    :func:`_task_entries` for their instructions and order).

    Args:
        suite: one of :data:`LIBERO_SUITES`.

    Returns:
        ``TaskInfo(benchmark=suite, task_id=i, name=<task name>, instruction=<language>)`` for
        ``i`` in ``range(n_tasks)`` (10 tasks per suite, 90 for ``libero_90``).

    Raises:
        World2ActError: an unknown suite (the message lists valid ones).
    """
    return [TaskInfo(suite, i, t.name, instruction) for i, (_, t, instruction) in enumerate(_task_entries(suite))]


def libero_init_states(suite: str, task_id: int) -> np.ndarray:
    """The official init states ``[50, N]`` float64 of a task (flattened MuJoCo states)."""
    s = _suite(suite)
    _check_task(suite, task_id)
    with _quiet():
        return np.asarray(s.get_task_init_states(_task_entries(suite)[int(task_id)][0]), dtype=np.float64)


def _check_task(suite: str, task_id: int) -> None:
    n = _suite(suite).n_tasks
    if not isinstance(task_id, (int, np.integer)) or not 0 <= int(task_id) < n:
        raise World2ActError(f"unknown task id {task_id!r} for {suite}; valid: 0..{n - 1}")


_OBSERVABLE_STATE = ("_time_since_last_sample", "_current_delay", "_current_observed_value", "_sampled")
"""Per-step state of a robosuite ``Observable`` (its sampling clock and last reading), for :meth:`LiberoEnv.snapshot`."""


class LiberoEnv(ManipulationEnv):
    """One LIBERO task as a :class:`ManipulationEnv` (no per-step rendering).

    Args:
        suite: one of :data:`LIBERO_SUITES`.
        task_id: task index within the suite (0..9; 0..89 for ``libero_90``).
        camera_size: default ``(H, W)`` for :meth:`observe` when no size is given.
        cameras: cameras this env will be asked to render, a subset of ``("agentview", "wrist")``.

    Raises:
        World2ActError: unknown suite, task id or camera (the message lists valid choices).

    Attributes (besides :class:`ManipulationEnv`'s): ``env`` is LIBERO's ``ControlEnv`` and
    ``sim`` robosuite's ``MjSim`` (for scripted experts with privileged access).
    """

    action_dim = _SPEC.action_dim
    state_dim = _SPEC.state_dim
    settle_steps = SETTLE_STEPS
    control_hz = _SPEC.fps

    def __init__(
        self,
        suite: str,
        task_id: int,
        *,
        camera_size: tuple[int, int] = (64, 64),
        cameras: tuple[str, ...] | list[str] = _SPEC.default_cameras,
    ) -> None:
        _check_suite(suite)
        _check_task(suite, task_id)
        self._check_cameras(cameras)
        benchmark_mod, get_libero_path = _import_libero()
        _, task, instruction = _task_entries(suite)[int(task_id)]
        self.benchmark = suite
        self.task_id = int(task_id)
        self.task_name = task.name
        self.instruction = instruction
        self.cameras = benchmark_spec(suite).camera_names
        self.render_cameras = tuple(cameras)
        self.camera_size = (int(camera_size[0]), int(camera_size[1]))
        self.max_steps = benchmark_spec(suite).step_budget
        self._init_states: np.ndarray | None = None
        self.num_init_states = benchmark_spec(suite).num_init_states
        bddl = os.path.join(get_libero_path("bddl_files"), task.problem_folder, task.bddl_file)
        if not os.path.isfile(bddl):
            raise World2ActError(f"LIBERO BDDL file missing: {bddl}")
        from libero.libero.envs.env_wrapper import ControlEnv

        with _quiet():
            self.env = ControlEnv(
                bddl_file_name=bddl,
                use_camera_obs=False,  # never render inside step()
                has_offscreen_renderer=True,  # but keep a context for render()
                camera_heights=self.camera_size[0],
                camera_widths=self.camera_size[1],
                hard_reset=False,  # re-sample placements without recompiling the model
                ignore_done=True,  # our step budgets are shorter than the 1000-step horizon
            )
        self.sim = self.env.sim
        self._fixture_bodies = self._find_fixture_bodies()
        # Objects placed on other objects or fixtures ("bowl on the stove") are mis-placed by
        # LIBERO's samplers after a soft reset (they land off the table), so those tasks
        # reload the model on every reset (≈2 s); the others re-sample in place (≈30 ms).
        inner = self.env.env
        inner.hard_reset = any(
            init is not None and len(getattr(init, "samplers", {})) > 0
            for init in (inner.conditional_placement_initializer, inner.conditional_placement_on_objects_initializer)
        )
        self._obs: dict[str, np.ndarray] | None = None
        self._closed = False

    # ------------------------------------------------------------------ helpers
    def _check_cameras(self, cameras: tuple[str, ...] | list[str]) -> None:
        if isinstance(cameras, str):
            cameras = (cameras,)
        bad = [c for c in cameras if c not in CAMERA_NAMES]
        if bad:
            raise World2ActError(f"unknown LIBERO camera {bad[0]!r}; valid: {', '.join(CAMERA_NAMES)}")

    def _find_fixture_bodies(self) -> list[int]:
        inner = self.env.env
        ids = []
        for fx in inner.fixtures_dict.values():
            try:
                ids.append(self.sim.model.body_name2id(fx.root_body))
            except Exception:  # noqa: BLE001 - a fixture without a root body in the model
                continue
        return ids

    def _check_open(self) -> None:
        if self._closed:
            raise World2ActError("LiberoEnv is closed")

    @property
    def init_states(self) -> np.ndarray:
        """Official init states ``[50, N0]`` float64 (loaded on first use)."""
        if self._init_states is None:
            self._init_states = libero_init_states(self.benchmark, self.task_id)
            self.num_init_states = len(self._init_states)
        return self._init_states

    def _reset_layout(self, seed: int) -> None:
        """Re-sample the BDDL placement regions with the global NumPy RNG seeded by ``seed``."""
        saved = np.random.get_state()
        try:
            np.random.seed(int(seed) % (2**32))
            with _quiet():
                self._obs = self.env.reset()
        finally:
            np.random.set_state(saved)
        self.sim = self.env.sim  # a hard reset builds a new MjSim
        self._clear_hidden_state()

    def _clear_hidden_state(self) -> None:
        """Zero simulator/controller state that the flattened MuJoCo state does not hold, so
        that a reset does not depend on the previous episode: the gripper's integrated command
        (robosuite ramps it by ``speed`` per sub-step and keeps it across soft resets) and
        MuJoCo's solver warm start."""
        for robot in self.env.env.robots:
            gripper = getattr(robot, "gripper", None)
            if gripper is not None and hasattr(gripper, "current_action"):
                gripper.current_action = np.zeros_like(gripper.current_action)
        self.sim.data.qacc_warmstart[:] = 0.0

    # ------------------------------------------------------------------ interface
    def reset(self, *, seed: int | None = None, init_state_index: int | None = None) -> None:
        """Reset to a random layout drawn from ``seed`` or to official init state
        ``init_state_index``, then run :data:`SETTLE_STEPS` steps of ``[0,0,0,0,0,0,-1]``.

        Raises:
            ValueError: both or neither given, or an index outside ``[0, 50)``.
        """
        self._check_open()
        if (seed is None) == (init_state_index is None):
            raise ValueError("LiberoEnv.reset: give exactly one of seed= or init_state_index=")
        if init_state_index is not None:
            states = self.init_states
            if not 0 <= int(init_state_index) < len(states):
                raise ValueError(
                    f"init_state_index {init_state_index} out of range; valid: 0..{len(states) - 1}"
                )
            # Fixture poses are drawn from a fixed seed so that an init state always
            # gives the same scene.
            self._reset_layout(10_000_019 + int(init_state_index))
            with _quiet():
                self._obs = self.env.set_init_state(states[int(init_state_index)])
        else:
            self._reset_layout(int(seed))
        for _ in range(self.settle_steps):
            self.step(SETTLE_ACTION)

    def step(self, action: np.ndarray) -> None:
        """Apply one action ``[7]`` (clipped to [-1, 1]) for one 20 Hz control step."""
        self._check_open()
        a = np.clip(np.asarray(action, dtype=np.float64).reshape(-1), -1.0, 1.0)
        if a.shape != (7,):
            raise ValueError(f"LIBERO action must have 7 entries, got shape {np.shape(action)}")
        self._obs, _, _, _ = self.env.step(a)

    def _observation(self) -> dict[str, np.ndarray]:
        if self._obs is None:
            self._obs = self.env.env._get_observations(force_update=True)
        return self._obs

    def proprio(self) -> np.ndarray:
        """``[8]`` float32: eef pos (m), eef axis-angle (rad), gripper finger qpos (2, m)."""
        from robosuite.utils.transform_utils import quat2axisangle

        o = self._observation()
        return np.concatenate(
            [o["robot0_eef_pos"], quat2axisangle(np.array(o["robot0_eef_quat"], dtype=np.float64)), o["robot0_gripper_qpos"]]
        ).astype(np.float32)

    def gripper_width(self) -> float:
        """Finger separation ``qpos[0] - qpos[1]`` in metres (≈0.080 open, ≈0.001 closed on nothing)."""
        q = self._observation()["robot0_gripper_qpos"]
        return float(q[0] - q[1])

    def _make_context_current(self) -> None:
        """Make this env's offscreen GL context current (if it has one yet): with several LIBERO envs in
        one process, robosuite renders into, and MuJoCo frees objects of, whichever was made current last."""
        ctx = getattr(self.sim, "_render_context_offscreen", None)
        if ctx is not None:
            ctx.gl_ctx.make_current()

    def render(self, cameras: tuple[str, ...] | list[str], size: tuple[int, int] | None = None) -> dict[str, np.ndarray]:
        """Render cameras at ``size=(H, W)`` (default ``camera_size``) -> uint8 ``[H, W, 3]`` upright.

        Raises:
            World2ActError: an unknown camera name (the message lists valid ones).
        """
        self._check_open()
        if isinstance(cameras, str):
            cameras = (cameras,)
        self._check_cameras(cameras)
        h, w = size if size is not None else self.camera_size
        self._make_context_current()
        out = {}
        for cam in cameras:
            img = self.sim.render(camera_name=CAMERA_NAMES[cam], width=int(w), height=int(h))
            out[cam] = np.ascontiguousarray(img[::-1, ::-1])
        return out

    def robot_geoms(self) -> np.ndarray:
        """Bool ``[ngeom]``: geoms of the Panda arm and its gripper (bodies named ``robot0_*`` and
        ``gripper0_*``; the ``mount0_*`` pedestal is not counted)."""
        import mujoco

        m = self.sim.model._model
        robot = np.array([(mujoco.mj_id2name(m, mujoco.mjtObj.mjOBJ_BODY, b) or "").startswith(ROBOT_BODY_PREFIXES)
                          for b in range(m.nbody)], dtype=bool)
        return robot[np.asarray(m.geom_bodyid)]

    def render_segmentation(self, cameras: tuple[str, ...] | list[str], size: tuple[int, int] | None = None) -> dict[str, np.ndarray]:
        """Robot pixels of ``cameras`` at ``size=(H, W)`` (default ``camera_size``).

        MuJoCo's segmentation pass (``mjRND_SEGMENT`` + ``mjRND_IDCOLOR``: each geom drawn in a
        colour that encodes its index in the scene) through robosuite's own offscreen context
        (its ``sim.render(segmentation=True)`` decoding overflows uint8 with NumPy 2, so the ids
        are decoded here), flipped like :meth:`render`: ``mask[y, x]`` tells whether pixel
        ``(y, x)`` of ``render(cameras, size)[camera]`` shows the arm or the gripper
        (:meth:`robot_geoms`). Restore a stored state with :meth:`set_sim_state` first to get
        the masks of a recorded frame.

        Returns:
            camera -> bool ``[H, W]`` (True = robot pixel).

        Raises:
            World2ActError: an unknown camera name (the message lists valid ones).
        """
        import mujoco

        self._check_open()
        if isinstance(cameras, str):
            cameras = (cameras,)
        self._check_cameras(cameras)
        h, w = (int(v) for v in (size if size is not None else self.camera_size))
        robot = self.robot_geoms()
        ctx = self.sim._render_context_offscreen
        geom = int(mujoco.mjtObj.mjOBJ_GEOM)
        out = {}
        for cam in cameras:
            ctx.gl_ctx.make_current()
            ctx.render(width=w, height=h, camera_id=self.sim.model.camera_name2id(CAMERA_NAMES[cam]), segmentation=True)
            rgb = np.empty((h, w, 3), dtype=np.uint8)
            mujoco.mjr_readPixels(rgb=rgb, depth=None, viewport=mujoco.MjrRect(0, 0, w, h), con=ctx.con)
            segid = rgb.astype(np.int64) @ np.array([1, 1 << 8, 1 << 16], dtype=np.int64)  # scene geom index + 1
            n = ctx.scn.ngeom
            table = np.zeros(n + 1, dtype=bool)  # index 0 = background
            for i in range(n):
                g = ctx.scn.geoms[i]
                if g.segid != -1 and g.objtype == geom and 0 <= g.objid < robot.size:
                    table[g.segid + 1] = robot[g.objid]
            mask = table[np.where(segid <= n, segid, 0)]
            out[cam] = np.ascontiguousarray(mask[::-1, ::-1])
        return out

    def observe(self, cameras: tuple[str, ...] | list[str] = (), size: tuple[int, int] | None = None) -> dict[str, Any]:
        """See :meth:`ManipulationEnv.observe`; ``size`` defaults to ``camera_size``."""
        return super().observe(cameras, size if size is not None else self.camera_size)

    def is_success(self) -> bool:
        """LIBERO's goal predicate (``check_success``) on the current state."""
        self._check_open()
        return bool(self.env.check_success())

    def get_sim_state(self) -> np.ndarray:
        """``[N]`` float64: flattened MuJoCo state ``[time, qpos, qvel]`` then fixture poses
        ``[pos(3), quat(4)] × n_fixtures`` (model constants LIBERO re-samples on reset)."""
        self._check_open()
        mj = self.sim.get_state().flatten()
        fx = [np.concatenate([self.sim.model.body_pos[b], self.sim.model.body_quat[b]]) for b in self._fixture_bodies]
        return np.concatenate([mj, *fx]).astype(np.float64)

    @property
    def mujoco_state_dim(self) -> int:
        """Length ``N0`` of the bare flattened MuJoCo state (the official init states' length)."""
        return 1 + self.sim.model.nq + self.sim.model.nv

    def set_sim_state(self, state: np.ndarray) -> None:
        """Restore a state from :meth:`get_sim_state`, or a bare flattened MuJoCo state ``[N0]``.

        Raises:
            ValueError: a state of the wrong length.
        """
        self._check_open()
        state = np.asarray(state, dtype=np.float64).reshape(-1)
        n0 = self.mujoco_state_dim
        n_full = n0 + 7 * len(self._fixture_bodies)
        if state.shape[0] not in (n0, n_full):
            raise ValueError(f"LIBERO sim state for {self.task_name} must have {n_full} (or {n0}) entries, got {state.shape[0]}")
        if state.shape[0] == n_full:
            fx = state[n0:].reshape(-1, 7)
            for b, p in zip(self._fixture_bodies, fx):
                self.sim.model.body_pos[b] = p[:3]
                self.sim.model.body_quat[b] = p[3:]
        with _quiet():
            self._obs = self.env.set_init_state(state[:n0])

    def snapshot(self) -> dict[str, Any]:
        """Everything the next steps depend on (:meth:`ManipulationEnv.snapshot`): the MuJoCo
        state and fixtures, the controls, activations and solver warm start, each robot's
        operational-space controller state (goal pose, cached kinematics), gripper command (robosuite
        moves the fingers' command toward the action at a limited speed, so it carries over between
        steps) and torques, the environment's step counter, the last observation and the observables'
        sampling clocks. :meth:`get_sim_state` alone
        holds none of these, so a look-ahead query (:meth:`expert_chunk`) restored with it would
        change the next steps."""
        import copy

        self._check_open()
        inner, d = self.env.env, self.sim.data
        robots = [({k: copy.deepcopy(v) for k, v in vars(r.controller).items()
                    if isinstance(v, (np.ndarray, float, int, bool))},
                   np.array(r.gripper.current_action, copy=True), np.array(r.torques, copy=True)) for r in inner.robots]
        return {"sim": self.get_sim_state(), "ctrl": np.array(d.ctrl), "act": np.array(d.act),
                "qacc_warmstart": np.array(d.qacc_warmstart), "robots": robots,
                "env": (inner.timestep, inner.cur_time, inner.done), "obs": copy.deepcopy(self._obs),
                "observables": {name: {k: copy.deepcopy(v) for k, v in vars(ob).items() if k in _OBSERVABLE_STATE}
                                for name, ob in inner._observables.items()}}

    def restore(self, snap: dict[str, Any]) -> None:
        """Return to a :meth:`snapshot` exactly (the next step behaves as if nothing happened)."""
        import copy

        self.set_sim_state(snap["sim"])
        inner, d = self.env.env, self.sim.data
        d.ctrl[:], d.qacc_warmstart[:] = snap["ctrl"], snap["qacc_warmstart"]
        if len(snap["act"]):
            d.act[:] = snap["act"]
        for r, (ctrl_state, grip, torques) in zip(inner.robots, snap["robots"]):
            vars(r.controller).update(copy.deepcopy(ctrl_state))
            r.gripper.current_action = np.array(grip, copy=True)
            r.torques = np.array(torques, copy=True)
        inner.timestep, inner.cur_time, inner.done = snap["env"]
        for name, state in snap["observables"].items():  # sampling clocks: which sub-step the next reading is from
            vars(inner._observables[name]).update(copy.deepcopy(state))
        self._obs = copy.deepcopy(snap["obs"])  # the step's own observation (a forced re-read differs by ~1 mm)

    def privileged(self) -> dict[str, Any]:
        """Privileged state for scripted experts.

        Returns:
            dict with ``eef_pos [3]`` (m), ``eef_quat [4]`` (xyzw), ``gripper_qpos [2]``,
            ``objects`` (name -> ``{"pos": [3], "quat": [4] xyzw}`` for every movable object),
            ``goal_state`` (the parsed BDDL goal, e.g. ``[["in", "a_1", "basket_1_contain_region"]]``),
            ``obj_of_interest`` (list of names).
        """
        o = self._observation()
        inner = self.env.env
        objects = {
            name: {"pos": np.array(o[f"{name}_pos"]), "quat": np.array(o[f"{name}_quat"])}
            for name in inner.objects_dict
            if f"{name}_pos" in o
        }
        return {
            "eef_pos": np.array(o["robot0_eef_pos"]),
            "eef_quat": np.array(o["robot0_eef_quat"]),
            "gripper_qpos": np.array(o["robot0_gripper_qpos"]),
            "objects": objects,
            "goal_state": [list(g) for g in inner.parsed_problem["goal_state"]],
            "obj_of_interest": list(inner.parsed_problem.get("obj_of_interest", [])),
        }

    def close(self) -> None:
        """Free the simulator and its render context (idempotent)."""
        if self._closed:
            return
        self._closed = True
        try:
            # MuJoCo frees this env's GL objects (textures, buffers) in whichever context is current; with
            # several envs in one process that may be another env's, whose objects then vanish (it renders
            # garbage). Make this env's own context current first.
            self._make_context_current()
            self.env.close()
        except Exception:  # noqa: BLE001 - EGL teardown noise at close is harmless
            pass

    def __repr__(self) -> str:
        return f"LiberoEnv({self.benchmark!r}, {self.task_id}, task={self.task_name!r})"
