"""Visual stream of the skill decomposition: gripper-closure signal and contact events.

Paper Sec. 3.1: with ``w_t`` the gripper width at frame ``t`` and ``w_open`` the calibrated
fully-open width, the closure signal is ``c_t = 1 - w_t / w_open`` (0 = fully open, larger =
more closed) and frame ``t`` is a *contact* frame when ``c_t > tau``.

This module turns one episode's ``[T]`` gripper width into a list of :class:`ContactEvent`
(closure onsets and releases) after debouncing. How those events become skill boundaries is
decided by :mod:`world2act.skills.sync` (schema aligner) or :mod:`world2act.skills.llm`.

Calibration of ``w_open`` (per robot, never from frame 0, since LIBERO episodes may start with
the gripper still half-open after the settle steps):

* ``"benchmark"``: the robot's constant (:data:`BENCHMARK_DEFAULTS`): LIBERO Panda 0.080 m,
  Meta-World normalised gap 1.0.
* ``"dataset"`` (the default of ``world2act segment``): the 99.5th percentile of every width in
  the dataset (one robot per dataset), i.e. a robust maximum that ignores single spikes.
* ``"episode"``: the 99.5th percentile of the episode's own widths (for mixed-robot data).
* a number: that width, in the dataset's units.

Debouncing, in this order: (1) non-contact gaps shorter than ``min_gap`` frames between two
contact runs are filled (chattering while holding does not split a grasp); (2) contact runs
shorter than ``min_duration`` frames are removed (brief squeezes are not grasps); (3) a
contact run that starts at frame 0 is not a grasp (the gripper was still opening when recording
began) and is dropped; (4) optionally (``use_gripper_action``) an onset is kept only if the
commanded gripper action was "close" at some frame in the ``action_window`` frames before it,
and a release only if it was "open" in the window before it; a run whose onset is not
corroborated is dropped. The commanded action is a *corroborating* signal only; the width is
the primary signal, as in the paper.

Each kept contact run ``[a, z]`` (inclusive frames) yields an ``"close"`` event at ``a`` and,
if the gripper opens again before the episode ends, an ``"open"`` event at ``z + 1``. Every
event also gets a *settled* frame ``end`` where the gripper has finished moving (closed on
the object / fully open again); skill boundaries are placed at ``end + 1`` (see
:mod:`world2act.skills.sync`).
"""
from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np

from world2act import World2ActError
from world2act.envs.registry import FAMILIES, family_of


@dataclasses.dataclass(frozen=True)
class ContactParams:
    """Thresholds of the closure-event detector (paper Sec. 3.1; appendix E tunes ``tau``).

    Attributes:
        tau: contact threshold on the closure signal ``c_t`` (dimensionless, 0..1).
        w_open: fully-open width in dataset units (m for LIBERO, normalised gap for Meta-World).
        min_duration: minimum contact run length, frames (shorter runs are noise).
        min_gap: minimum non-contact gap between two runs, frames (shorter gaps are filled).
        settle_frac: an event is settled when the signal has covered this fraction of its
            transition (closing: from ``tau`` to the run's median closure; opening: from the
            last contact value to the lowest closure in the following window).
        max_settle: cap, in frames, on how far after the event its settled frame may lie.
        use_gripper_action: corroborate events with the commanded gripper action sign.
        action_window: frames before an event searched for the corroborating command.
        close_sign: sign of the gripper action that means "close" (+1 in LIBERO and Meta-World).
    """

    tau: float
    w_open: float
    min_duration: int = 4
    min_gap: int = 4
    settle_frac: float = 0.9
    max_settle: int = 15
    use_gripper_action: bool = False
    action_window: int = 10
    close_sign: float = 1.0

    def __post_init__(self) -> None:
        if not 0.0 < self.tau < 1.0:
            raise World2ActError(f"contact threshold tau={self.tau} must be in (0, 1)")
        if not self.w_open > 0 or not np.isfinite(self.w_open):
            raise World2ActError(f"w_open={self.w_open} must be a positive width")
        if self.min_duration < 1 or self.min_gap < 0 or self.max_settle < 0 or self.action_window < 1:
            raise World2ActError("min_duration must be >= 1 and min_gap, max_settle >= 0, action_window >= 1")
        if not 0.0 < self.settle_frac <= 1.0:
            raise World2ActError(f"settle_frac={self.settle_frac} must be in (0, 1]")


#: Per-benchmark defaults. LIBERO widths are finger separation in metres: 0.080 open, 0.063 on
#: a can (c = 0.21), 0.005 on a bowl rim (c = 0.94), 0.001 closed on nothing; the open-gripper
#: jitter stays below c = 0.02, so tau = 0.1 catches grasps of the widest objects. Meta-World
#: gives a normalised gap: 1.0 open, 0.4 on the puck (c = 0.6), 0.26 closed on nothing.
BENCHMARK_DEFAULTS: dict[str, dict[str, float]] = {
    fam: {"w_open": spec.gripper_open_width, "tau": spec.gripper_tau} for fam, spec in FAMILIES.items()
}  # from world2act.envs.registry (BenchmarkSpec.gripper_open_width / gripper_tau)


def benchmark_family(benchmark: str) -> str:
    """Map a benchmark name (``libero_object``, ``metaworld``, ...) to its robot family.

    Raises:
        World2ActError: the name is neither a LIBERO suite nor Meta-World.
    """
    fam = family_of(benchmark) or ("metaworld" if (benchmark or "").lower().startswith("mw") else None)
    if fam is not None:
        return fam
    raise World2ActError(f"unknown benchmark {benchmark!r} for contact defaults; valid: libero_*, metaworld "
                         "(or pass --tau and --w-open explicitly)")


def robust_open_width(widths: np.ndarray, q: float = 99.5) -> float:
    """Robust fully-open width: the ``q``-th percentile of ``widths`` (any shape, finite values).

    Raises:
        World2ActError: no finite positive widths.
    """
    w = np.asarray(widths, dtype=np.float64).ravel()
    w = w[np.isfinite(w)]
    if w.size == 0 or float(np.max(w)) <= 0:
        raise World2ActError("cannot calibrate w_open: no finite positive gripper widths")
    return float(np.percentile(w, q))


#: Conventions of a ``--gripper-from`` dimension: which end of its range means "closed".
CONVENTIONS = ("close-high", "open-high")


def signal_range(values: np.ndarray, q: float = 0.5) -> tuple[float, float]:
    """Robust range ``(lo, hi)`` = the ``q``-th and ``(100 - q)``-th percentiles of finite values.

    Raises:
        World2ActError: no finite values.
    """
    x = np.asarray(values, dtype=np.float64).ravel()
    x = x[np.isfinite(x)]
    if x.size == 0:
        raise World2ActError("cannot calibrate the gripper signal: no finite values")
    return float(np.percentile(x, q)), float(np.percentile(x, 100.0 - q))


def width_from_command(values: np.ndarray, lo: float, hi: float, convention: str = "close-high") -> np.ndarray:
    """A width-like signal in [0, 1] (1 = fully open, 0 = fully closed) from a gripper action
    or state dimension (``world2act segment --gripper-from``).

    The values are min-max scaled with the range ``[lo, hi]`` (:func:`signal_range` over the
    dataset, or over one episode) and clipped: ``u = clip((x - lo) / (hi - lo), 0, 1)``; the
    width is ``1 - u`` when high values mean closed (``close-high``: a gripper command in
    [-1, 1] with +1 = close, as LIBERO, Meta-World and LeRobot's LIBERO data) and ``u`` when
    high values mean open (``open-high``: a finger position or gap). With ``w_open = 1`` the
    closure signal ``c = 1 - w`` is then 0 when fully open and 1 when fully closed.

    Raises:
        ValueError: an unknown convention or ``hi <= lo`` (a constant signal).
    """
    if convention not in CONVENTIONS:
        raise ValueError(f"convention must be one of {CONVENTIONS}, got {convention!r}")
    if not hi > lo:
        raise ValueError(f"the gripper signal is constant ({lo:.4g}): nothing to segment")
    u = np.clip((np.asarray(values, dtype=np.float64) - lo) / (hi - lo), 0.0, 1.0)
    return 1.0 - u if convention == "close-high" else u


def closure_signal(width: np.ndarray, w_open: float) -> np.ndarray:
    """Closure signal ``c_t = 1 - w_t / w_open`` (paper Sec. 3.1).

    Args:
        width: ``[T]`` gripper width (dataset units).
        w_open: fully-open width in the same units.

    Returns:
        ``[T]`` float64, 0 when fully open, ~1 when closed on nothing; clipped to [-0.5, 1.5]
        so a miscalibrated ``w_open`` cannot produce extreme values.

    Raises:
        ValueError: non-1-D input, NaN/inf widths, or ``w_open <= 0``.
    """
    w = np.asarray(width, dtype=np.float64)
    if w.ndim != 1:
        raise ValueError(f"gripper width must be [T], got shape {w.shape}")
    if not np.all(np.isfinite(w)):
        raise ValueError("gripper width contains NaN or inf")
    if not w_open > 0:
        raise ValueError(f"w_open must be > 0, got {w_open}")
    return np.clip(1.0 - w / float(w_open), -0.5, 1.5)


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """Maximal runs of True in a ``[T]`` bool mask as inclusive ``(start, end)`` pairs."""
    m = np.asarray(mask, dtype=bool)
    if m.size == 0:
        return []
    d = np.diff(np.concatenate([[0], m.astype(np.int8), [0]]))
    starts = np.flatnonzero(d == 1)
    ends = np.flatnonzero(d == -1) - 1
    return list(zip(starts.tolist(), ends.tolist()))


def debounce(mask: np.ndarray, min_duration: int, min_gap: int) -> np.ndarray:
    """Debounce a ``[T]`` contact mask: fill interior gaps ``< min_gap``, then drop runs ``< min_duration``.

    Only gaps *between* two contact runs are filled (never at the episode edges).
    Returns a new ``[T]`` bool array.
    """
    m = np.asarray(mask, dtype=bool).copy()
    runs = _runs(m)
    for (_, z0), (a1, _) in zip(runs[:-1], runs[1:]):
        if a1 - z0 - 1 < min_gap:
            m[z0 + 1:a1] = True
    for a, z in _runs(m):
        if z - a + 1 < min_duration:
            m[a:z + 1] = False
    return m


@dataclasses.dataclass(frozen=True)
class ContactEvent:
    """One gripper event.

    Attributes:
        kind: ``"close"`` (closure onset: first contact frame) or ``"open"`` (release: first
            non-contact frame after a contact run).
        index: frame of the change of contact state.
        end: settled frame (inclusive): the gripper has stopped closing on the object /
            has opened; ``index <= end``. Skill clips end at ``end + 1`` (exclusive).
        closure: median closure ``c`` over the contact run (how far the fingers closed; ~1
            means closed on nothing).
    """

    kind: str
    index: int
    end: int
    closure: float


@dataclasses.dataclass
class ContactResult:
    """Output of :func:`detect_events` for one episode.

    Attributes:
        closure: ``[T]`` closure signal ``c_t``.
        raw_contact: ``[T]`` bool, ``c_t > tau`` before debouncing.
        contact: ``[T]`` bool after debouncing.
        events: chronological :class:`ContactEvent` list (alternating close/open).
        dropped: human-readable notes on runs removed by rules (3) and (4).
    """

    closure: np.ndarray
    raw_contact: np.ndarray
    contact: np.ndarray
    events: list[ContactEvent]
    dropped: list[str]

    @property
    def num_contacts(self) -> int:
        return sum(e.kind == "close" for e in self.events)


def _commanded(actions: np.ndarray | None, close_sign: float) -> np.ndarray | None:
    if actions is None:
        return None
    a = np.asarray(actions, dtype=np.float64)
    if a.ndim != 2 or a.shape[1] == 0:
        raise ValueError(f"actions must be [T, A] to corroborate events, got shape {a.shape}")
    return np.sign(a[:, -1]) * np.sign(close_sign)  # +1 = close commanded, -1 = open


def detect_events(width: np.ndarray, params: ContactParams, actions: np.ndarray | None = None) -> ContactResult:
    """Detect gripper closure onsets and releases in one episode (paper Sec. 3.1).

    Args:
        width: ``[T]`` gripper width (dataset units, finite).
        params: thresholds and calibration.
        actions: ``[T, A]`` actions whose last dimension is the gripper command; needed only
            when ``params.use_gripper_action``.

    Returns:
        :class:`ContactResult`.

    Raises:
        ValueError: NaN/inf widths, bad shapes, or ``use_gripper_action`` without actions.

    Example (LIBERO, ``w_open = 0.08``, ``tau = 0.1``, defaults otherwise)::

        frame   0-9    10-14       15-59   60-64       65-79
        width   0.080  0.08->0.063 0.063   0.063->0.08 0.080
        c       0.0    0->0.21     0.21    0.21->0     0.0
        contact no     from 12     yes     until 62    no

    gives ``[close @12 (settled 14), open @63 (settled 64)]``.
    """
    c = closure_signal(width, params.w_open)
    T = c.shape[0]
    raw = c > params.tau
    m = debounce(raw, params.min_duration, params.min_gap)
    cmd = None
    if params.use_gripper_action:
        if actions is None:
            raise ValueError("use_gripper_action needs the episode's actions")
        cmd = _commanded(actions, params.close_sign)
        if cmd.shape[0] != T:
            raise ValueError(f"actions have {cmd.shape[0]} rows, gripper width {T}")
    dropped: list[str] = []
    runs = []
    for a, z in _runs(m):
        if a == 0:
            dropped.append(f"contact run 0-{z} starts at frame 0 (gripper closed or opening at recording start)")
            m[a:z + 1] = False
            continue
        if cmd is not None and not np.any(cmd[max(0, a - params.action_window):a + 1] > 0):
            dropped.append(f"contact run {a}-{z}: no close command in the {params.action_window} frames before it")
            m[a:z + 1] = False
            continue
        runs.append((a, z))
    events: list[ContactEvent] = []
    for i, (a, z) in enumerate(runs):
        seg = c[a:z + 1]
        plateau = float(np.median(seg))
        target = params.tau + params.settle_frac * max(plateau - params.tau, 0.0)
        lim = min(z, a + params.max_settle)
        hits = np.flatnonzero(c[a:lim + 1] >= target)
        end = a + int(hits[0]) if hits.size else lim
        events.append(ContactEvent("close", int(a), int(end), plateau))
        r = z + 1
        if r >= T:
            continue  # still closed at the end of the episode: no release
        if cmd is not None and not np.any(cmd[max(0, r - params.action_window):r + 1] < 0):
            dropped.append(f"release at {r}: no open command in the {params.action_window} frames before it "
                           "(kept: the width says the gripper opened)")
        nxt = runs[i + 1][0] - 1 if i + 1 < len(runs) else T - 1
        lim = min(nxt, r + params.max_settle)
        window = c[r:lim + 1]
        low = float(np.min(window))
        start_val = float(c[z])
        target = low + (1.0 - params.settle_frac) * max(start_val - low, 0.0)
        hits = np.flatnonzero(window <= target + 1e-12)
        end = r + int(hits[0]) if hits.size else lim
        events.append(ContactEvent("open", int(r), int(end), plateau))
    return ContactResult(closure=c, raw_contact=raw, contact=m, events=events, dropped=dropped)


def params_for(benchmark: str, *, tau: float | None = None, w_open: float | None = None,
               **kwargs) -> ContactParams:
    """:class:`ContactParams` with the benchmark's defaults, overridden by explicit values.

    Raises:
        World2ActError: unknown benchmark (when a default is needed) or invalid values.
    """
    if tau is None or w_open is None:
        d = BENCHMARK_DEFAULTS[benchmark_family(benchmark)]
        tau = d["tau"] if tau is None else tau
        w_open = d["w_open"] if w_open is None else w_open
    return ContactParams(tau=float(tau), w_open=float(w_open), **kwargs)


def event_summary(events: Sequence[ContactEvent]) -> list[dict]:
    """Events as JSON-able dicts (for prompts, logs and ``skill_stats.json``)."""
    return [{"kind": e.kind, "index": e.index, "end": e.end, "closure": round(e.closure, 3)} for e in events]
