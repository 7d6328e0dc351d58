"""LeRobot interoperability without LeRobot: what our writer declares and what our reader accepts.

The round trips through LeRobot's own code are in ``test_lerobot_tools.py`` (skipped unless a
Python with ``lerobot-dataset`` is available).
"""
from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from world2act import World2ActError
from world2act.data import DatasetSpec, LeRobotDataset, LeRobotDatasetWriter, read_video, write_video
from world2act.data.lerobot import DATA_PATH, EPISODES_PATH, TASKS_PATH, VIDEO_PATH
from world2act.data.video import VIDEO_PRESETS, read_video_span

from .helpers import make_episode, make_spec


def _write(root, eps, spec=None, **kw):
    with LeRobotDatasetWriter(root, spec or make_spec(), **kw) as w:
        for e in eps:
            w.add_episode(e)


def _numbered_frames(T: int, H: int = 32, W: int = 32, offset: int = 0) -> np.ndarray:
    """Frames whose red level encodes the frame number (step 12, robust to lossy codecs)."""
    out = np.zeros((T, H, W, 3), np.uint8)
    for t in range(T):
        out[t, ..., 0] = 20 + 12 * ((t + offset) % 18)
        out[t, ..., 1] = np.linspace(40, 200, W, dtype=np.uint8)[None, :]
        out[t, ..., 2] = 90
    return out


def _frame_number(frames: np.ndarray) -> np.ndarray:
    return np.rint((frames[..., 0].mean(axis=(1, 2)) - 20) / 12).astype(int)


def test_features_are_fixed_shape_and_named(tmp_path):
    """info.json: no [-1] shapes, descriptive names, yuv420p H.264 by default; sim states of
    different widths are zero-padded on disk and come back unpadded."""
    spec = make_spec(sim_state_dim=12, size=(32, 32))
    eps = [make_episode(i, T=10, spec=spec, sim_width=w) for i, w in enumerate((9, 12, 10))]
    _write(tmp_path / "ds", eps, spec=spec)
    ds = LeRobotDataset(tmp_path / "ds")
    feats = ds.info["features"]
    assert all(-1 not in f["shape"] for f in feats.values())
    assert feats["sim_state"]["shape"] == [12]
    assert feats["action"]["names"] == ["x", "y", "z", "roll", "pitch", "yaw", "gripper"]
    assert feats["observation.state"]["names"][:3] == ["x", "y", "z"]
    assert feats["observation.state"]["names"][6:] == ["finger_left", "finger_right"]
    v = feats["observation.images.wrist"]["info"]
    assert v["video.codec"] == "h264" and v["video.pix_fmt"] == "yuv420p"
    import av

    with av.open(str(tmp_path / "ds" / VIDEO_PATH.format(video_key="observation.images.wrist", chunk_index=0,
                                                         file_index=0))) as c:
        assert c.streams.video[0].codec_context.pix_fmt == "yuv420p"
    for i, e in enumerate(eps):
        r = ds.load_episode(i, load_images=False)
        assert r.sim_states.shape == e.sim_states.shape
        np.testing.assert_array_equal(r.sim_states, e.sim_states)
    raw = pq.read_table(tmp_path / "ds" / DATA_PATH.format(chunk_index=0, file_index=0)).column("sim_state")
    assert raw.type.list_size == 12 and raw[0].as_py()[9:] == [0.0, 0.0, 0.0]
    # wider than the declared width: refused, nothing written
    w = LeRobotDatasetWriter(tmp_path / "ds", spec, resume=True)
    with pytest.raises(World2ActError, match="sim_state_dim is 12"):
        w.add_episode(make_episode(5, spec=spec, sim_width=13))
    assert w.num_episodes == 3
    # metaworld names
    mw = DatasetSpec(fps=80, action_dim=4, state_dim=4, cameras=(), image_size=(8, 8), benchmark="metaworld")
    assert mw.names("action") == ["x", "y", "z", "gripper"] and mw.names("state") == ["x", "y", "z", "gripper"]
    other = DatasetSpec(fps=10, action_dim=2, state_dim=3, cameras=(), image_size=(8, 8), benchmark="mine")
    assert other.names("action") == ["a0", "a1"] and other.names("state") == ["s0", "s1", "s2"]


@pytest.mark.parametrize("preset", ["h264", "h264-444", "h264-lossless", "av1"])
def test_video_presets(tmp_path, preset):
    """--video-codec: yuv420p by default, the previous 4:4:4 behaviour and lossless reachable."""
    import av

    if VIDEO_PRESETS[preset]["codec"] not in av.codecs_available:
        pytest.skip(f"encoder {VIDEO_PRESETS[preset]['codec']} not in this PyAV build")
    spec = make_spec(sim_state_dim=None, cameras=("agentview",), size=(32, 32))
    ep = make_episode(0, T=8, spec=spec)
    _write(tmp_path / "ds", [ep], spec=spec, video=preset)
    ds = LeRobotDataset(tmp_path / "ds")
    info = ds.info["features"]["observation.images.agentview"]["info"]
    assert info["video.pix_fmt"] == VIDEO_PRESETS[preset]["pix_fmt"]
    assert info["video.codec"] == ("av1" if preset == "av1" else "h264")
    frames = ds.load_episode(0).images["agentview"]
    err = np.abs(frames.astype(int) - ep.images["agentview"]).mean()
    assert err < {"h264": 2.0, "h264-444": 2.0, "h264-lossless": 0.6, "av1": 6.0}[preset], err
    with pytest.raises(World2ActError, match="--video-codec"):
        LeRobotDatasetWriter(tmp_path / "x", spec, video="vp9")


def test_odd_size_needs_444(tmp_path):
    spec = make_spec(sim_state_dim=None, cameras=("agentview",), size=(31, 32))
    with pytest.raises(World2ActError, match="h264-444"):
        LeRobotDatasetWriter(tmp_path / "ds", spec)
    _write(tmp_path / "ok", [make_episode(0, T=4, spec=spec)], spec=spec, video="h264-444")
    assert LeRobotDataset(tmp_path / "ok").load_episode(0).images["agentview"].shape == (4, 31, 32, 3)


def test_tasks_parquet_as_pandas_index(tmp_path):
    """LeRobot writes tasks.parquet from pandas: the task string is the index (stored as
    ``__index_level_0__``), ``task_index`` the only column."""
    root = tmp_path / "ds"
    spec = make_spec(cameras=())
    _write(root, [make_episode(i, spec=spec) for i in range(3)], spec=spec)
    tasks = LeRobotDataset(root).tasks
    order = [1, 0]  # rows need not be sorted by task_index
    meta = {"index_columns": ["__index_level_0__"], "column_indexes": [], "columns": [
        {"name": "task_index", "field_name": "task_index", "pandas_type": "int64", "numpy_type": "int64", "metadata": None},
        {"name": None, "field_name": "__index_level_0__", "pandas_type": "unicode", "numpy_type": "object", "metadata": None}]}
    t = pa.table({"task_index": pa.array(order, pa.int64()),
                  "__index_level_0__": pa.array([tasks[j] for j in order], pa.large_string())})
    pq.write_table(t.replace_schema_metadata({b"pandas": json.dumps(meta).encode()}), root / TASKS_PATH)
    ds = LeRobotDataset(root)
    assert ds.tasks == tasks and ds.episode_meta(1)["task"] == tasks[1]
    # without pandas metadata the one string column is taken
    pq.write_table(t, root / TASKS_PATH)
    assert LeRobotDataset(root).tasks == tasks
    # no task strings at all: a one-line error naming the file
    pq.write_table(pa.table({"task_index": pa.array([0, 1], pa.int64())}), root / TASKS_PATH)
    with pytest.raises(World2ActError, match="tasks.parquet: no task strings"):
        LeRobotDataset(root)


def _pack_like_lerobot(root, eps, cams, gop=None):
    """Rewrite a dataset of ours the way LeRobot lays it out: every episode's rows in one data
    file, every camera's episodes in one mp4 (from/to timestamps), tasks as the pandas index,
    no world2act section in info.json, no gripper-width feature."""
    n = len(eps)
    tables = [pq.read_table(root / DATA_PATH.format(chunk_index=0, file_index=i)) for i in range(n)]
    packed = pa.concat_tables(tables).drop(["observation.gripper_width"])
    for i in range(n):
        (root / DATA_PATH.format(chunk_index=0, file_index=i)).unlink()
    pq.write_table(packed, root / DATA_PATH.format(chunk_index=0, file_index=0))
    starts = np.cumsum([0] + [len(e) for e in eps])
    for cam in cams:
        key = f"observation.images.{cam}"
        vids = [root / VIDEO_PATH.format(video_key=key, chunk_index=0, file_index=i) for i in range(n)]
        allf = np.concatenate([e.images[cam] for e in eps])
        for v in vids:
            v.unlink()
        write_video(vids[0], allf, 20, gop=gop)
    t = pq.read_table(root / EPISODES_PATH)
    keep = [c for c in t.column_names if not (c in ("task_index", "success", "meta_json", "sim_state_width")
                                                or c.startswith("episode_meta/"))]
    t = t.select(keep)
    for name in t.column_names:
        if name.endswith("file_index") and not name.startswith("meta/"):
            t = t.set_column(t.column_names.index(name), name, pa.array([0] * n, pa.int64()))
    for cam in cams:
        for col, vals in (("from_timestamp", starts[:-1] / 20), ("to_timestamp", starts[1:] / 20)):
            k = f"videos/observation.images.{cam}/{col}"
            t = t.set_column(t.column_names.index(k), k, pa.array(vals.astype(float)))
    pq.write_table(t, root / EPISODES_PATH)
    info = json.loads((root / "meta/info.json").read_text())
    del info["world2act"]
    del info["features"]["observation.gripper_width"]
    (root / "meta/info.json").write_text(json.dumps(info))


def test_reads_a_lerobot_layout_and_seeks_in_shared_videos(tmp_path, monkeypatch):
    """Several episodes per data file and per mp4: each episode gets exactly its own frames,
    found by seeking to its from_timestamp (not by decoding the file from the start)."""
    spec = make_spec(cameras=("image",), size=(32, 32))
    eps = []
    for i, T in enumerate((40, 33, 47)):
        e = make_episode(i, T=T, spec=spec)
        e.images = {"image": _numbered_frames(T, offset=7 * i)}
        eps.append(e)
    root = tmp_path / "ds"
    _write(root, eps, spec=spec)
    _pack_like_lerobot(root, eps, ["image"], gop=10)
    ds = LeRobotDataset(root)
    assert ds.spec.has_gripper_width is False and ds.spec.sim_state_dim == 12
    assert ds.cameras == ("image",) and ds.camera_keys == {"image": "observation.images.image"}
    assert ds.spec.action_names[-1] == "gripper"
    import av

    decoded = []
    real_open = av.open

    class Counting:
        def __init__(self, c):
            self.c = c

        def __enter__(self):
            return self

        def __exit__(self, *a):
            self.c.close()

        def __getattr__(self, name):
            return getattr(self.c, name)

        def decode(self, *a, **k):
            for f in self.c.decode(*a, **k):
                decoded.append(f.pts)
                yield f

    monkeypatch.setattr(av, "open", lambda *a, **k: Counting(real_open(*a, **k)))
    for i, e in enumerate(eps):
        decoded.clear()
        r = ds.load_episode(i)
        np.testing.assert_array_equal(r.actions, e.actions)
        np.testing.assert_array_equal(r.sim_states, e.sim_states)  # no sim_state_width column: full width
        assert np.isnan(r.gripper_width).all() and r.gripper_width.shape == (len(e),)
        assert r.task == e.task and ds.episode_meta(i)["success"] is True
        np.testing.assert_array_equal(_frame_number(r.images["image"]), (np.arange(len(e)) + 7 * i) % 18)
        assert len(decoded) <= len(e) + 10, (i, len(decoded))  # one GOP of lead-in at most
    # the segmenter's fast path reads no video at all
    decoded.clear()
    ds.load_episode(2, load_images=False)
    assert decoded == []


def test_read_video_span(tmp_path):
    frames = _numbered_frames(60)
    p = tmp_path / "v.mp4"
    write_video(p, frames, 20, gop=8)
    got = read_video_span(p, 25 / 20, 20, 20)
    np.testing.assert_array_equal(_frame_number(got), np.arange(25, 45) % 18)
    assert np.abs(read_video_span(p, 0.0, 60, 20).astype(int) - read_video(p)).max() == 0
    with pytest.raises(World2ActError, match="has 10 frames in the span"):
        read_video_span(p, 50 / 20, 20, 20)


def test_foreign_dataset_without_action_is_refused(tmp_path):
    root = tmp_path / "ds"
    spec = make_spec(cameras=())
    _write(root, [make_episode(0, spec=spec)], spec=spec)
    info = json.loads((root / "meta/info.json").read_text())
    del info["world2act"]
    del info["features"]["action"]
    (root / "meta/info.json").write_text(json.dumps(info))
    with pytest.raises(World2ActError, match="no 'action' feature") as e:
        LeRobotDataset(root)
    assert "\n" not in str(e.value)


def test_camera_names_and_optional_state(tmp_path):
    """Any camera key (``observation.image``) and a dataset without observation.state."""
    spec = make_spec(sim_state_dim=None, cameras=("front",), size=(16, 16))
    ep = make_episode(0, T=6, spec=spec)
    root = tmp_path / "ds"
    _write(root, [ep], spec=spec)
    info = json.loads((root / "meta/info.json").read_text())
    del info["world2act"]
    info["features"]["observation.image"] = info["features"].pop("observation.images.front")
    del info["features"]["observation.state"]
    (root / "meta/info.json").write_text(json.dumps(info))
    src = root / VIDEO_PATH.format(video_key="observation.images.front", chunk_index=0, file_index=0)
    dst = root / VIDEO_PATH.format(video_key="observation.image", chunk_index=0, file_index=0)
    dst.parent.mkdir(parents=True)
    src.rename(dst)
    t = pq.read_table(root / EPISODES_PATH)
    t = t.rename_columns([c.replace("observation.images.front", "observation.image") for c in t.column_names])
    pq.write_table(t, root / EPISODES_PATH)
    ds = LeRobotDataset(root)
    assert ds.cameras == ("image",) and ds.spec.state_dim == 0
    r = ds.load_episode(0)
    assert r.states.shape == (6, 0) and r.images["image"].shape == (6, 16, 16, 3)
    assert np.abs(r.images["image"].astype(int) - ep.images["front"]).mean() < 6  # 4:2:0 at 16x16


def test_resume_of_a_dataset_written_before_the_lerobot_stats(tmp_path):
    """Older datasets: per-episode image stats flat [3] without quantiles and no per-episode
    numeric stats. Resuming and finalizing gives complete (3, 1, 1) statistics."""
    spec = make_spec(sim_state_dim=12, cameras=("agentview",), size=(32, 32))
    root = tmp_path / "ds"
    _write(root, [make_episode(i, T=10, spec=spec) for i in range(2)], spec=spec)
    t = pq.read_table(root / EPISODES_PATH)
    legacy = {}
    for name in t.column_names:
        if not name.startswith("stats/"):
            legacy[name] = t.column(name)
        elif name.startswith("stats/observation.images.agentview/") and name.split("/")[-1] in ("mean", "std", "min", "max", "count"):
            vals = [np.asarray(v).reshape(-1).tolist() for v in t.column(name).to_pylist()]
            legacy[name] = pa.array(vals)
    pq.write_table(pa.table(legacy), root / EPISODES_PATH)
    w = LeRobotDatasetWriter(root, spec, resume=True)
    w.add_episode(make_episode(2, T=10, spec=spec))
    w.finalize()
    st = LeRobotDataset(root).stats["observation.images.agentview"]
    assert set(st) == {"mean", "std", "min", "max", "q01", "q10", "q50", "q90", "q99", "count"}
    assert all(np.asarray(v).shape == (3, 1, 1) for k, v in st.items() if k != "count") and st["count"] == [30]
    t = pq.read_table(root / EPISODES_PATH)
    assert all(np.asarray(v).shape == (3, 1, 1) for v in t.column("stats/observation.images.agentview/q50").to_pylist())


def test_image_features_stored_in_parquet(tmp_path):
    """LeRobot's ``image`` dtype: PNG bytes in the data parquet (struct {bytes, path})."""
    import io

    from PIL import Image

    spec = make_spec(sim_state_dim=None, cameras=(), size=(16, 16))
    ep = make_episode(0, T=5, spec=spec)
    root = tmp_path / "ds"
    _write(root, [ep], spec=spec)
    frames = _numbered_frames(5, 16, 16)
    cells = []
    for f in frames:
        buf = io.BytesIO()
        Image.fromarray(f).save(buf, format="PNG")
        cells.append({"bytes": buf.getvalue(), "path": None})
    p = root / DATA_PATH.format(chunk_index=0, file_index=0)
    t = pq.read_table(p)
    pq.write_table(t.append_column("observation.images.top", pa.array(cells)), p)
    info = json.loads((root / "meta/info.json").read_text())
    del info["world2act"]
    info["features"]["observation.images.top"] = {"dtype": "image", "shape": [16, 16, 3],
                                                  "names": ["height", "width", "channels"]}
    (root / "meta/info.json").write_text(json.dumps(info))
    ds = LeRobotDataset(root)
    assert ds.cameras == ("top",)
    np.testing.assert_array_equal(ds.load_episode(0).images["top"], frames)  # PNG: lossless
