"""Per-feature normalisation statistics (the content of ``meta/stats.json``), as LeRobot writes them.

Numeric features (``[N]`` or ``[N, D]``, any float/int dtype) get per-dimension ``mean``,
``std``, ``min``, ``max``, the quantiles ``q01``, ``q10``, ``q50``, ``q90``, ``q99`` and
``count`` (= [N]); a feature of shape ``[D]`` gives lists of length ``D`` (a scalar feature
``[N]`` lists of length 1).

Images (uint8 ``[N, H, W, 3]``) get per-channel statistics of pixel values scaled to [0, 1],
shaped ``(3, 1, 1)`` as LeRobot stores them (``[[[r]], [[g]], [[b]]]``; LeRobot's own stats
aggregation refuses any other shape): ``mean``, ``std``, ``min``, ``max``, the same five
quantiles (exact, from per-channel 256-bin histograms of every pixel), and ``count`` (= [N]
frames). Every value is a plain (nested) list of floats, JSON-ready.

Policies fit normalisers from these: e.g. ``(x - mean) / std`` or q01/q99 min-max scaling.
"""
from __future__ import annotations

from typing import Iterable

import numpy as np

from world2act import World2ActError

QUANTILES: tuple[float, ...] = (0.01, 0.10, 0.50, 0.90, 0.99)
QUANTILE_KEYS: tuple[str, ...] = tuple(f"q{int(round(q * 100)):02d}" for q in QUANTILES)
NUMERIC_STATS = ("mean", "std", "min", "max", *QUANTILE_KEYS, "count")
IMAGE_STATS = NUMERIC_STATS
IMAGE_STAT_SHAPE = (3, 1, 1)


def is_image_array(arr: np.ndarray) -> bool:
    """True for uint8 ``[N, H, W, 3]`` arrays (treated as images)."""
    return arr.dtype == np.uint8 and arr.ndim == 4 and arr.shape[-1] == 3


def _hist_quantiles(hist: np.ndarray, qs: Iterable[float]) -> np.ndarray:
    """Quantiles of integer values 0..255 given per-channel counts ``[C, 256]``.

    Same as ``np.quantile(values, q, axis=0)`` (linear interpolation between order statistics)
    over the values the histogram counts, without materialising them.
    """
    cum = np.cumsum(hist, axis=1)  # [C, 256]
    n = cum[:, -1]
    out = []
    for q in qs:
        pos = q * (n - 1)
        lo = np.floor(pos)
        frac = pos - lo
        # k-th order statistic (0-based) = smallest v with cum[v] > k
        v_lo = np.array([np.searchsorted(cum[c], lo[c], side="right") for c in range(hist.shape[0])], np.float64)
        v_hi = np.array([np.searchsorted(cum[c], min(lo[c] + 1, n[c] - 1), side="right") for c in range(hist.shape[0])],
                        np.float64)
        out.append(v_lo + frac * (v_hi - v_lo))
    return np.stack(out)  # [len(qs), C]


def _as_image_shape(v: np.ndarray) -> list:
    return np.asarray(v, dtype=np.float64).reshape(IMAGE_STAT_SHAPE).tolist()


def image_stats(frames: np.ndarray) -> dict[str, list]:
    """Per-channel statistics of uint8 frames ``[N, H, W, 3]`` in [0, 1] units, shaped (3, 1, 1).

    Returns ``{"mean", "std", "min", "max", "q01", "q10", "q50", "q90", "q99": [[[r]], [[g]],
    [[b]]], "count": [N]}``. Exact: computed from per-channel histograms of every pixel.
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
    out = {
        "mean": _as_image_shape(mean / 255.0),
        "std": _as_image_shape(np.sqrt(var) / 255.0),
        "min": _as_image_shape(lo / 255.0),
        "max": _as_image_shape(hi / 255.0),
    }
    for key, qv in zip(QUANTILE_KEYS, _hist_quantiles(hist, QUANTILES)):
        out[key] = _as_image_shape(qv / 255.0)
    out["count"] = [int(frames.shape[0])]
    return out


def numeric_stats(arr: np.ndarray) -> dict[str, list[float]]:
    """Per-dimension statistics of ``[N]`` or ``[N, D]`` (or ``[N, ...]``, flattened) values."""
    arr = np.asarray(arr)
    if arr.ndim == 0 or arr.shape[0] == 0:
        raise World2ActError(f"stats need at least one row, got shape {arr.shape}")
    x = arr.reshape(arr.shape[0], -1).astype(np.float64)
    if not np.all(np.isfinite(x)):
        raise World2ActError("stats input contains NaN or inf")
    q = np.quantile(x, QUANTILES, axis=0)
    out = {
        "mean": x.mean(axis=0).tolist(),
        "std": x.std(axis=0).tolist(),
        "min": x.min(axis=0).tolist(),
        "max": x.max(axis=0).tolist(),
    }
    for key, qv in zip(QUANTILE_KEYS, q):
        out[key] = qv.tolist()
    out["count"] = [int(x.shape[0])]
    return out


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


def aggregate_stats(parts: Iterable[dict[str, list]]) -> dict[str, list]:
    """Combine statistics of disjoint parts (e.g. episodes) of one feature.

    ``mean``/``std`` are combined exactly (count-weighted, parallel variance formula),
    ``min``/``max`` exactly, and the quantiles (``q01`` … ``q99``, those present in every
    part) approximately as the count-weighted mean of the parts' quantiles (as LeRobot does).
    Values keep their shape (``[D]``, or ``(3, 1, 1)`` for images).
    """
    parts = list(parts)
    if not parts:
        raise World2ActError("aggregate_stats: no parts")
    n = np.array([np.asarray(p["count"]).reshape(-1)[0] for p in parts], dtype=np.float64)
    N = n.sum()
    means = np.array([p["mean"] for p in parts], dtype=np.float64)
    stds = np.array([p["std"] for p in parts], dtype=np.float64)
    w = (n / N).reshape((-1,) + (1,) * (means.ndim - 1))
    mean = (w * means).sum(axis=0)
    var = (w * (stds**2 + (means - mean) ** 2)).sum(axis=0)
    out = {
        "mean": mean.tolist(),
        "std": np.sqrt(np.maximum(var, 0.0)).tolist(),
        "min": np.min(np.array([p["min"] for p in parts], dtype=np.float64), axis=0).tolist(),
        "max": np.max(np.array([p["max"] for p in parts], dtype=np.float64), axis=0).tolist(),
    }
    for k in QUANTILE_KEYS:
        if all(k in p for p in parts):
            out[k] = (w * np.array([p[k] for p in parts], dtype=np.float64)).sum(axis=0).tolist()
    out["count"] = [int(N)]
    return out
