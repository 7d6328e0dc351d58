"""Videos (PyAV), multi-view stitching (paper appendix E) and feature statistics."""
from __future__ import annotations

import numpy as np
import pytest

from world2act import World2ActError
from world2act.data import compute_stats, read_video, stitch_views, write_video
from world2act.data.stats import aggregate_stats

from .helpers import make_frames


def test_video_round_trip_within_codec_tolerance(tmp_path):
    frames = make_frames(20, seed=3)
    p = tmp_path / "v" / "a.mp4"
    write_video(p, frames, fps=20)
    out = read_video(p)
    assert out.shape == frames.shape and out.dtype == np.uint8
    err = np.abs(out.astype(np.int16) - frames)
    assert err.mean() < 2.0 and np.percentile(err, 99) <= 8
    assert not [q for q in p.parent.iterdir() if q.name != "a.mp4"]  # no temp files left


def test_video_odd_size_and_fractional_fps(tmp_path):
    frames = make_frames(5, H=30, W=45)
    write_video(tmp_path / "b.mp4", frames, fps=12.5)
    assert read_video(tmp_path / "b.mp4").shape == (5, 30, 45, 3)


def test_video_errors(tmp_path):
    with pytest.raises(World2ActError, match="uint8"):
        write_video(tmp_path / "x.mp4", np.zeros((3, 8, 8, 3), np.float32), 20)
    with pytest.raises(World2ActError, match="fps"):
        write_video(tmp_path / "x.mp4", np.zeros((3, 8, 8, 3), np.uint8), 0)
    assert not (tmp_path / "x.mp4").exists()
    with pytest.raises(World2ActError, match="not found"):
        read_video(tmp_path / "missing.mp4")
    (tmp_path / "bad.mp4").write_bytes(b"\x00" * 100)
    with pytest.raises(World2ActError, match="bad.mp4"):
        read_video(tmp_path / "bad.mp4")


def test_stitch_views():
    a = np.full((4, 8, 6, 3), 10, np.uint8)
    b = np.full((4, 8, 6, 3), 20, np.uint8)
    c = np.full((4, 8, 6, 3), 30, np.uint8)
    s = stitch_views({"agentview": a, "wrist": b}, ["agentview", "wrist"], "1x2")
    assert s.shape == (4, 8, 12, 3)
    assert (s[:, :, :6] == 10).all() and (s[:, :, 6:] == 20).all()
    s = stitch_views({"agentview": a, "wrist": b}, ["agentview", "wrist"], "2x2")
    assert s.shape == (4, 16, 12, 3)
    assert (s[:, :8, :6] == 10).all() and (s[:, :8, 6:] == 20).all() and (s[:, 8:] == 0).all()
    s = stitch_views({"x": a, "y": b, "z": c}, ["x", "y", "z"], "2x2")
    assert (s[:, 8:, :6] == 30).all() and (s[:, 8:, 6:] == 0).all()
    single = stitch_views({"agentview": a[0], "wrist": b[0]}, ["wrist", "agentview"], "1x2")
    assert single.shape == (8, 12, 3) and single[0, 0, 0] == 20
    with pytest.raises(World2ActError, match="layout"):
        stitch_views({"a": a}, ["a"], "3x3")
    with pytest.raises(World2ActError, match="not in frames"):
        stitch_views({"a": a}, ["a", "b"], "1x2")
    with pytest.raises(World2ActError, match="expected"):
        stitch_views({"a": a, "b": b[:, :4]}, ["a", "b"], "1x2")
    with pytest.raises(World2ActError, match="1 to 2"):
        stitch_views({"a": a, "b": b, "c": c}, ["a", "b", "c"], "1x2")


def test_compute_stats():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(500, 3))
    imgs = rng.integers(0, 256, size=(4, 5, 6, 3), dtype=np.uint8)
    st = compute_stats({"x": x, "g": x[:, 0], "img": imgs})
    np.testing.assert_allclose(st["x"]["mean"], x.mean(0))
    np.testing.assert_allclose(st["x"]["std"], x.std(0))
    for q, k in zip((0.01, 0.1, 0.5, 0.9, 0.99), ("q01", "q10", "q50", "q90", "q99")):
        np.testing.assert_allclose(st["x"][k], np.quantile(x, q, axis=0))
    assert st["x"]["count"] == [500] and len(st["g"]["mean"]) == 1
    # images: per channel in [0, 1], shaped (3, 1, 1) as LeRobot stores them; exact quantiles
    px = imgs.reshape(-1, 3) / 255.0
    assert set(st["img"]) == {"mean", "std", "min", "max", "q01", "q10", "q50", "q90", "q99", "count"}
    for k, v in st["img"].items():
        assert np.asarray(v).shape == ((1,) if k == "count" else (3, 1, 1)), k
    np.testing.assert_allclose(np.asarray(st["img"]["mean"]).ravel(), px.mean(0))
    np.testing.assert_allclose(np.asarray(st["img"]["std"]).ravel(), px.std(0))
    np.testing.assert_allclose(np.asarray(st["img"]["max"]).ravel(), px.max(0))
    for q, k in zip((0.01, 0.1, 0.5, 0.9, 0.99), ("q01", "q10", "q50", "q90", "q99")):
        np.testing.assert_allclose(np.asarray(st["img"][k]).ravel(), np.quantile(px, q, axis=0), atol=1e-12)
    assert st["img"]["count"] == [4]
    # aggregation over parts equals stats of the whole (quantiles: count-weighted, approximate)
    parts = [compute_stats({"x": x[:100]})["x"], compute_stats({"x": x[100:]})["x"]]
    agg = aggregate_stats(parts)
    np.testing.assert_allclose(agg["mean"], x.mean(0))
    np.testing.assert_allclose(agg["std"], x.std(0))
    np.testing.assert_allclose(agg["min"], x.min(0))
    assert set(agg) == set(parts[0]) and agg["count"] == [500]
    iparts = [compute_stats({"i": imgs[:1]})["i"], compute_stats({"i": imgs[1:]})["i"]]
    iagg = aggregate_stats(iparts)
    assert np.asarray(iagg["q50"]).shape == (3, 1, 1)
    np.testing.assert_allclose(np.asarray(iagg["mean"]).ravel(), px.mean(0))
    np.testing.assert_allclose(np.asarray(iagg["std"]).ravel(), px.std(0))
    with pytest.raises(World2ActError, match="'bad'"):
        compute_stats({"bad": np.array([[np.nan]])})
