"""Synchronising the visual stream (contact events) with the language stream (skill prompts).

Paper Sec. 3.1-3.2: each skill clip is paired one-to-one, in chronological order, with a
low-level prompt; an episode is *synchronised* when the number of segments equals the number
of prompts, and the sync rate is synchronised episodes / episodes (paper: 96.2% RoboCasa-Skill,
86.9% LIBERO-Skill). Unsynchronised episodes are dropped with a counted reason.

Boundary placement (the schema aligner, :func:`align_schema`)
--------------------------------------------------------------
A segment starts with non-contact frames and ends at the end of a contact event (paper
Sec. 3.1). Each skill consumes, in order, the gripper events its kind implies
(:data:`world2act.skills.decompose.VOCABULARY`):

* ``grasp`` (pick) consumes one ``close`` event and ends at its settled frame (fingers closed
  on the object);
* ``release`` (place, stack, insert, ...) consumes one ``open`` event and ends at its settled
  frame (fingers open again);
* ``interact`` (open, close, turn on, push, ...) consumes a ``close`` + ``open`` cycle and ends
  at the settled frame of the ``open``.

Skill ``k`` covers frames ``[b_{k-1}, b_k)`` with ``b_0 = 0``, ``b_k = end_k + 1`` for every
skill but the last, and ``b_K = T`` for the last: clips tile the episode exactly (no frame
lost or duplicated; the frame after a clip's last frame is the next clip's first frame), and
the retreat after the last release belongs to the last skill. The last skill's own event is
optional (a Meta-World pick-place expert never lets go of the puck; a drawer may be pushed
shut with an open gripper), so: the last skill may consume nothing, or exactly its events;
any event left over means a false positive or a missing skill, and the episode is not
synchronised (``"extra_events"``); running out of events before the last skill is
``"missing_events"``. A one-skill schema with no closure at all (a push) is one clip.

Worked example (libero_object, ``"pick up the alphabet soup and place it in the basket"``,
``T = 150``): events ``close@58 (settled 61)``, ``open@121 (settled 124)``; schema
``[pick (grasp), place (release)]`` -> ``pick`` consumes ``close`` -> ``b_1 = 62``; ``place``
is last and consumes ``open`` -> ``b_2 = 150``. Clips: ``"pick up the alphabet soup"`` =
frames 0-61 (approach, descend, close), ``"place the alphabet soup in the basket"`` = frames
62-149 (lift, carry, lower, open, retreat).
"""
from __future__ import annotations

import collections
import dataclasses
from typing import Sequence

import numpy as np

from world2act.skills.contacts import ContactEvent
from world2act.skills.decompose import SkillStep

#: event patterns each kind consumes when it is not the last skill
_PATTERN = {"grasp": ("close",), "release": ("open",), "interact": ("close", "open")}
#: patterns allowed for the last skill (it always ends at the episode end)
_LAST_PATTERNS = {
    "grasp": [("close",), ("close", "open")],
    "release": [(), ("open",)],
    "interact": [(), ("close",), ("close", "open")],
}

# discard reasons (keys of skill_stats.json "discard_reasons")
MISSING_EVENTS = "missing_events"
EXTRA_EVENTS = "extra_events"
SHORT_CLIP = "clip_too_short"


@dataclasses.dataclass
class Alignment:
    """Result of aligning one episode's events with its skills.

    Attributes:
        ok: synchronised.
        boundaries: ``[K + 1]`` frame indices ``0 = b_0 < b_1 < ... < b_K = T`` when ok.
        reason: discard reason key when not ok (e.g. ``"missing_events"``).
        detail: a human-readable explanation.
        used_events: indices into the event list that ended each skill (None: the last
            skill had no event of its own).
    """

    ok: bool
    boundaries: list[int] = dataclasses.field(default_factory=list)
    reason: str | None = None
    detail: str = ""
    used_events: list[int | None] = dataclasses.field(default_factory=list)
    ignored_retries: int = 0


def align_schema(events: Sequence[ContactEvent], steps: Sequence[SkillStep], T: int,
                 min_clip_frames: int = 1, positions: np.ndarray | None = None,
                 max_ignored_retries: int = 2) -> Alignment:
    """Deterministic schema aligner: place skill boundaries at the events each skill consumes.

    Args:
        events: chronological gripper events of the episode.
        steps: the decomposed skills (at least one).
        T: episode length in frames.
        min_clip_frames: clips shorter than this make the episode unsynchronised.
        positions: optional ``[T, 3]`` end-effector positions (m) used to rank retried grasps.
        max_ignored_retries: at most this many retried grasps are filtered (0 disables).

    Returns:
        :class:`Alignment` (see the module docstring for the rule). When the events only
        fail to align because of left-over events, close+open cycles that are *followed by
        another closure* (a grasp that was released and tried again) are treated as false
        positives: the ones that carried least (smallest horizontal hand displacement between
        closing and opening, or shortest hold without ``positions``) are ignored, one more at
        a time, until the rest aligns; ``detail`` then names the ignored frames.
    """
    al = _align(events, steps, T, min_clip_frames)
    if al.ok or al.reason != EXTRA_EVENTS or max_ignored_retries <= 0:
        return al
    cycles = [i for i in range(len(events) - 2)
              if events[i].kind == "close" and events[i + 1].kind == "open" and events[i + 2].kind == "close"]

    def carried(i: int) -> float:
        a, b = events[i].index, events[i + 1].index
        if positions is not None and positions.shape[0] > b:
            return float(np.linalg.norm(positions[b, :2] - positions[a, :2]))
        return float(b - a)

    ranked = sorted(cycles, key=lambda i: (carried(i), i))
    for n in range(1, min(max_ignored_retries, len(ranked)) + 1):
        drop = set(ranked[:n])
        skip = drop | {i + 1 for i in drop}
        kept = [e for j, e in enumerate(events) if j not in skip]
        al2 = _align(kept, steps, T, min_clip_frames)
        if al2.ok:
            frames = ", ".join(f"{events[i].index}-{events[i + 1].index}" for i in sorted(drop))
            al2.detail = f"ignored {n} retried grasp(s) at frames {frames}"
            al2.ignored_retries = n
            return al2
    return al


def _align(events: Sequence[ContactEvent], steps: Sequence[SkillStep], T: int, min_clip_frames: int) -> Alignment:
    if not steps:
        raise ValueError("align_schema needs at least one skill")
    kinds = [e.kind for e in events]
    pos = 0
    bounds = [0]
    used: list[int | None] = []
    for k, step in enumerate(steps[:-1]):
        pat = _PATTERN[step.kind]
        if tuple(kinds[pos:pos + len(pat)]) != pat:
            have = " ".join(kinds[pos:]) or "none"
            return Alignment(False, reason=MISSING_EVENTS,
                             detail=f"skill {k + 1} '{step.prompt}' needs events {'+'.join(pat)} but the remaining events are: {have}")
        pos += len(pat)
        used.append(pos - 1)
        bounds.append(events[pos - 1].end + 1)
    rest = tuple(kinds[pos:])
    last = steps[-1]
    if rest not in _LAST_PATTERNS[last.kind]:
        allowed = " or ".join("+".join(p) or "nothing" for p in _LAST_PATTERNS[last.kind])
        pats = _LAST_PATTERNS[last.kind]
        reason = MISSING_EVENTS if any(p[:len(rest)] == rest and len(p) > len(rest) for p in pats) else EXTRA_EVENTS
        return Alignment(False, reason=reason,
                         detail=f"last skill '{last.prompt}' allows {allowed}; left over: {' '.join(rest) or 'none'}")
    used.append(len(kinds) - 1 if rest else None)
    bounds.append(int(T))
    return _check_bounds(bounds, min_clip_frames, used)


def _check_bounds(bounds: list[int], min_clip_frames: int, used: list[int | None]) -> Alignment:
    for k in range(1, len(bounds)):
        if bounds[k] - bounds[k - 1] < max(1, min_clip_frames):
            return Alignment(False, reason=SHORT_CLIP,
                             detail=f"skill {k} would span frames {bounds[k - 1]}-{bounds[k] - 1} "
                                    f"({bounds[k] - bounds[k - 1]} < {min_clip_frames} frames)")
    return Alignment(True, boundaries=[int(b) for b in bounds], used_events=used)


def boundaries_from_indices(indices: Sequence[int], T: int, min_clip_frames: int = 1) -> Alignment:
    """Turn per-skill end frames (inclusive, one per skill, increasing) into clip boundaries.

    The last skill is extended to the episode end (``b_K = T``), as in :func:`align_schema`.
    Used by the LLM aligner after validation.
    """
    bounds = [0] + [int(i) + 1 for i in list(indices)[:-1]] + [int(T)]
    return _check_bounds(bounds, min_clip_frames, [None] * len(indices))


@dataclasses.dataclass
class EpisodeSegmentation:
    """Everything decided about one source episode.

    Attributes:
        episode: source episode index.
        length: frames.
        instruction: the global instruction.
        synced: whether the episode yields clips.
        reason: discard reason key (None when synced).
        detail: explanation of the decision.
        steps: decomposed skills (empty if the instruction could not be decomposed).
        boundaries: ``[K + 1]`` clip boundaries when synced.
        events: event dicts (kind, index, end, closure) for reporting.
        ignored_retries: retried grasps the schema aligner ignored.
    """

    episode: int
    length: int
    instruction: str
    synced: bool
    reason: str | None = None
    detail: str = ""
    steps: list[SkillStep] = dataclasses.field(default_factory=list)
    boundaries: list[int] = dataclasses.field(default_factory=list)
    events: list[dict] = dataclasses.field(default_factory=list)
    ignored_retries: int = 0

    def clips(self) -> list[tuple[int, int, SkillStep]]:
        """``[(frame_from, frame_to_exclusive, step)]`` pairs, in order (empty if not synced)."""
        if not self.synced:
            return []
        return [(self.boundaries[k], self.boundaries[k + 1], s) for k, s in enumerate(self.steps)]


def sync_summary(results: Sequence[EpisodeSegmentation]) -> dict:
    """Sync statistics (paper Sec. 3.2).

    Returns:
        ``{"episodes_in", "episodes_synced", "sync_rate", "clips_out", "discard_reasons":
        {reason: count}, "per_task": {instruction: {"episodes", "synced", "sync_rate"}}}``;
        ``sync_rate`` is synced / episodes (0.0 when there are no episodes).
    """
    n = len(results)
    synced = [r for r in results if r.synced]
    reasons = collections.Counter(r.reason for r in results if not r.synced)
    per_task: dict[str, dict] = {}
    for r in results:
        d = per_task.setdefault(r.instruction, {"episodes": 0, "synced": 0})
        d["episodes"] += 1
        d["synced"] += int(r.synced)
    for d in per_task.values():
        d["sync_rate"] = round(d["synced"] / d["episodes"], 4)
    return {
        "episodes_in": n,
        "episodes_synced": len(synced),
        "sync_rate": round(len(synced) / n, 4) if n else 0.0,
        "clips_out": sum(len(r.steps) for r in synced),
        "discard_reasons": dict(sorted(reasons.items())),
        "per_task": dict(sorted(per_task.items())),
    }
