"""Privileged scene geometry for the LIBERO scripted experts.

Everything here reads the MuJoCo model/data of a :class:`world2act.envs.libero.LiberoEnv`
directly (object collision geoms, sites, the gripper frame). Units: metres and radians, world
frame (z up, the robot stands at negative x and faces +x).
"""
from __future__ import annotations

import dataclasses

import numpy as np

_UNIT_CUBE = np.array([[sx, sy, sz] for sx in (-1, 1) for sy in (-1, 1) for sz in (-1, 1)], dtype=np.float64)


@dataclasses.dataclass
class Box:
    """An object's collision geometry in world coordinates.

    Attributes:
        corners: ``[8·G, 3]`` world-frame corners of the G collision geoms' bounding boxes.
        lo, hi: ``[3]`` world axis-aligned bounds of ``corners``.
    """

    corners: np.ndarray

    @property
    def lo(self) -> np.ndarray:
        return self.corners.min(0)

    @property
    def hi(self) -> np.ndarray:
        return self.corners.max(0)

    @property
    def center(self) -> np.ndarray:
        return 0.5 * (self.lo + self.hi)

    def width_along(self, angle: float) -> float:
        """Horizontal extent (m) of the corners projected on the unit direction ``angle``."""
        d = np.array([np.cos(angle), np.sin(angle)])
        p = self.corners[:, :2] @ d
        return float(p.max() - p.min())

    def xy_distance(self, point: np.ndarray) -> float:
        """Horizontal distance (m) from ``point[:2]`` to this box's axis-aligned footprint."""
        lo, hi = self.lo[:2], self.hi[:2]
        d = np.maximum(0.0, np.maximum(lo - point[:2], point[:2] - hi))
        return float(np.linalg.norm(d))


def collision_geoms(sim, body_names: list[str], *, include_children: bool = True) -> list[int]:
    """Ids of collision geoms (``contype`` or ``conaffinity`` non-zero) of the named bodies
    (and, by default, all bodies below them)."""
    m = sim.model._model
    roots = {sim.model.body_name2id(b) for b in body_names}
    bodies = set(roots)
    if include_children:
        for b in range(m.nbody):
            p = b
            while p > 0:
                if p in roots:
                    bodies.add(b)
                    break
                p = m.body_parentid[p]
    return [g for g in range(m.ngeom) if m.geom_bodyid[g] in bodies and (m.geom_contype[g] or m.geom_conaffinity[g])]


def geoms_box(sim, geom_ids: list[int]) -> Box:
    """World-frame :class:`Box` of geoms from MuJoCo's per-geom local AABBs (``geom_aabb``)."""
    m, d = sim.model._model, sim.data._data
    pts = []
    for g in geom_ids:
        c, h = m.geom_aabb[g, :3], m.geom_aabb[g, 3:]
        local = c + _UNIT_CUBE * h
        pts.append(d.geom_xpos[g] + local @ d.geom_xmat[g].reshape(3, 3).T)
    if not pts:
        return Box(np.zeros((8, 3)))
    return Box(np.concatenate(pts, 0))


def wrap_half_pi(angle: float) -> float:
    """Wrap an angle to ``[-pi/2, pi/2)`` (a parallel gripper is symmetric under a half turn)."""
    return float((angle + np.pi / 2) % np.pi - np.pi / 2)


def wrap_pi(angle: float) -> float:
    """Wrap an angle to ``[-pi, pi)``."""
    return float((angle + np.pi) % (2 * np.pi) - np.pi)
