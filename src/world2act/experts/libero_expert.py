"""Scripted privileged-state experts for LIBERO pick-and-place tasks.

:class:`LiberoExpert` reads the task's BDDL goal (``("in"|"on", object, target)`` predicates)
and chains one pick-and-place per goal object. Each pick-and-place is a small state machine
driven by a P-controller on the OSC_POSE delta action (xyz ×0.05 m, rotation ×0.5 rad):

``APPROACH`` (open gripper, move above the grasp point at ``hover`` height, turn the wrist to
the grasp yaw) → ``DESCEND`` (to grasp height) → ``GRASP`` (close, hold) → ``LIFT`` (straight up
to carry height) → ``TRANSPORT`` (so that the object is above the target) → ``LOWER`` (until the
object's bottom is ``release_height`` above the target surface, or contact stalls the hand) →
``RELEASE`` (open, hold) → ``RETREAT`` (straight up) → next pick-and-place, or ``DONE`` (hold).

The gripper closes exactly once per successful pick and opens at every place, so gripper-closure
events segment demonstrations into skills (paper Sec. 3.2, App. E). A failed grasp (the object
did not rise with the hand) opens, backs off and re-plans (at most ``max_retries`` times), which
adds one extra closure event.

Grasp choice (see :meth:`LiberoExpert._plan_grasp`): objects narrower than the open gripper
(``pinch_max_width``) are pinched at the centre of their collision box with the finger axis
along a narrow direction that keeps the fingers clear of neighbouring objects; wider objects
(bowls) are grasped at the rim, fingers closing radially, on the side with most clearance.
"""
from __future__ import annotations

import dataclasses
import enum
from typing import Any

import numpy as np

from world2act import World2ActError
from world2act.experts.libero_geometry import Box, collision_geoms, geoms_box, wrap_half_pi

# Fixtures that are support surfaces, never obstacles for the fingers.
_SUPPORT_FIXTURES = ("table", "floor", "main_table", "kitchen_table", "living_room_table", "study_table")


class Phase(enum.Enum):
    """States of one pick-and-place."""

    APPROACH = "approach"
    DESCEND = "descend"
    GRASP = "grasp"
    LIFT = "lift"
    TRANSPORT = "transport"
    LOWER = "lower"
    RELEASE = "release"
    RETREAT = "retreat"
    DONE = "done"


@dataclasses.dataclass
class ExpertGains:
    """Gains, tolerances and heights of the LIBERO expert (metres, radians, control steps).

    Attributes:
        pos_gain: position action = ``pos_gain · error / 0.05 m`` (1.0 asks OSC to close the
            whole error in one step), clipped to the phase's speed limit.
        rot_gain: rotation action = ``rot_gain · rotation-vector error / 0.5 rad``.
        fast_speed / slow_speed: action magnitude limits in free space / near objects
            (1.0 = 5 cm per step = 1 m/s at 20 Hz).
        hover: height of the pre-grasp pose above the object's top (m).
        grasp_depth: how far below the object's top the fingertips (grip site) go (m), at most
            half the object's height.
        min_finger_clearance: lowest the grip site may go above the object's bottom (m).
        rim_inset: for rim grasps, grip point distance inside the rim (m).
        carry_clearance: object bottom above the target's top while transporting (m).
        release_height: open when the object's bottom is this far above the target surface (m).
        xy_tol / z_tol / yaw_tol: phase-completion tolerances (m, m, rad).
        close_steps / open_steps: steps to hold a closing / opening gripper command.
        phase_timeout: steps after which a phase moves on regardless.
        pinch_max_width: widest object extent (m) grasped with a central pinch (the Panda
            gripper opens to 0.08 m).
        max_retries: re-grasps allowed per object after a failed lift.
        rim_depth: for rim grasps, grip-site depth below the rim (m).
        neighbour_radius / neighbour_clearance: the pre-grasp pose is at least
            ``neighbour_clearance`` above every object or fixture part within
            ``neighbour_radius`` (xy) of the grasp point (m).
        min_lift: the hand always rises at least this much above its grasp height (m).
    """

    pos_gain: float = 1.0
    rot_gain: float = 1.0
    fast_speed: float = 0.8
    slow_speed: float = 0.4
    hover: float = 0.08
    grasp_depth: float = 0.03
    min_finger_clearance: float = 0.012
    rim_inset: float = 0.012
    carry_clearance: float = 0.06
    release_height: float = 0.02
    xy_tol: float = 0.008
    z_tol: float = 0.008
    yaw_tol: float = 0.08
    close_steps: int = 10
    open_steps: int = 8
    phase_timeout: int = 70
    pinch_max_width: float = 0.068
    max_retries: int = 2
    min_lift: float = 0.06
    rim_depth: float = 0.02
    neighbour_radius: float = 0.12
    neighbour_clearance: float = 0.04


@dataclasses.dataclass
class PickPlace:
    """One goal predicate to achieve: put ``obj`` ``relation`` (``"in"``/``"on"``) ``target``."""

    obj: str
    target: str
    relation: str


@dataclasses.dataclass
class GraspPlan:
    """Where and how to grasp: grip-site offset from the object's body position (world xy, m),
    grip height (world z, m), finger-axis yaw (rad) and kind (``"pinch"`` or ``"rim"``)."""

    offset_xy: np.ndarray
    z: float
    yaw: float
    kind: str
    clear_z: float = -np.inf  # lowest safe grip-site height over the grasp point's neighbours


def parse_goal(env: Any) -> list[PickPlace]:
    """The pick-and-place steps of a LIBERO task's BDDL goal, in goal order.

    Raises:
        World2ActError: the goal holds a predicate the expert cannot achieve (``open``,
            ``close``, ``turnon``…) or moves a fixture.
    """
    inner = env.env.env
    steps = []
    for pred in inner.parsed_problem["goal_state"]:
        rel = pred[0].lower()
        if rel in ("in", "on") and len(pred) == 3 and pred[1] in inner.objects_dict:
            steps.append(PickPlace(pred[1], pred[2], rel))
        else:
            raise World2ActError(
                f"LiberoExpert: task {env.benchmark}/{env.task_id} ({env.instruction!r}) needs "
                f"{' '.join(pred)!r}; the scripted expert only does pick-and-place (in/on object); "
                f"supported tasks: {supported_libero_tasks()}"
            )
    return steps


class LiberoExpert:
    """Scripted privileged-state expert for LIBERO pick-and-place tasks.

    Args:
        env: the :class:`~world2act.envs.libero.LiberoEnv` to act in.
        seed: seeds a small per-episode jitter of hover/carry heights (±1 cm) and speed
            (±10 %) so that demonstrations are not all identical.
        gains: :class:`ExpertGains` (defaults documented there).

    Raises:
        World2ActError: a task whose goal is not pick-and-place (see :func:`parse_goal`).

    Usage::

        env.reset(seed=s); expert.reset()
        for _ in range(env.max_steps):
            env.step(expert.act())
            if env.is_success(): break
    """

    def __init__(self, env: Any, seed: int = 0, gains: ExpertGains | None = None) -> None:
        self.env = env
        self.gains = gains or ExpertGains()
        self.plan = parse_goal(env)
        self._base_xy = np.array(self.sim.data.get_body_xpos("robot0_base"))[:2]
        self._rng = np.random.default_rng(seed)
        self._robot = env.env.robots[0]
        inner = env.env.env
        self._obj_geoms = {n: collision_geoms(self.sim, [o.root_body]) for n, o in inner.objects_dict.items()}
        self._fixture_geoms = {
            n: collision_geoms(self.sim, [f.root_body])
            for n, f in inner.fixtures_dict.items()
            if n not in _SUPPORT_FIXTURES and f.root_body in self.sim.model.body_names
        }
        self.reset()

    # ------------------------------------------------------------------ episode state
    def reset(self) -> None:
        """Start a new episode (call after ``env.reset``)."""
        self.index = 0  # which PickPlace of self.plan
        self.retries = 0
        self.phase = Phase.APPROACH
        self.phase_steps = 0
        self.grasp: GraspPlan | None = None
        self.closures = 0
        self._jitter = 1.0 + 0.1 * (self._rng.random() * 2 - 1), 0.01 * (self._rng.random() * 2 - 1)
        self._lift_start: tuple[float, float] | None = None
        self._hold_offset: np.ndarray | None = None
        self._last_z: list[float] = []
        self._retreat_z = 0.0
        self._retrying = False

    @property
    def done(self) -> bool:
        """Whether every pick-and-place of the plan has been executed."""
        return self.phase is Phase.DONE

    # ------------------------------------------------------------------ state reading
    @property
    def sim(self) -> Any:
        """The env's current ``MjSim`` (a hard reset replaces it)."""
        return self.env.sim

    def _eef(self) -> tuple[np.ndarray, np.ndarray]:
        d = self.sim.data
        sid = self._robot.eef_site_id
        return np.array(d.site_xpos[sid]), np.array(d.site_xmat[sid]).reshape(3, 3)

    def _gripper_width(self) -> float:
        return self.env.gripper_width()

    def _obj_pos(self, name: str) -> np.ndarray:
        return np.array(self.sim.data.body_xpos[self.sim.model.body_name2id(self.env.env.env.objects_dict[name].root_body)])

    def _box(self, name: str) -> Box:
        return geoms_box(self.sim, self._obj_geoms[name])

    def _obstacles(self, exclude: str) -> list[Box]:
        boxes = [self._box(n) for n in self._obj_geoms if n != exclude]
        # fixtures (cabinets, stoves, racks) are large: one box per collision geom
        boxes += [geoms_box(self.sim, [g]) for geoms in self._fixture_geoms.values() for g in geoms]
        return boxes

    def _target(self, step: PickPlace) -> tuple[np.ndarray, float, float]:
        """Target xy (m), support-surface z (m) and top z (m, what the carried object must clear)."""
        inner = self.env.env.env
        if step.target in inner.objects_dict:
            box = self._box(step.target)
            pos = self._obj_pos(step.target)
            return pos[:2], float(box.hi[2]), float(box.hi[2])
        if step.target in inner.object_sites_dict:
            site = np.array(self.sim.data.get_site_xpos(step.target))
            parent = inner.object_sites_dict[step.target].parent_name
            top = site[2]
            if parent in self._obj_geoms:
                top = max(top, float(self._box(parent).hi[2]))
            elif parent in self._fixture_geoms:
                top = max(top, float(geoms_box(self.sim, self._fixture_geoms[parent]).hi[2]))
            return site[:2], float(site[2]), float(top)
        raise World2ActError(f"LiberoExpert: unknown target {step.target!r} in {self.env.task_name}")

    # ------------------------------------------------------------------ grasp planning
    def _plan_grasp(self, name: str) -> GraspPlan:
        """Choose grasp point, height and finger yaw for object ``name`` (see module doc)."""
        g = self.gains
        box = self._box(name)
        pos = self._obj_pos(name)
        lo, hi, center = box.lo, box.hi, box.center
        height = hi[2] - lo[2]
        obstacles = [b for b in self._obstacles(name) if b.hi[2] > lo[2] + 0.01]
        eef_pos, eef_mat = self._eef()
        cur_yaw = float(np.arctan2(eef_mat[1, 0], eef_mat[0, 0]))

        # the hand must come in above neighbours within reach of its span (a hover height
        # relative to a flat object alone knocks over the tall carton next to it)
        near_tops = [b.hi[2] for b in obstacles if b.xy_distance(center) < g.neighbour_radius]
        clear_z = max(near_tops, default=-np.inf) + g.neighbour_clearance

        def clearance(points: list[np.ndarray]) -> float:
            if not obstacles:
                return 0.1
            return min(b.xy_distance(p) for b in obstacles for p in points)

        angles = np.arange(12) * np.pi / 12
        widths = np.array([box.width_along(a) for a in angles])
        if widths.min() <= g.pinch_max_width:
            best, best_score = 0.0, -np.inf
            for a, w in zip(angles, widths):
                if w > max(g.pinch_max_width, widths.min() + 0.01):
                    continue
                d = np.array([np.cos(a), np.sin(a)])
                fingers = [center[:2] + s * (w / 2 + 0.015) * d for s in (-1, 1)]
                score = min(clearance(fingers), 0.04) - 0.01 * abs(wrap_half_pi(a - cur_yaw)) - 0.2 * w
                if score > best_score:
                    best, best_score = a, score
            depth = min(g.grasp_depth, 0.5 * height)
            z = max(hi[2] - depth, lo[2] + g.min_finger_clearance)
            return GraspPlan(center[:2] - pos[:2], float(z), float(best), "pinch", float(clear_z))
        # Rim grasp: the fingers straddle the wall on the side with most clearance.
        radius = 0.5 * float(widths.mean())
        best_dir, best_score = 0.0, -np.inf
        for a in np.arange(16) * 2 * np.pi / 16:
            d = np.array([np.cos(a), np.sin(a)])
            rim = center[:2] + (radius - g.rim_inset) * d
            outer = center[:2] + (radius + 0.025) * d
            to_base = self._base_xy - center[:2]
            toward_robot = float(d @ to_base / (np.linalg.norm(to_base) + 1e-9))  # prefer the near rim
            score = min(clearance([rim, outer]), 0.05) + 0.01 * toward_robot
            if score > best_score:
                best_dir, best_score = a, score
        d = np.array([np.cos(best_dir), np.sin(best_dir)])
        grip_xy = center[:2] + (radius - g.rim_inset) * d
        z = max(hi[2] - g.rim_depth, lo[2] + g.min_finger_clearance)
        return GraspPlan(grip_xy - pos[:2], float(z), float(wrap_half_pi(best_dir)), "rim", float(clear_z))

    # ------------------------------------------------------------------ control
    def _move(self, target: np.ndarray, speed: float, yaw: float | None, grip: float) -> np.ndarray:
        """P-control action ``[7]`` toward eef position ``target`` (m) and finger yaw ``yaw`` (rad)."""
        g = self.gains
        pos, mat = self._eef()
        a = np.zeros(7)
        a[:3] = np.clip(g.pos_gain * (target - pos) / 0.05, -speed, speed)
        # keep the hand pointing down: rotation vector taking the current z axis to -z
        rot = np.cross(mat[:, 2], np.array([0.0, 0.0, -1.0]))
        if yaw is not None:
            rot[2] += wrap_half_pi(yaw - float(np.arctan2(mat[1, 0], mat[0, 0])))
        a[3:6] = np.clip(g.rot_gain * rot / 0.5, -1.0, 1.0)
        a[6] = grip
        return a

    def _yaw_error(self, yaw: float) -> float:
        _, mat = self._eef()
        return abs(wrap_half_pi(yaw - float(np.arctan2(mat[1, 0], mat[0, 0]))))

    def _goto(self, phase: Phase) -> None:
        self.phase = phase
        self.phase_steps = 0
        self._last_z = []

    def _stalled(self, z: float, n: int = 5, eps: float = 0.001) -> bool:
        self._last_z.append(z)
        return len(self._last_z) > n and abs(self._last_z[-1] - self._last_z[-1 - n]) < eps

    def act(self) -> np.ndarray:
        """The expert's action ``[7]`` in [-1, 1] for the env's current state."""
        g = self.gains
        speed_scale, dz = self._jitter
        fast, slow = g.fast_speed * speed_scale, g.slow_speed * speed_scale
        self.phase_steps += 1
        timed_out = self.phase_steps > g.phase_timeout
        eef, _ = self._eef()
        if self.phase is Phase.DONE:
            return self._move(eef, slow, None, -1.0)
        step = self.plan[self.index]
        obj = self._obj_pos(step.obj)
        for phases in (self._act_pick, self._act_carry, self._act_release):
            a = phases(step, obj, eef, fast, slow, dz, timed_out)
            if a is not None:
                return a
        raise AssertionError(self.phase)

    def _act_pick(self, step: PickPlace, obj, eef, fast: float, slow: float, dz: float,
                  timed_out: bool) -> np.ndarray | None:
        """APPROACH (plan the grasp, hover above it at the finger yaw), DESCEND (to the grasp
        height) and GRASP (close the fingers); None in any other phase."""
        g = self.gains
        if self.phase is Phase.APPROACH:
            if self.grasp is None or self.phase_steps == 1:
                self.grasp = self._plan_grasp(step.obj)
            top = self._box(step.obj).hi[2]
            hover_z = max(max(top, self.grasp.z) + g.hover, self.grasp.clear_z) + dz
            goal = np.array([*(obj[:2] + self.grasp.offset_xy), hover_z])
            if (np.linalg.norm(goal - eef) < 2 * g.xy_tol and self._yaw_error(self.grasp.yaw) < g.yaw_tol) or timed_out:
                self._goto(Phase.DESCEND)
            return self._move(goal, fast, self.grasp.yaw, -1.0)

        if self.phase is Phase.DESCEND:
            goal = np.array([*(obj[:2] + self.grasp.offset_xy), self.grasp.z])
            if abs(goal[2] - eef[2]) < g.z_tol or self._stalled(eef[2]) or timed_out:
                self._goto(Phase.GRASP)
                self.closures += 1
            return self._move(goal, slow, self.grasp.yaw, -1.0)

        if self.phase is Phase.GRASP:
            goal = np.array([*(obj[:2] + self.grasp.offset_xy), self.grasp.z])
            if self.phase_steps >= g.close_steps:
                self._lift_start = (float(eef[2]), float(obj[2]))
                self._goto(Phase.LIFT)
            return self._move(eef if self.phase_steps > 2 else goal, slow, self.grasp.yaw, 1.0)
        return None

    def _act_carry(self, step: PickPlace, obj, eef, fast: float, slow: float, dz: float,
                   timed_out: bool) -> np.ndarray | None:
        """LIFT (to the carry height; a grasp that does not follow fails), TRANSPORT (over the
        target; a dropped object fails) and LOWER (to just above the target's surface); None in
        any other phase."""
        g = self.gains
        if self.phase is Phase.LIFT:
            _, _, target_top = self._target(step)
            carry = self._carry_z(step, target_top) + dz
            eef_rise = eef[2] - self._lift_start[0]
            obj_rise = obj[2] - self._lift_start[1]
            if eef_rise > 0.05 and obj_rise < 0.5 * eef_rise:
                return self._fail_grasp()
            if abs(carry - eef[2]) < 2 * g.z_tol or timed_out:
                self._goto(Phase.TRANSPORT)
            return self._move(np.array([eef[0], eef[1], carry]), fast, None, 1.0)

        if self.phase is Phase.TRANSPORT:
            target_xy, _, target_top = self._target(step)
            carry = self._carry_z(step, target_top) + dz
            if np.linalg.norm(eef - obj) > 0.15:  # dropped on the way
                return self._fail_grasp()
            goal = np.array([*(target_xy + (eef[:2] - obj[:2])), carry])
            if np.linalg.norm(goal[:2] - eef[:2]) < g.xy_tol or timed_out:
                self._goto(Phase.LOWER)
            return self._move(goal, fast, None, 1.0)

        if self.phase is Phase.LOWER:
            target_xy, surface, _ = self._target(step)
            bottom = self._box(step.obj).lo[2]
            goal_z = eef[2] - (bottom - (surface + g.release_height))
            goal = np.array([*(target_xy + (eef[:2] - obj[:2])), goal_z])
            if bottom < surface + g.release_height + 0.005 or self._stalled(eef[2]) or timed_out:
                self._goto(Phase.RELEASE)
            return self._move(goal, slow, None, 1.0)
        return None

    def _act_release(self, step: PickPlace, obj, eef, fast: float, slow: float, dz: float,
                     timed_out: bool) -> np.ndarray | None:
        """RELEASE (open the fingers) and RETREAT (back up, then the same object again after a
        failed grasp, else the next step of the plan); None in any other phase."""
        g = self.gains
        if self.phase is Phase.RELEASE:
            if self.phase_steps >= g.open_steps:
                self._retreat_z = eef[2] + g.hover
                self._goto(Phase.RETREAT)
            return self._move(eef, slow, None, -1.0)

        if self.phase is Phase.RETREAT:
            goal = np.array([eef[0], eef[1], self._retreat_z])
            if abs(goal[2] - eef[2]) < 2 * g.z_tol or timed_out:
                self.grasp = None
                if self._retrying:  # back to the same object after a failed grasp
                    self._retrying = False
                    self._goto(Phase.APPROACH)
                else:
                    self.index += 1
                    self.retries = 0
                    self._goto(Phase.DONE if self.index >= len(self.plan) else Phase.APPROACH)
            return self._move(goal, fast, None, -1.0)
        return None

    def _carry_z(self, step: PickPlace, target_top: float) -> float:
        """Grip-site height (m) that keeps the carried object's bottom ``carry_clearance`` above
        the target's top."""
        eef, _ = self._eef()
        below = eef[2] - self._box(step.obj).lo[2]  # grip site to object bottom
        carry = target_top + self.gains.carry_clearance + below
        if self._lift_start is not None:  # always lift clear of where the object was
            carry = max(carry, self._lift_start[0] + self.gains.min_lift)
        return float(carry)

    def _fail_grasp(self) -> np.ndarray:
        """Open, back off upward and re-plan the grasp (or give up after ``max_retries``)."""
        eef, _ = self._eef()
        self.retries += 1
        self.grasp = None
        if self.retries > self.gains.max_retries:
            self._goto(Phase.DONE)
        else:
            self._retrying = True
            self._goto(Phase.RELEASE)
        return self._move(eef, self.gains.slow_speed, None, -1.0)


def supported_libero_tasks() -> dict[str, list[int]]:
    """Suite -> task ids the expert supports: ≥ 50 % success over random resets, measured with
    ``benchmarks/bench_libero_experts.py`` (episodes per task: libero_object 10, libero_spatial
    5, libero_10 5, libero_goal 10; tables in docs/experts.md)."""
    return {suite: list(ids) for suite, ids in _SUPPORTED.items()}


# From the measured tables in docs/experts.md (success rate ≥ 50 %).
_SUPPORTED: dict[str, tuple[int, ...]] = {
    "libero_object": tuple(range(10)),  # 99/100
    "libero_spatial": (0, 1, 2, 3, 5, 6, 7, 8, 9),  # 45/45; task 4 (bowl in the drawer) 2/5
    "libero_10": (0, 1, 4, 5, 6),  # 5/5 each, task 1 4/5; task 7 (soup + cream cheese box) 1/5
    "libero_goal": (1, 2, 4, 6, 8, 9),  # 10/10 each
}
