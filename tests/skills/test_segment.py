import json
import shutil

import numpy as np
import pytest

from world2act import World2ActError
from world2act.cli import main as cli_main
from world2act.data import LeRobotDataset
from world2act.skills.segment import SegmentConfig, run


def _files(root):
    """Every output file's bytes (manifest aside); videos as decoded frames rounded to 8 levels.

    Video bytes are compared loosely because the shared x264 writer (world2act.data.video) was
    seen to encode identical frames to different bytes in rare runs; everything we decide
    (parquet, JSON, PNG) must be byte-identical.
    """
    from world2act.data import read_video

    out = {}
    for p in sorted(root.rglob("*")):
        if not p.is_file() or p.name == "manifest.json":
            continue
        key = p.relative_to(root).as_posix()
        out[key] = (read_video(p).astype(np.int16) // 8).tobytes() if p.suffix == ".mp4" else p.read_bytes()
    return out


def test_segment_end_to_end(demo_dataset, tmp_path, capsys):
    out = tmp_path / "skills"
    rc = cli_main(["segment", "--dataset", str(demo_dataset), "--out", str(out), "--no-progress"])
    assert rc == 0
    assert "5/7 episodes synchronised" in capsys.readouterr().out
    stats = json.loads((out / "meta/skill_stats.json").read_text())
    assert stats["episodes_in"] == 7 and stats["episodes_synced"] == 5 and stats["clips_out"] == 10
    assert stats["sync_rate"] == pytest.approx(5 / 7, abs=1e-4) and stats["retried_grasps_ignored"] == 1
    assert stats["discard_reasons"] == {"extra_events": 1, "missing_events": 1}
    assert stats["contact"]["tau"] == 0.1 and stats["contact"]["w_open"] == pytest.approx(0.08, abs=1e-4)
    assert stats["lengths"]["after"]["count"] == 10 and stats["lengths"]["before"]["count"] == 7
    assert (out / "meta/skill_lengths.png").read_bytes()[:4] == b"\x89PNG"
    assert json.loads((out / "manifest.json").read_text())["complete"]

    skills, src = LeRobotDataset(out), LeRobotDataset(demo_dataset)
    assert skills.num_episodes == 10
    assert skills.tasks == ["pick up the alphabet soup", "place the alphabet soup in the basket"]
    m0, m1 = skills.episode_meta(0), skills.episode_meta(1)
    assert (m0["source_episode"], m0["frame_from"], m0["skill_index"], m0["num_skills"]) == (0, 0, 0, 2)
    assert m0["frame_to"] == m1["frame_from"] and m1["frame_to"] == src.episode_meta(0)["length"]
    assert m0["skill_verb"] == "pick" and m1["skill_verb"] == "place"
    assert m0["instruction"] == src.episode_meta(0)["task"] and m0["seed"] == 0 and m0["task_id"] == 0
    # the pick ends right after the gripper closed (closure starts at frame 30 + ramp)
    assert 31 <= m0["frame_to"] <= 36
    # clips are exact slices of the source: actions, gripper, sim states and frames
    ep, clip = src.load_episode(0), skills.load_episode(1)
    a, b = m1["frame_from"], m1["frame_to"]
    np.testing.assert_array_equal(clip.actions, ep.actions[a:b])
    np.testing.assert_array_equal(clip.sim_states, ep.sim_states[a:b])
    np.testing.assert_array_equal(clip.gripper_width, ep.gripper_width[a:b])
    assert np.abs(clip.images["agentview"].astype(int) - ep.images["agentview"][a:b].astype(int)).mean() < 4

    seg = json.loads((out / "meta/skill_segments.json").read_text())
    assert [s["reason"] for s in seg] == [None] * 4 + ["missing_events", None, "extra_events"]
    assert "ignored 1 retried grasp(s) at frames 20-38" in seg[5]["detail"]
    assert seg[5]["clips"][0]["frame_to"] > 50  # the pick clip holds the failed attempt and the retry

    # deterministic: a second run gives identical files (manifest timestamps aside)
    out2 = tmp_path / "skills2"
    run(SegmentConfig(dataset=str(demo_dataset), out=str(out2), progress=False))
    assert _files(out) == _files(out2)

    # resume after losing the last clips: same result
    out3 = tmp_path / "skills3"
    shutil.copytree(out2, out3)
    with pytest.raises(World2ActError, match="not empty"):
        run(SegmentConfig(dataset=str(demo_dataset), out=str(out3), progress=False))
    run(SegmentConfig(dataset=str(demo_dataset), out=str(out3), progress=False), overwrite=True)
    assert _files(out3) == _files(out)


def test_resume_continues(demo_dataset, tmp_path):
    from world2act.data import LeRobotDatasetWriter

    out = tmp_path / "s"
    run(SegmentConfig(dataset=str(demo_dataset), out=str(out), progress=False))
    full = _files(out)
    # simulate a run killed after 3 clips: rebuild a dataset holding only the first 3
    part = tmp_path / "part"
    ds = LeRobotDataset(out)
    with LeRobotDatasetWriter(part, ds.spec) as w:
        for i in range(3):
            w.add_episode(ds.load_episode(i))
    run(SegmentConfig(dataset=str(demo_dataset), out=str(part), progress=False), resume=True)
    assert _files(part) == full


def test_bad_inputs(demo_dataset, tmp_path):
    from world2act.data import DatasetSpec, LeRobotDatasetWriter
    from skills_synth import make_episode, pnp_episode

    with pytest.raises(World2ActError, match="dataset folder not found"):
        run(SegmentConfig(dataset=str(tmp_path / "nope"), out=str(tmp_path / "o"), progress=False))
    with pytest.raises(World2ActError, match="--decomposer"):
        SegmentConfig(decomposer="gpt")
    with pytest.raises(World2ActError, match="--w-open"):
        SegmentConfig(w_open="wide")

    # NaN widths -> a per-episode discard with its reason; a truncated data file -> an error naming it
    spec = DatasetSpec(fps=20, action_dim=7, state_dim=8, cameras=(), image_size=(8, 8), benchmark="libero_10")
    root = tmp_path / "bad"
    with LeRobotDatasetWriter(root, spec) as w:
        for k in range(3):
            w.add_episode(pnp_episode(90, 30, 60, cams=(), sim_dim=None))
    ep_nan = LeRobotDataset(root).load_episode(1)
    import pyarrow.parquet as pq

    p1 = root / "data/chunk-000/file-001.parquet"
    t = pq.read_table(p1)
    g = t.column("observation.gripper_width").to_numpy().copy()
    g[40] = np.nan
    pq.write_table(t.set_column(t.column_names.index("observation.gripper_width"), "observation.gripper_width",
                                __import__("pyarrow").array(g)), p1)
    p2 = root / "data/chunk-000/file-002.parquet"
    good = p2.read_bytes()
    pq.write_table(pq.read_table(p2).slice(0, 50), p2)  # truncated episode (valid parquet, rows missing)
    with pytest.raises(World2ActError, match=rf"{p2}.*50 rows.*episode 2"):
        run(SegmentConfig(dataset=str(root), out=str(tmp_path / "o2"), progress=False))
    assert not (tmp_path / "o2").exists()
    p2.write_bytes(good)
    stats = run(SegmentConfig(dataset=str(root), out=str(tmp_path / "o2"), progress=False))
    assert stats["episodes_synced"] == 2
    assert stats["discard_reasons"] == {"nan_gripper_width": 1}
    assert ep_nan is not None

    # no gripper signal at all -> a clear error before anything is written
    root2 = tmp_path / "flat"
    with LeRobotDatasetWriter(root2, spec) as w:
        w.add_episode(make_episode("pick up the cup and place it on the plate", np.full(50, 0.04), cams=(), sim_dim=None))
    with pytest.raises(World2ActError, match="no gripper signal"):
        run(SegmentConfig(dataset=str(root2), out=str(tmp_path / "o3"), progress=False))
    assert not (tmp_path / "o3").exists()
    info = json.loads((root2 / "meta/info.json").read_text())
    del info["features"]["observation.gripper_width"]
    (root2 / "meta/info.json").write_text(json.dumps(info))
    with pytest.raises(World2ActError, match="gripper_width"):
        run(SegmentConfig(dataset=str(root2), out=str(tmp_path / "o4"), progress=False))


def test_corrupt_files_are_errors_naming_them_unusable_episodes_are_logged_discards(demo_dataset, tmp_path, caplog):
    """Issue 17: a truncated parquet or mp4 stops ``segment`` with the file's name; readable but
    unusable episodes stay per-episode discards, each logged with its index and reason."""
    import logging

    from world2act.data.lerobot import DATA_PATH, VIDEO_PATH

    # readable but unusable: episode 4 never closes the gripper, episode 6 has too many grasps
    with caplog.at_level(logging.INFO, logger="world2act.skills.segment"):
        stats = run(SegmentConfig(dataset=str(demo_dataset), out=str(tmp_path / "ok"), progress=False))
    discarded = [r for r in json.loads((tmp_path / "ok/meta/skill_segments.json").read_text()) if not r["synced"]]
    assert len(discarded) == sum(stats["discard_reasons"].values()) >= 2
    for r in discarded:
        assert f"episode {r['episode']} discarded: {r['reason']}" in caplog.text

    # a data parquet cut in half: an error naming it, before anything is written
    for kind, path in (("parquet", demo_dataset / DATA_PATH.format(chunk_index=0, file_index=3)),
                       ("mp4", demo_dataset / VIDEO_PATH.format(video_key="observation.images.agentview",
                                                               chunk_index=0, file_index=3))):
        raw = path.read_bytes()
        path.write_bytes(raw[: len(raw) // 2])
        out = tmp_path / f"bad-{kind}"
        with pytest.raises(World2ActError, match=rf"{path}.*episode 3"):
            run(SegmentConfig(dataset=str(demo_dataset), out=str(out), progress=False))
        if kind == "parquet":
            assert not out.exists()
        path.write_bytes(raw)
        if kind == "mp4":  # repaired: --resume finishes the run the error stopped
            stats2 = run(SegmentConfig(dataset=str(demo_dataset), out=str(out), progress=False), resume=True)
            assert stats2["clips_out"] == stats["clips_out"]
    # the CLI: one line, exit status 2
    path = demo_dataset / DATA_PATH.format(chunk_index=0, file_index=0)
    path.write_bytes(path.read_bytes()[:100])
    assert cli_main(["segment", "--dataset", str(demo_dataset), "--out", str(tmp_path / "cli")]) == 2
