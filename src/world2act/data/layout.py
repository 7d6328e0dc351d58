"""Multi-view stitching: several camera streams tiled into one image per time step.

Paper appendix E: the world model sees the cameras of a time step tiled into one frame, a
2×2 grid with the main (third-person) camera top-left, the wrist camera top-right and the
bottom row black. ``1x2`` puts the views side by side (cheaper: half the pixels).
:func:`unstitch_views` cuts stitched frames (e.g. a world model's imagination) back into views.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from world2act import World2ActError

LAYOUTS = ("1x2", "2x2")


def stitch_views(frames: dict[str, np.ndarray], cameras: Sequence[str], layout: str = "2x2") -> np.ndarray:
    """Tile camera views into one frame per time step.

    Args:
        frames: camera name -> ``[T, H, W, 3]`` (or a single frame ``[H, W, 3]``), all the same
            shape and dtype (usually uint8).
        cameras: the cameras to tile, in order. ``1x2``: 1 or 2 cameras (left, right; a
            missing right view is black). ``2x2``: 1 to 4 cameras filling top-left,
            top-right, bottom-left, bottom-right; unused cells are black (paper appendix E:
            ``(agentview, wrist)`` gives a black bottom row).
        layout: ``"1x2"`` -> ``[T, H, 2W, 3]``; ``"2x2"`` -> ``[T, 2H, 2W, 3]``.

    Returns:
        The stitched frames with the input's leading shape and dtype.

    Raises:
        World2ActError: unknown layout, too many cameras for the layout, a camera missing from
            ``frames``, or views of different shapes.
    """
    if layout not in LAYOUTS:
        raise World2ActError(f"unknown view layout {layout!r} (choose from {', '.join(LAYOUTS)})")
    cameras = list(cameras)
    cells = 2 if layout == "1x2" else 4
    if not cameras or len(cameras) > cells:
        raise World2ActError(f"layout {layout} takes 1 to {cells} cameras, got {cameras}")
    missing = [c for c in cameras if c not in frames]
    if missing:
        raise World2ActError(f"cameras {missing} not in frames (have {sorted(frames)})")
    views = [np.asarray(frames[c]) for c in cameras]
    shape, dtype = views[0].shape, views[0].dtype
    if views[0].ndim not in (3, 4) or shape[-1] != 3:
        raise World2ActError(f"views must be [T, H, W, 3] or [H, W, 3], got {shape} for {cameras[0]!r}")
    for c, v in zip(cameras, views):
        if v.shape != shape or v.dtype != dtype:
            raise World2ActError(f"view {c!r} has {v.dtype} {v.shape}, expected {dtype} {shape} like {cameras[0]!r}")
    H, W = shape[-3], shape[-2]
    rows = 1 if layout == "1x2" else 2
    out = np.zeros(shape[:-3] + (rows * H, 2 * W, 3), dtype=dtype)
    for k, v in enumerate(views):
        r, c = divmod(k, 2)
        out[..., r * H:(r + 1) * H, c * W:(c + 1) * W, :] = v
    return out


def unstitch_views(frames: np.ndarray, cameras: Sequence[str], layout: str = "2x2") -> dict[str, np.ndarray]:
    """Cut stitched frames back into camera views: the inverse of :func:`stitch_views`.

    Args:
        frames: ``[..., R*H, 2*W, 3]`` stitched frames (``R`` = 1 for ``1x2``, 2 for ``2x2``),
            or ``[..., H, W, 3]`` for ``1x1`` (one camera, the world model's single-view layout).
        cameras: the cameras that were tiled, in the order given to :func:`stitch_views`.
        layout: ``"1x1"``, ``"1x2"`` or ``"2x2"``.

    Returns:
        camera name -> ``[..., H, W, 3]`` (a contiguous copy, same dtype as ``frames``).

    Raises:
        World2ActError: unknown layout, too many cameras for the layout, or a frame size that
            the layout's grid does not divide.
    """
    if layout not in ("1x1",) + LAYOUTS:
        raise World2ActError(f"unknown view layout {layout!r} (choose from 1x1, {', '.join(LAYOUTS)})")
    cameras = list(cameras)
    cells = {"1x1": 1, "1x2": 2, "2x2": 4}[layout]
    if not cameras or len(cameras) > cells:
        raise World2ActError(f"layout {layout} holds 1 to {cells} cameras, got {cameras}")
    x = np.asarray(frames)
    if x.ndim < 3 or x.shape[-1] != 3:
        raise World2ActError(f"stitched frames must be [..., H, W, 3], got shape {x.shape}")
    rows, cols = {"1x1": (1, 1), "1x2": (1, 2), "2x2": (2, 2)}[layout]
    if x.shape[-3] % rows or x.shape[-2] % cols:
        raise World2ActError(f"stitched frame size {x.shape[-3]}x{x.shape[-2]} is not divisible into the "
                             f"{rows}x{cols} grid of layout {layout}")
    H, W = x.shape[-3] // rows, x.shape[-2] // cols
    out = {}
    for k, cam in enumerate(cameras):
        r, c = divmod(k, cols)
        out[cam] = np.ascontiguousarray(x[..., r * H:(r + 1) * H, c * W:(c + 1) * W, :])
    return out
