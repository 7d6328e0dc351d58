"""Length statistics of episodes vs skill clips (paper Sec. 3.2, Fig. 3).

The paper shows that skill decomposition turns long-tailed episode-length distributions into
concentrated, roughly unimodal clip-length distributions, measured as the increase of the
density around the median. We report, for a list of lengths (frames), the count, min, max,
mean, std, median, coefficient of variation, a fixed-bin histogram, and the
*median-centred share*: the fraction of items whose length is within +-25% of the median
(``|L - median| <= 0.25 * median``).
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

MEDIAN_BAND = 0.25


def median_share(lengths: Sequence[int], band: float = MEDIAN_BAND, window: float | None = None) -> float:
    """Fraction of ``lengths`` within ``+-band`` (relative) of their median; 0.0 if empty.

    With ``window`` (frames) the band is absolute: ``|L - median| <= window``.
    """
    x = np.asarray(lengths, dtype=np.float64)
    if x.size == 0:
        return 0.0
    med = float(np.median(x))
    w = band * med if window is None else float(window)
    return float(np.mean(np.abs(x - med) <= w + 1e-9))


def length_stats(lengths: Sequence[int], band: float = MEDIAN_BAND) -> dict:
    """Summary of a length distribution (frames).

    Returns:
        ``{"count", "min", "max", "mean", "std", "median", "cv", "median_share"}`` with
        ``median_share`` as in :func:`median_share` (``cv`` = std / mean).
    """
    x = np.asarray(lengths, dtype=np.float64)
    if x.size == 0:
        return {"count": 0, "min": None, "max": None, "mean": None, "std": None, "median": None, "cv": None,
                "median_share": 0.0}
    mean = float(x.mean())
    return {
        "count": int(x.size),
        "min": int(x.min()),
        "max": int(x.max()),
        "mean": round(mean, 2),
        "std": round(float(x.std()), 2),
        "median": float(np.median(x)),
        "cv": round(float(x.std()) / mean, 4) if mean > 0 else None,
        "median_share": round(median_share(x, band), 4),
    }


def _bins(before: Sequence[int], after: Sequence[int], n: int = 30) -> np.ndarray:
    allx = np.concatenate([np.asarray(before, float), np.asarray(after, float)])
    hi = float(allx.max()) if allx.size else 1.0
    return np.linspace(0.0, max(hi, 1.0) * 1.02, n + 1)


def histogram(lengths: Sequence[int], bins: np.ndarray) -> dict:
    """``{"bin_edges": [...], "counts": [...]}`` of ``lengths`` over ``bins``."""
    counts, edges = np.histogram(np.asarray(lengths, float), bins=bins)
    return {"bin_edges": [round(float(e), 2) for e in edges], "counts": [int(c) for c in counts]}


def distribution_report(before: Sequence[int], after: Sequence[int], fps: float | None = None) -> dict:
    """Before (episode lengths) vs after (clip lengths) summary for ``skill_stats.json``.

    Returns:
        ``{"before": length_stats, "after": length_stats, "median_share_gain": after - before
        (fraction; the relative +-25 % band), "abs_window_frames", "median_share_abs": {"before",
        "after"} (the same absolute window, 25 % of the episode median, around each median: how
        concentrated the lengths are in frames, which is what fixed-length WM training sees),
        "histogram": {"bin_edges", "before", "after"}, "fps"}``.
    """
    bins = _bins(before, after)
    b, a = length_stats(before), length_stats(after)
    win = MEDIAN_BAND * float(np.median(before)) if len(before) else 0.0
    return {
        "unit": "frames",
        "fps": fps,
        "median_band": MEDIAN_BAND,
        "before": b,
        "after": a,
        "median_share_gain": round(a["median_share"] - b["median_share"], 4),
        "abs_window_frames": round(win, 2),
        "median_share_abs": {"before": round(median_share(before, window=win), 4),
                             "after": round(median_share(after, window=win), 4)},
        "histogram": {"bin_edges": histogram(before, bins)["bin_edges"],
                      "before": histogram(before, bins)["counts"], "after": histogram(after, bins)["counts"]},
    }


def plot_lengths(before: Sequence[int], after: Sequence[int], path: str | Path, title: str = "") -> Path:
    """Overlay density histograms of episode lengths (gray) and skill-clip lengths (red), as Fig. 3.

    Writes a PNG atomically (matplotlib Agg backend, fixed metadata so re-runs are byte-identical).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from world2act.utils.io import atomic_path

    bins = _bins(before, after)
    fig, ax = plt.subplots(figsize=(6.0, 3.6), dpi=100)
    for data, color, label in ((before, "0.55", "episodes"), (after, "tab:red", "skill clips")):
        if len(data):
            med = float(np.median(data))
            ax.hist(np.asarray(data, float), bins=bins, density=True, alpha=0.6, color=color,
                    label=f"{label} (n={len(data)}, median {med:.0f}, ±25%: {median_share(data):.0%})")
            ax.axvline(med, color=color, linestyle="--", linewidth=1)
    ax.set_xlabel("length (frames)")
    ax.set_ylabel("density")
    ax.set_title(title or "episode vs skill-clip lengths")
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", metadata={"Software": None})
    plt.close(fig)
    return path
