"""Per-feature normalisation statistics (the content of ``meta/stats.json``).

Numeric features (``[N]`` or ``[N, D]``, any float/int dtype) get per-dimension ``mean``,
``std``, ``min``, ``max``, ``q01``, ``q99`` (1st/99th percentiles) and ``count`` (= [N]).
Images (uint8 ``[N, H, W, 3]``) get per-channel ``mean``, ``std``, ``min``, ``max`` of pixel
values scaled to [0, 1], and ``count`` (= [N] frames). Every value is a plain list of floats
(JSON-ready); a feature of shape ``[D]`` gives lists of length ``D`` (a scalar feature
``[N]`` gives lists of length 1).

Policies fit normalisers from these: e.g. ``(x - mean) / std`` or q01/q99 min-max scaling.
"""
from __future__ import annotations

from typing import Iterable

import numpy as np

from world2act import World2ActError

NUMERIC_STATS = ("mean", "std", "min", "max", "q01", "q99", "count")
IMAGE_STATS = ("mean", "std", "min", "max", "count")


def is_image_array(arr: np.ndarray) -> bool:
    """True for uint8 ``[N, H, W, 3]`` arrays (treated as images)."""
    return arr.dtype == np.uint8 and arr.ndim == 4 and arr.shape[-1] == 3


def image_stats(frames: np.ndarray) -> dict[str, list[float]]:
    """Per-channel statistics of uint8 frames ``[N, H, W, 3]`` in [0, 1] units.

    Returns ``{"mean": [3], "std": [3], "min": [3], "max": [3], "count": [N]}``.
    """
    if not is_image_array(frames) or frames.shape[0] == 0:
        raise World2ActError(f"image stats need uint8 [N, H, W, 3] with N >= 1, got {frames.dtype} {frames.shape}")
    px = frames.reshape(-1, 3)
    # Exact moments from per-channel 256-bin histograms (no float accumulation error).
    hist = np.stack([np.bincount(px[:, c], minlength=256) for c in range(3)]).astype(np.float64)  # [3, 256]
    v = np.arange(256, dtype=np.float64)
    n = hist.sum(axis=1)
    mean = hist @ v / n
    var = np.maximum(hist @ (v**2) / n - mean**2, 0.0)
    nz = hist > 0
    lo = np.argmax(nz, axis=1).astype(np.float64)
    hi = 255.0 - np.argmax(nz[:, ::-1], axis=1)
    return {
        "mean": (mean / 255.0).tolist(),
        "std": (np.sqrt(var) / 255.0).tolist(),
        "min": (lo / 255.0).tolist(),
        "max": (hi / 255.0).tolist(),
        "count": [int(frames.shape[0])],
    }


def numeric_stats(arr: np.ndarray) -> dict[str, list[float]]:
    """Per-dimension statistics of ``[N]`` or ``[N, D]`` (or ``[N, ...]``, flattened) values."""
    arr = np.asarray(arr)
    if arr.ndim == 0 or arr.shape[0] == 0:
        raise World2ActError(f"stats need at least one row, got shape {arr.shape}")
    x = arr.reshape(arr.shape[0], -1).astype(np.float64)
    if not np.all(np.isfinite(x)):
        raise World2ActError("stats input contains NaN or inf")
    q = np.quantile(x, [0.01, 0.99], axis=0)
    return {
        "mean": x.mean(axis=0).tolist(),
        "std": x.std(axis=0).tolist(),
        "min": x.min(axis=0).tolist(),
        "max": x.max(axis=0).tolist(),
        "q01": q[0].tolist(),
        "q99": q[1].tolist(),
        "count": [int(x.shape[0])],
    }


def compute_stats(arrays: dict[str, np.ndarray]) -> dict[str, dict[str, list[float]]]:
    """Statistics for each named feature.

    Args:
        arrays: feature name -> ``[N, ...]`` values over all frames of a dataset. uint8
            ``[N, H, W, 3]`` arrays are treated as images (see :func:`image_stats`), anything
            else as numeric (see :func:`numeric_stats`).

    Returns:
        feature name -> {stat name -> list of floats}; see the module docstring.

    Raises:
        World2ActError: an empty array or NaN/inf values (the message names the feature).
    """
    out = {}
    for key, arr in arrays.items():
        arr = np.asarray(arr)
        try:
            out[key] = image_stats(arr) if is_image_array(arr) else numeric_stats(arr)
        except World2ActError as e:
            raise World2ActError(f"feature {key!r}: {e}") from None
    return out


def aggregate_stats(parts: Iterable[dict[str, list[float]]]) -> dict[str, list[float]]:
    """Combine statistics of disjoint parts (e.g. episodes) of one feature.

    ``mean``/``std`` are combined exactly (count-weighted, parallel variance formula),
    ``min``/``max`` exactly, and ``q01``/``q99`` (if present) approximately as the
    count-weighted mean of the parts' quantiles (as LeRobot does).
    """
    parts = list(parts)
    if not parts:
        raise World2ActError("aggregate_stats: no parts")
    n = np.array([p["count"][0] for p in parts], dtype=np.float64)
    N = n.sum()
    means = np.array([p["mean"] for p in parts], dtype=np.float64)
    stds = np.array([p["std"] for p in parts], dtype=np.float64)
    w = (n / N)[:, None]
    mean = (w * means).sum(axis=0)
    var = (w * (stds**2 + (means - mean) ** 2)).sum(axis=0)
    out = {
        "mean": mean.tolist(),
        "std": np.sqrt(np.maximum(var, 0.0)).tolist(),
        "min": np.min([p["min"] for p in parts], axis=0).tolist(),
        "max": np.max([p["max"] for p in parts], axis=0).tolist(),
    }
    for k in ("q01", "q99"):
        if all(k in p for p in parts):
            out[k] = (w * np.array([p[k] for p in parts], dtype=np.float64)).sum(axis=0).tolist()
    out["count"] = [int(N)]
    return out
