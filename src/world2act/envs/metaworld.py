"""Meta-World v3 behind the :class:`~world2act.envs.base.ManipulationEnv` interface.

Design (measured on 2 CPU cores, see ``docs/envs.md``):
- The task class is built directly (``metaworld.env_dict.ALL_V3_ENVIRONMENTS``) with the goal
  observable and a *seeded* random layout: ``reset(seed=s)`` seeds the env's generator and
  draws the object/goal layout from it, so the same seed always gives the same scene. This is
  what ``gym.make('Meta-World/MT1', seed=s)`` does, minus its 50 pre-sampled goals (≈1 s).
- Stepping never renders. :meth:`render` draws chosen cameras by name with a cached
  ``mujoco.Renderer`` per size. Under software rendering (llvmpipe) the cost is set by render
  passes, so by default (``fast_render=True``) shadows, floor reflections and multisampling are
  off: ≈4× cheaper than Meta-World's defaults (2 cameras at 64²: ≈18 ms vs ≈77 ms), with
  slightly harder edges at 64².
- MuJoCo picks its GL backend when first imported: set ``MUJOCO_GL=egl`` before anything imports
  ``mujoco`` (importing :mod:`world2act.envs` first does it).
- The ``corner*`` cameras are mounted upside down (their up-axis points down); their images are
  rotated by 180° so every image comes out upright.
- :meth:`render_segmentation` gives the robot pixels (arm and gripper, not the pedestal or the
  head) of the same cameras from MuJoCo's segmentation pass (≈2 ms per camera at 64²).
- :meth:`get_sim_state` = ``[n, layout vector (n), MuJoCo full physics state]``, so a stored
  state restores the scene exactly, even in an env that was reset to another seed.

Meta-World has no official init states: ``reset(init_state_index=...)`` raises ValueError.
"""
from __future__ import annotations

import os
import warnings
from typing import Any

os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.setdefault("PYOPENGL_PLATFORM", "egl")

import numpy as np  # noqa: E402

from world2act import World2ActError  # noqa: E402
from world2act.envs.base import ManipulationEnv  # noqa: E402
from world2act.envs.metaworld_instructions import INSTRUCTIONS  # noqa: E402
from world2act.envs.registry import FLIP_BOTH, METAWORLD_SPEC  # noqa: E402

ALL_CAMERAS = METAWORLD_SPEC.camera_names
_UPSIDE_DOWN = frozenset(c.name for c in METAWORLD_SPEC.cameras if c.flip == FLIP_BOTH)
ROBOT_ROOT_BODY = "right_arm_base_link"
"""Root of the Sawyer arm's body subtree (robot pixels in :meth:`MetaWorldEnv.render_segmentation`)."""
ROBOT_EXCLUDED_BODIES = ("head",)
"""Subtrees under the arm root that are not arm or gripper (the Sawyer's head with its screen)."""


class MetaWorldEnv(ManipulationEnv):
    """One Meta-World v3 task (Sawyer arm, 80 Hz control).

    Args:
        task_name: a v3 env name, e.g. ``"pick-place-v3"`` (see ``INSTRUCTIONS``).
        camera_size: default ``(H, W)`` of :meth:`observe`.
        cameras: default cameras for :meth:`observe` (any of ``ALL_CAMERAS``).
        fast_render: no shadows, reflections or multisampling (default True; see module doc).

    Action ``[4]``: xyz hand displacement (×1 cm per unit, clipped to [-1, 1]) and gripper effort
    (+1 close, -1 open). State ``[4]``: hand position (m, 3) and normalised finger gap (1 open).

    Raises:
        World2ActError: unknown task or camera (before the simulator starts).
    """

    benchmark = METAWORLD_SPEC.name
    action_dim = METAWORLD_SPEC.action_dim
    state_dim = METAWORLD_SPEC.state_dim
    max_steps = METAWORLD_SPEC.step_budget
    settle_steps = METAWORLD_SPEC.settle_steps
    control_hz = METAWORLD_SPEC.fps
    num_init_states = METAWORLD_SPEC.num_init_states

    def __init__(self, task_name: str, *, camera_size: tuple[int, int] = (64, 64),
                 cameras: tuple[str, ...] | list[str] = METAWORLD_SPEC.default_cameras, fast_render: bool = True) -> None:
        if task_name not in INSTRUCTIONS:
            raise World2ActError(f"unknown Meta-World task {task_name!r}; valid: {', '.join(sorted(INSTRUCTIONS))}")
        self._check_cams(cameras)
        self.task_name = task_name
        self.task_id = task_name
        self.instruction = INSTRUCTIONS[task_name]
        self.cameras = tuple(cameras)
        self.camera_size = (int(camera_size[0]), int(camera_size[1]))
        import mujoco
        from metaworld.env_dict import ALL_V3_ENVIRONMENTS

        self._mj = mujoco
        env = ALL_V3_ENVIRONMENTS[task_name]()
        env._partially_observable = False  # goal position in obs[-3:] (the experts need it)
        if "sawyer_observation_space" in env.__dict__:
            del env.sawyer_observation_space  # cached with a zero goal box: recompute
        env._set_task_called = True
        env._freeze_rand_vec = False
        env.seeded_rand_vec = True  # layouts come from env.np_random (seeded in reset)
        env.max_path_length = 10**9  # budgets are enforced by callers (max_steps); never raise
        env.model.light_castshadow[:] = 0
        if fast_render:
            env.model.mat_reflectance[:] = 0
            env.model.vis.quality.offsamples = 0
        self._env = env
        self._renderers: dict[tuple[int, int], Any] = {}
        self._robot_geoms: np.ndarray | None = None
        self._obs: np.ndarray | None = None
        self._success = False
        self._has_reset = False

    # ----------------------------------------------------------------- helpers
    @staticmethod
    def _check_cams(cameras) -> None:
        bad = [c for c in cameras if c not in ALL_CAMERAS]
        if bad:
            raise ValueError(f"unknown Meta-World camera {bad[0]!r}; valid: {', '.join(ALL_CAMERAS)}")

    def _renderer(self, H: int, W: int):
        """The cached ``mujoco.Renderer`` for ``H x W`` (created on first use)."""
        r = self._renderers.get((H, W))
        if r is None:
            try:
                r = self._mj.Renderer(self._env.model, H, W)
            except Exception as e:  # noqa: BLE001 - wrong GL backend gives an obscure FatalError
                raise RuntimeError(f"could not create a MuJoCo renderer ({e}); set MUJOCO_GL=egl (or osmesa) "
                                   f"before anything imports mujoco (now {os.environ.get('MUJOCO_GL')!r})") from e
            self._renderers[(H, W)] = r
        return r

    def _need_reset(self) -> None:
        if not self._has_reset:
            raise RuntimeError(f"{self.task_name}: call reset(seed=...) first")

    def _eval_success(self, action: np.ndarray) -> bool:
        env = self._env
        prev = env._prev_obs.copy()
        obs = env._get_obs()
        env._prev_obs = prev
        obs = np.clip(obs, env.sawyer_observation_space.low, env.sawyer_observation_space.high)
        self._obs = obs
        _, info = env.evaluate_state(obs, action)
        return bool(info["success"])

    # ----------------------------------------------------------------- interface
    def reset(self, *, seed: int | None = None, init_state_index: int | None = None) -> None:
        """Reset to the random layout drawn from ``seed``.

        Raises:
            ValueError: ``init_state_index`` given (Meta-World has no official init states) or
                no seed.
        """
        if init_state_index is not None:
            raise ValueError("Meta-World has no official init states: use reset(seed=...)")
        if seed is None:
            raise ValueError("Meta-World reset needs a seed")
        env = self._env
        env.seed(int(seed))
        env._freeze_rand_vec = False
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            obs, _ = env.reset()
        self._obs = np.asarray(obs, dtype=np.float64)
        self._success = False
        self._has_reset = True

    def step(self, action: np.ndarray) -> None:
        """Apply one action ``[4]`` (clipped to [-1, 1]) for one control step (5 physics steps)."""
        self._need_reset()
        a = np.clip(np.asarray(action, dtype=np.float64).reshape(-1), -1.0, 1.0)
        if a.shape != (4,):
            raise ValueError(f"Meta-World action must have 4 values, got {a.shape}")
        if not np.all(np.isfinite(a)):
            raise ValueError("Meta-World action contains NaN or inf")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            obs, _, _, _, info = self._env.step(a.astype(np.float32))
        self._obs = np.asarray(obs, dtype=np.float64)
        self._success = bool(info["success"])

    def proprio(self) -> np.ndarray:
        """``[4]`` float32: hand position (m, 3), normalised finger gap."""
        self._need_reset()
        return self._obs[:4].astype(np.float32)

    def gripper_width(self) -> float:
        """Normalised finger gap (1.0 open, ≈0.26 closed on nothing, ≈0.4 on the puck)."""
        self._need_reset()
        return float(self._obs[3])

    def render(self, cameras=None, size: tuple[int, int] | None = None) -> dict[str, np.ndarray]:
        """Render ``cameras`` (default: the env's cameras) at ``size=(H, W)``; upright uint8 ``[H, W, 3]``.

        Raises:
            ValueError: unknown camera name (lists the valid ones).
        """
        self._need_reset()
        cameras = self.cameras if cameras is None else tuple(cameras)
        self._check_cams(cameras)
        H, W = self.camera_size if size is None else (int(size[0]), int(size[1]))
        r = self._renderer(H, W)
        out = {}
        for cam in cameras:
            r.update_scene(self._env.data, camera=cam)
            img = r.render()
            out[cam] = np.ascontiguousarray(img[::-1, ::-1]) if cam in _UPSIDE_DOWN else img.copy()
        return out

    def robot_geoms(self) -> np.ndarray:
        """Bool ``[ngeom]``: geoms of the Sawyer arm and gripper.

        The robot is the body subtree rooted at :data:`ROBOT_ROOT_BODY` (``right_l0`` … ``right_l6``,
        ``right_hand``, ``hand``, the claws and pads) minus the subtrees of
        :data:`ROBOT_EXCLUDED_BODIES` (the head and its screen). The pedestal, controller box
        and torso do not move and are not counted.
        """
        if self._robot_geoms is None:
            mj, m = self._mj, self._env.model
            names = [mj.mj_id2name(m, mj.mjtObj.mjOBJ_BODY, b) or "" for b in range(m.nbody)]
            root = names.index(ROBOT_ROOT_BODY)
            excluded = {names.index(n) for n in ROBOT_EXCLUDED_BODIES if n in names}
            robot = np.zeros(m.nbody, dtype=bool)
            for b in range(m.nbody):  # a body's parent has a smaller id in MuJoCo
                p = b
                while p not in (0, root) and p not in excluded:
                    p = int(m.body_parentid[p])
                robot[b] = p == root
            self._robot_geoms = robot[np.asarray(m.geom_bodyid)]
        return self._robot_geoms

    def render_segmentation(self, cameras=None, size: tuple[int, int] | None = None) -> dict[str, np.ndarray]:
        """Robot pixels of ``cameras`` (default: the env's cameras) at ``size=(H, W)``.

        MuJoCo's segmentation pass (``mujoco.Renderer.enable_segmentation_rendering``: per pixel
        the (object id, object type) of the geom drawn there) on the current state, oriented like
        :meth:`render` (corner cameras rotated by 180°), so ``mask[y, x]`` tells whether pixel
        ``(y, x)`` of ``render(cameras, size)[camera]`` shows the arm or the gripper
        (:meth:`robot_geoms`). Restore a stored state with :meth:`set_sim_state` first to get
        the masks of a recorded frame.

        Returns:
            camera -> bool ``[H, W]`` (True = robot pixel).

        Raises:
            ValueError: unknown camera name (lists the valid ones).
        """
        self._need_reset()
        cameras = self.cameras if cameras is None else tuple(cameras)
        self._check_cams(cameras)
        H, W = self.camera_size if size is None else (int(size[0]), int(size[1]))
        robot = self.robot_geoms()
        r = self._renderer(H, W)
        geom = int(self._mj.mjtObj.mjOBJ_GEOM)
        out = {}
        r.enable_segmentation_rendering()
        try:
            for cam in cameras:
                r.update_scene(self._env.data, camera=cam)
                seg = r.render()  # [H, W, 2] (object id, object type); -1 for background
                ids, types = seg[..., 0], seg[..., 1]
                mask = (types == geom) & robot[np.clip(ids, 0, robot.size - 1)]
                out[cam] = np.ascontiguousarray(mask[::-1, ::-1]) if cam in _UPSIDE_DOWN else mask
        finally:
            r.disable_segmentation_rendering()
        return out

    def is_success(self) -> bool:
        """Meta-World's ``info["success"]`` of the last step (or of the restored state)."""
        return self._success

    def get_sim_state(self) -> np.ndarray:
        """``[1 + n + M]`` float64: n, the layout vector (n values), MuJoCo full physics state."""
        self._need_reset()
        mj = self._mj
        env = self._env
        rv = np.asarray(env._last_rand_vec, dtype=np.float64).reshape(-1)
        spec = mj.mjtState.mjSTATE_FULLPHYSICS
        phys = np.empty(mj.mj_stateSize(env.model, spec), dtype=np.float64)
        mj.mj_getState(env.model, env.data, phys, spec)
        return np.concatenate([[float(rv.size)], rv, phys])

    def set_sim_state(self, state: np.ndarray) -> None:
        """Restore a :meth:`get_sim_state` vector (re-lays out the scene if its layout differs).

        Raises:
            ValueError: the vector does not fit this task.
        """
        mj = self._mj
        env = self._env
        state = np.array(state, dtype=np.float64).reshape(-1)  # a writeable copy: mj_setState refuses read-only
        spec = mj.mjtState.mjSTATE_FULLPHYSICS                   # arrays (e.g. read from a dataset's parquet)
        n = int(state[0]) if state.size else -1
        nphys = mj.mj_stateSize(env.model, spec)
        if n < 0 or state.size != 1 + n + nphys:
            raise ValueError(f"{self.task_name}: sim state has {state.size} values, expected 1 + n + {nphys}")
        rv = state[1:1 + n]
        cur = None if env._last_rand_vec is None else np.asarray(env._last_rand_vec).reshape(-1)
        if not self._has_reset or cur is None or cur.shape != rv.shape or not np.array_equal(cur, rv):
            env._last_rand_vec = rv.copy()
            env._freeze_rand_vec = True
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                env.reset()
            env._freeze_rand_vec = False
            self._has_reset = True
        mj.mj_setState(env.model, env.data, state[1 + n:], spec)
        mj.mj_forward(env.model, env.data)
        self._success = self._eval_success(np.zeros(4))

    def snapshot(self) -> dict[str, Any]:
        """Physics with controls and mocap targets (``mjSTATE_INTEGRATION``: the hand follows its
        mocap target, which :meth:`get_sim_state`'s ``mjSTATE_FULLPHYSICS`` leaves out) plus the
        Python-side state Meta-World steps from: previous-frame observation, step counter, last
        stable observation, and this wrapper's observation and success flag."""
        self._need_reset()
        mj, env = self._mj, self._env
        spec = mj.mjtState.mjSTATE_INTEGRATION
        phys = np.empty(mj.mj_stateSize(env.model, spec), dtype=np.float64)
        mj.mj_getState(env.model, env.data, phys, spec)
        copy = lambda x: None if x is None else np.array(x, copy=True)  # noqa: E731
        return {"phys": phys, "layout": copy(env._last_rand_vec), "prev_obs": copy(getattr(env, "_prev_obs", None)),
                "last_stable_obs": copy(getattr(env, "_last_stable_obs", None)),
                "curr_path_length": int(env.curr_path_length), "sim_exception": bool(getattr(env, "_did_see_sim_exception", False)),
                "obs": self._obs.copy(), "success": bool(self._success)}

    def restore(self, snap: dict[str, Any]) -> None:
        """Return to a :meth:`snapshot` taken in the same episode (same layout)."""
        mj, env = self._mj, self._env
        if snap["layout"] is not None and not np.array_equal(np.asarray(env._last_rand_vec), snap["layout"]):
            raise ValueError(f"{self.task_name}: snapshot from another layout; restore only within its episode")
        mj.mj_setState(env.model, env.data, np.array(snap["phys"], copy=True), mj.mjtState.mjSTATE_INTEGRATION)
        mj.mj_forward(env.model, env.data)
        env._prev_obs = None if snap["prev_obs"] is None else snap["prev_obs"].copy()
        env._last_stable_obs = None if snap["last_stable_obs"] is None else snap["last_stable_obs"].copy()
        env.curr_path_length = snap["curr_path_length"]
        env._did_see_sim_exception = snap["sim_exception"]
        self._obs = snap["obs"].copy()
        self._success = snap["success"]

    def privileged(self) -> dict[str, Any]:
        """``obs``: Meta-World's 39-D observation (hand 3, gap 1, objects 14, previous 18, goal 3);
        ``goal``: goal position ``[3]``; ``layout``: the seeded layout vector."""
        self._need_reset()
        return {"obs": self._obs.copy(), "goal": self._obs[-3:].copy(),
                "layout": np.asarray(self._env._last_rand_vec).copy()}

    def close(self) -> None:
        for r in self._renderers.values():
            try:
                r.close()
            except Exception:  # noqa: BLE001 - best effort at teardown
                pass
        self._renderers.clear()
        env, self._env = getattr(self, "_env", None), None
        if env is not None:
            try:
                env.close()
            except Exception:  # noqa: BLE001
                pass

    def __del__(self) -> None:  # renderers hold GL contexts
        try:
            self.close()
        except Exception:  # noqa: BLE001
            pass
