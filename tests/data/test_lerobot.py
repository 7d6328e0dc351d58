"""LeRobot v3 writer/reader: round trip, determinism, resume, validation, corruption errors."""
from __future__ import annotations

import json

import numpy as np
import pyarrow.parquet as pq
import pytest

from world2act import World2ActError
from world2act.data import DatasetSpec, LeRobotDataset, LeRobotDatasetWriter
from world2act.data.lerobot import DATA_PATH, EPISODES_PATH, VIDEO_PATH

from .helpers import CAMS, make_episode, make_spec

CODEC_MAE_BOUND = 2.0  # grey levels of 255; measured ≈0.6 on these frames (docs/data.md)


def _write(root, eps, spec=None, **kw):
    w = LeRobotDatasetWriter(root, spec or make_spec(), **kw)
    for e in eps:
        w.add_episode(e)
    w.finalize()
    return w


def _video(root, ep, cam="agentview"):
    return root / VIDEO_PATH.format(video_key=f"observation.images.{cam}", chunk_index=0, file_index=ep)


def test_round_trip(tmp_path):
    eps = [make_episode(i, T=10 + i) for i in range(3)]
    w = _write(tmp_path / "ds", eps)
    assert w.num_episodes == 3
    ds = LeRobotDataset(tmp_path / "ds")
    assert len(ds) == ds.num_episodes == 3 and ds.num_frames == 33
    assert ds.spec == make_spec() and ds.fps == 20.0 and ds.cameras == CAMS
    assert ds.tasks == ["put the object 0 in the basket", "put the object 1 in the basket"]
    info = ds.info
    assert info["codebase_version"] == "v3.0" and info["total_episodes"] == 3 and info["total_frames"] == 33
    assert info["features"]["observation.images.wrist"]["dtype"] == "video"
    assert info["features"]["observation.images.wrist"]["shape"] == [64, 64, 3]
    assert info["features"]["sim_state"]["shape"] == [12]
    for i, e in enumerate(eps):
        r = ds.load_episode(i)
        assert r.task == e.task and r.success == e.success and r.meta == e.meta
        np.testing.assert_array_equal(r.actions, e.actions)
        np.testing.assert_array_equal(r.states, e.states)
        np.testing.assert_array_equal(r.gripper_width, e.gripper_width)
        np.testing.assert_array_equal(r.sim_states, e.sim_states)
        assert r.actions.dtype == np.float32 and r.sim_states.dtype == np.float64
        for c in CAMS:
            assert r.images[c].shape == e.images[c].shape and r.images[c].dtype == np.uint8
            mae = np.abs(r.images[c].astype(np.int16) - e.images[c]).mean()
            assert mae < CODEC_MAE_BOUND, (c, mae)
        m = ds.episode_meta(i)
        assert m["length"] == len(e) and m["task"] == e.task and m["success"] == e.success
        assert m["episode_index"] == i and ds.tasks[m["task_index"]] == e.task
        assert all(m[k] == v for k, v in e.meta.items())
    # frame table columns
    t = pq.read_table(tmp_path / "ds" / DATA_PATH.format(chunk_index=0, file_index=1))
    assert t.column("index").to_pylist() == list(range(10, 21))
    assert t.column("frame_index").to_pylist() == list(range(11))
    np.testing.assert_allclose(t.column("timestamp").to_numpy(), np.arange(11) / 20, atol=1e-6)


def test_partial_loading(tmp_path):
    _write(tmp_path / "ds", [make_episode(0)])
    ds = LeRobotDataset(tmp_path / "ds")
    assert ds.load_episode(0, load_images=False).images == {}
    assert list(ds.load_episode(0, cameras=["wrist"]).images) == ["wrist"]
    eps = list(ds.iter_episodes(load_images=False))
    assert len(eps) == 1 and eps[0].sim_states.shape == (12, 12)
    with pytest.raises(World2ActError, match="unknown cameras"):
        ds.load_episode(0, cameras=["top"])
    with pytest.raises(World2ActError, match="out of range"):
        ds.load_episode(5)


def test_variable_sim_state_and_no_cameras(tmp_path):
    spec = make_spec(sim_state_dim=-1, cameras=())
    eps = [make_episode(i, spec=spec) for i in range(2)]
    _write(tmp_path / "ds", eps, spec=spec)
    ds = LeRobotDataset(tmp_path / "ds")
    assert ds.info["video_path"] is None and ds.cameras == ()
    for i, e in enumerate(eps):
        r = ds.load_episode(i)
        assert r.sim_states.shape == e.sim_states.shape  # widths differ between episodes
        np.testing.assert_array_equal(r.sim_states, e.sim_states)
        assert r.images == {}


def test_no_sim_state(tmp_path):
    spec = make_spec(sim_state_dim=None, cameras=("agentview",))
    _write(tmp_path / "ds", [make_episode(0, spec=spec)], spec=spec)
    ds = LeRobotDataset(tmp_path / "ds")
    assert ds.load_episode(0).sim_states is None and "sim_state" not in ds.info["features"]


def test_stats(tmp_path):
    """meta/stats.json as LeRobot writes it: every feature, five quantiles, images shaped (3, 1, 1)."""
    eps = [make_episode(i) for i in range(3)]
    _write(tmp_path / "ds", eps)
    st = LeRobotDataset(tmp_path / "ds").stats
    acts = np.concatenate([e.actions for e in eps]).astype(np.float64)
    np.testing.assert_allclose(st["action"]["mean"], acts.mean(0), rtol=1e-9)
    for q in (0.01, 0.10, 0.50, 0.90, 0.99):
        np.testing.assert_allclose(st["action"][f"q{int(round(q * 100)):02d}"], np.quantile(acts, q, axis=0), rtol=1e-9)
    assert st["action"]["count"] == [36]
    full = {"mean", "std", "min", "max", "q01", "q10", "q50", "q90", "q99", "count"}
    for key in ("action", "observation.state", "observation.gripper_width", "sim_state", "timestamp", "frame_index",
                "episode_index", "index", "task_index", "observation.images.wrist", "observation.images.agentview"):
        assert set(st[key]) == full, key
    assert len(st["observation.gripper_width"]["mean"]) == 1 and len(st["sim_state"]["mean"]) == 12
    assert st["index"]["max"] == [35.0] and st["timestamp"]["count"] == [36]
    img = st["observation.images.wrist"]
    for k in full - {"count"}:
        assert np.asarray(img[k]).shape == (3, 1, 1), k
    assert img["count"] == [36]
    px = np.concatenate([e.images["wrist"] for e in eps]).reshape(-1, 3) / 255.0
    np.testing.assert_allclose(np.asarray(img["mean"]).ravel(), px.mean(0), atol=1e-9)
    np.testing.assert_allclose(np.asarray(img["std"]).ravel(), px.std(0), atol=1e-9)
    np.testing.assert_allclose(np.asarray(img["min"]).ravel(), px.min(0))
    # per-episode statistics of every feature are in the episode table (LeRobot aggregates them)
    t = pq.read_table(tmp_path / "ds" / EPISODES_PATH)
    assert np.asarray(t.column("stats/observation.images.wrist/q50")[0].as_py()).shape == (3, 1, 1)
    assert t.column("stats/action/count").to_pylist() == [[12], [12], [12]]
    # adding an episode makes the stats stale: they are removed until the next finalize()
    w = LeRobotDatasetWriter(tmp_path / "ds", make_spec(), resume=True)
    w.add_episode(make_episode(3))
    assert LeRobotDataset(tmp_path / "ds").stats is None


def test_deterministic(tmp_path):
    """Parquet and JSON files are byte-identical; videos decode to the same frames within codec
    tolerance (x264 through PyAV is byte-identical in almost every run, not guaranteed)."""
    from world2act.data import read_video

    eps = [make_episode(i) for i in range(2)]
    _write(tmp_path / "a", eps)
    _write(tmp_path / "b", eps)
    files = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*") if p.is_file())
    assert len(files) == 2 * 1 + 2 * 2 + 4  # data, videos, info/tasks/episodes/stats
    for f in files:
        if f.suffix == ".mp4":
            va, vb = read_video(tmp_path / "a" / f), read_video(tmp_path / "b" / f)
            assert va.shape == vb.shape and np.abs(va.astype(np.int16) - vb).mean() < 1.0, f
        else:
            assert (tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes(), f


def test_resume_continues_and_checks_spec(tmp_path):
    root = tmp_path / "ds"
    _write(root, [make_episode(0), make_episode(1)])
    with pytest.raises(World2ActError, match="not empty"):
        LeRobotDatasetWriter(root, make_spec())
    other = DatasetSpec(fps=20, action_dim=4, state_dim=8, cameras=CAMS, image_size=(64, 64),
                        benchmark="libero_object", robot_type="panda", sim_state_dim=12)
    with pytest.raises(World2ActError, match="action_dim"):
        LeRobotDatasetWriter(root, other, resume=True)
    w = LeRobotDatasetWriter(root, make_spec(), resume=True)
    assert w.num_episodes == 2 and w.num_frames == 24
    assert w.add_episode(make_episode(2)) == 2
    ds = LeRobotDataset(root)
    assert ds.num_episodes == 3 and ds.info["total_frames"] == 36
    assert ds.episode_meta(2)["seed"] == 2
    # a fresh writer with overwrite starts over
    w = LeRobotDatasetWriter(root, other, overwrite=True)
    assert w.num_episodes == 0 and LeRobotDataset(root).num_episodes == 0


def test_invalid_episode_writes_nothing(tmp_path):
    root = tmp_path / "ds"
    w = LeRobotDatasetWriter(root, make_spec())
    good = make_episode(0)
    bad_cases = {
        "action_dim": dict(actions=good.actions[:, :4]),
        "cameras": dict(images={"agentview": good.images["agentview"]}),
        "image_size": dict(images={c: v[:, :32] for c, v in good.images.items()}),
        "sim_states": dict(sim_states=None),
        "NaN": dict(actions=np.full_like(good.actions, np.nan)),
        "rows": dict(states=good.states[:5]),
        "not allowed": dict(meta={"length": 3}),
        "JSON": dict(meta={"obj": object()}),
        "task": dict(task=""),
    }
    import dataclasses

    for match, change in bad_cases.items():
        with pytest.raises(World2ActError, match=match):
            w.add_episode(dataclasses.replace(good, **change))
    assert w.num_episodes == 0 and not (root / "data").exists() and not (root / "videos").exists()
    assert LeRobotDataset(root).num_episodes == 0
    assert w.add_episode(good) == 0


def test_corruption_errors_name_the_file(tmp_path):
    root = tmp_path / "ds"
    _write(root, [make_episode(0), make_episode(1)])
    data1 = root / DATA_PATH.format(chunk_index=0, file_index=1)

    # truncated data parquet -> error at load naming the file
    raw = data1.read_bytes()
    data1.write_bytes(raw[: len(raw) // 2])
    ds = LeRobotDataset(root)
    ds.load_episode(0)
    with pytest.raises(World2ActError, match=str(data1)):
        ds.load_episode(1)
    data1.write_bytes(raw)

    # missing mp4 -> error at open naming it
    vid = _video(root, 1, "wrist")
    vraw = vid.read_bytes()
    vid.unlink()
    with pytest.raises(World2ActError, match=str(vid)):
        LeRobotDataset(root)
    # garbage mp4 -> error at load naming it
    vid.write_bytes(b"not a video" * 10)
    with pytest.raises(World2ActError, match=str(vid)):
        LeRobotDataset(root).load_episode(1)
    # video shorter than the episode
    from world2act.data import read_video, write_video

    vid.write_bytes(vraw)
    write_video(vid, read_video(vid)[:5], 20)
    with pytest.raises(World2ActError, match=r"has 5 frames"):
        LeRobotDataset(root).load_episode(1)
    # ...but the fast path does not decode videos
    assert len(LeRobotDataset(root).load_episode(1, load_images=False)) == 12

    # invalid info.json
    info = root / "meta" / "info.json"
    good_info = info.read_text()
    info.write_text("{not json")
    with pytest.raises(World2ActError, match="info.json"):
        LeRobotDataset(root)
    info.write_text(json.dumps({"fps": 20}))
    with pytest.raises(World2ActError, match="info.json.*missing"):
        LeRobotDataset(root)
    info.write_text(good_info)

    # corrupt episodes / tasks parquet
    epf = root / EPISODES_PATH
    eraw = epf.read_bytes()
    epf.write_bytes(eraw[:100])
    with pytest.raises(World2ActError, match="file-000.parquet"):
        LeRobotDataset(root)
    epf.unlink()
    with pytest.raises(World2ActError, match="episodes file not found"):
        LeRobotDataset(root)
    epf.write_bytes(eraw)
    (root / "meta" / "tasks.parquet").unlink()
    with pytest.raises(World2ActError, match="tasks.parquet"):
        LeRobotDataset(root)
    with pytest.raises(World2ActError, match="not found"):
        LeRobotDataset(tmp_path / "nope")


def test_reads_lerobot_packed_files(tmp_path):
    """LeRobot itself packs several episodes per data/video file: rows are selected by
    dataset_from_index/to_index and frames by from_timestamp."""
    import pyarrow as pa

    from world2act.data import read_video, write_video

    root = tmp_path / "ds"
    eps = [make_episode(0, T=12), make_episode(1, T=9)]
    _write(root, eps)
    d0, d1 = (root / DATA_PATH.format(chunk_index=0, file_index=i) for i in (0, 1))
    pq.write_table(pa.concat_tables([pq.read_table(d0), pq.read_table(d1)]), d0)
    d1.unlink()
    for cam in CAMS:
        v0, v1 = _video(root, 0, cam), _video(root, 1, cam)
        write_video(v0, np.concatenate([read_video(v0), read_video(v1)]), 20, crf=0)
        v1.unlink()
    epf = root / EPISODES_PATH
    t = pq.read_table(epf)
    for name in t.column_names:
        if name.endswith("file_index") and not name.startswith("meta/"):
            t = t.set_column(t.column_names.index(name), name, pa.array([0, 0], pa.int64()))
    for cam in CAMS:
        k = f"videos/observation.images.{cam}/from_timestamp"
        t = t.set_column(t.column_names.index(k), k, pa.array([0.0, 12 / 20]))
    pq.write_table(t, epf)
    ds = LeRobotDataset(root)
    for i, e in enumerate(eps):
        r = ds.load_episode(i)
        np.testing.assert_array_equal(r.actions, e.actions)
        np.testing.assert_array_equal(r.sim_states, e.sim_states)
        for cam in CAMS:
            assert r.images[cam].shape == e.images[cam].shape
            assert np.abs(r.images[cam].astype(np.int16) - e.images[cam]).mean() < CODEC_MAE_BOUND
