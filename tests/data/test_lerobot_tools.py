"""Round trips through LeRobot's own dataset code and lerobot-doctor (marker ``lerobot``).

``lerobot-dataset`` (LeRobot's ``LeRobotDataset``, import name ``ledataset``) does not install
beside this project's pins (it needs av<16, huggingface-hub<0.36, numpy<2.3, packaging<26),
so it lives in a separate interpreter: ``.venv-lerobot`` (made by ``scripts/setup.sh``, so
``make test`` runs these tests), or one named by ``WORLD2ACT_LEROBOT_PYTHON``, or this one if
importable; without any of them these tests are skipped. By hand (docs/data.md)::

    python3 -m venv /tmp/lrvenv && /tmp/lrvenv/bin/pip install torch==2.13.0 \
        && /tmp/lrvenv/bin/pip install lerobot-dataset lerobot-doctor
    WORLD2ACT_LEROBOT_PYTHON=/tmp/lrvenv/bin/python .venv/bin/python -m pytest -m lerobot tests/data

The LeRobot side runs ``tests/lerobot_compat/lerobot_side.py`` with
``tests/lerobot_compat/standin`` on its path (a PyAV-backed stand-in for the few torchvision
names ``ledataset`` imports; torchvision is not installed on these machines).
"""
from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from world2act.cli import main as cli_main
from world2act.data import LeRobotDataset, LeRobotDatasetWriter
from world2act.skills.segment import SegmentConfig, run as segment

from .helpers import make_episode, make_spec

pytestmark = pytest.mark.lerobot

COMPAT = Path(__file__).resolve().parents[1] / "lerobot_compat"
SIDE = COMPAT / "lerobot_side.py"


def _env() -> dict:
    env = dict(os.environ, PYTHONPATH=str(COMPAT / "standin"), HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    env.pop("PYTHONHOME", None)
    return env


@pytest.fixture(scope="module")
def lrpy() -> str:
    candidates = []
    if importlib.util.find_spec("ledataset") is not None:
        candidates.append(sys.executable)
    if os.environ.get("WORLD2ACT_LEROBOT_PYTHON"):
        candidates.append(os.environ["WORLD2ACT_LEROBOT_PYTHON"])
    own = Path(__file__).resolve().parents[2] / ".venv-lerobot" / "bin" / "python"  # made by scripts/setup.sh
    if own.exists():
        candidates.append(str(own))
    for exe in candidates:
        ok = subprocess.run([exe, "-c", "import ledataset.datasets.lerobot_dataset"], env=_env(),
                            capture_output=True, timeout=300)
        if ok.returncode == 0:
            return exe
    pytest.skip("lerobot-dataset not importable here; set WORLD2ACT_LEROBOT_PYTHON to a Python that has it")


def _side(lrpy: str, *args) -> None:
    r = subprocess.run([lrpy, str(SIDE), *map(str, args)], env=_env(), capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]


def _ours(root: Path):
    """3 episodes, 2 cameras at 32x32, LIBERO-like simulator states of different widths."""
    spec = make_spec(sim_state_dim=12, size=(32, 32))
    eps = [make_episode(i, T=20 + i, spec=spec, sim_width=10 + i) for i in range(3)]
    for e in eps:  # agentview: the red level encodes the frame number (step 12)
        e.images["agentview"][..., 0] = (20 + 12 * (np.arange(len(e)) % 18)).astype(np.uint8)[:, None, None]
    with LeRobotDatasetWriter(root, spec) as w:
        for e in eps:
            w.add_episode(e)
    return eps


def test_our_dataset_in_lerobot_reader(lrpy, tmp_path):
    root = tmp_path / "ours"
    eps = _ours(root)
    _side(lrpy, "load", root, tmp_path / "r.json")
    r = json.loads((tmp_path / "r.json").read_text())
    assert r["num_episodes"] == 3 and r["num_frames"] == 63 and r["fps"] == 20
    assert r["features"]["sim_state"] == [12] and all(-1 not in s for s in r["features"].values())
    assert r["names"]["action"] == ["x", "y", "z", "roll", "pitch", "yaw", "gripper"]
    full = {"mean", "std", "min", "max", "q01", "q10", "q50", "q90", "q99", "count"}
    for key in ("observation.images.agentview", "observation.images.wrist"):
        assert set(r["stats_shapes"][key]) == full
        assert all(v == ([1] if s == "count" else [3, 1, 1]) for s, v in r["stats_shapes"][key].items())
    assert r["stats_shapes"]["action"]["q50"] == [7] and r["aggregate_ok"] is True
    assert r["tasks"] == ["put the object 0 in the basket", "put the object 1 in the basket"]
    assert r["chunk_shape"] == [16, 7] and r["chunk_pad"] == [0] * 16
    ds = LeRobotDataset(root)
    for i, (e, got) in enumerate(zip(eps, r["episodes"])):
        assert got["task"] == e.task and got["to"] - got["from"] == len(e)
        np.testing.assert_allclose(got["action_first"], e.actions[0], rtol=1e-6)
        np.testing.assert_allclose(got["action_last"], e.actions[-1], rtol=1e-6)
        assert got["frame_index_last"] == len(e) - 1 and got["timestamp_last"] == pytest.approx((len(e) - 1) / 20)
        ours = ds.load_episode(i)
        for cam in ("agentview", "wrist"):  # LeRobot's decoder (PyAV + swscale) sees the frames we see
            assert got[f"observation.images.{cam}/shape"] == [3, 32, 32]
            np.testing.assert_allclose(got[f"observation.images.{cam}/first_mean"],
                                       ours.images[cam][0].reshape(-1, 3).mean(0), atol=2.5)
            np.testing.assert_allclose(got[f"observation.images.{cam}/last_mean"],
                                       ours.images[cam][-1].reshape(-1, 3).mean(0), atol=2.5)
        red_last = got["observation.images.agentview/last_mean"][0]
        assert round((red_last - 20) / 12) == (len(e) - 1) % 18  # the episode's own last frame


def test_lerobot_appends_to_our_dataset(lrpy, tmp_path):
    root = tmp_path / "ours"
    eps = _ours(root)
    _side(lrpy, "append", root, tmp_path / "a.json")
    a = json.loads((tmp_path / "a.json").read_text())
    assert (a["before"], a["after"], a["frames"]) == (3, 4, 70)
    ds = LeRobotDataset(root)
    assert ds.num_episodes == 4 and ds.tasks[-1] == "appended by lerobot"
    app = ds.load_episode(3)
    np.testing.assert_allclose(app.actions, np.array(a["actions"], np.float32))
    assert app.sim_states.shape == (7, 12) and app.images["wrist"].shape == (7, 32, 32, 3)
    np.testing.assert_array_equal(ds.load_episode(1).sim_states, eps[1].sim_states)
    # and our writer continues after LeRobot's episode; LeRobot still reads the result
    spec = make_spec(sim_state_dim=12, size=(32, 32))
    with LeRobotDatasetWriter(root, spec, resume=True) as w:
        assert w.add_episode(make_episode(7, T=9, spec=spec, sim_width=11)) == 4
    assert [len(LeRobotDataset(root).load_episode(i, load_images=False)) for i in range(5)] == [20, 21, 22, 7, 9]
    _side(lrpy, "load", root, tmp_path / "r.json")
    r = json.loads((tmp_path / "r.json").read_text())
    assert r["num_episodes"] == 5 and r["num_frames"] == 79 and r["aggregate_ok"]


@pytest.mark.parametrize("codec", ["h264", "libsvtav1"])
def test_lerobot_dataset_in_our_reader_and_segment(lrpy, tmp_path, codec, capsys):
    root = tmp_path / f"lr-{codec}"
    _side(lrpy, "create", root, tmp_path / "saved.npz", codec)
    saved = np.load(tmp_path / "saved.npz")
    ds = LeRobotDataset(root)
    assert len(list((root / "data").rglob("*.parquet"))) == 1  # LeRobot packs the episodes
    assert ds.num_episodes == 3 and ds.cameras == ("image", "wrist_image")
    assert ds.spec.has_gripper_width is False and ds.spec.sim_state_dim is None
    assert ds.tasks == ["pick up the alphabet soup and place it in the basket",
                        "pick up the cream cheese and place it in the basket"]
    for i, T in enumerate(saved["lengths"]):
        ep = ds.load_episode(i)
        np.testing.assert_array_equal(ep.actions, saved[f"actions_{i}"])
        np.testing.assert_array_equal(ep.states, saved[f"states_{i}"])
        assert ep.images["image"].shape == (T, 32, 32, 3)
        # the red level encodes the frame number: every frame is the episode's own
        red = ep.images["image"][..., 0].mean(axis=(1, 2))
        np.testing.assert_array_equal(np.rint((red - 20) / 13).astype(int), np.arange(T) % 16)
    # segment: no gripper width -> the flag is named; with it, every episode synchronises
    rc = cli_main(["segment", "--dataset", str(root), "--out", str(tmp_path / "s0"), "--no-progress"])
    assert rc == 2 and "--gripper-from" in capsys.readouterr().err
    out = tmp_path / "skills"
    stats = segment(SegmentConfig(dataset=str(root), out=str(out), progress=False, gripper_from="action:gripper"))
    assert stats["episodes_synced"] == 3 and stats["clips_out"] == 6
    seg = json.loads((out / "meta/skill_segments.json").read_text())
    assert [[(e["kind"], e["index"]) for e in s["events"]] for s in seg] == [
        [("close", 12 + e), ("open", 28 + e)] for e in range(3)]
    skills = LeRobotDataset(out)
    assert skills.num_episodes == 6 and skills.tasks[0] == "pick up the alphabet soup"
    # the fingers follow the command 2 frames late: state-derived events are 2 frames later
    stats = segment(SegmentConfig(dataset=str(root), out=str(tmp_path / "s2"), progress=False,
                                  gripper_from="state:finger_left"))
    seg = json.loads((tmp_path / "s2" / "meta/skill_segments.json").read_text())
    assert stats["episodes_synced"] == 3 and seg[0]["events"][0]["index"] == 14


def test_lerobot_doctor_on_our_dataset(lrpy, tmp_path):
    doctor = Path(lrpy).parent / "lerobot-doctor"
    if not doctor.exists() and shutil.which("lerobot-doctor") is None:
        pytest.skip("lerobot-doctor not installed beside the LeRobot Python")
    root = tmp_path / "ours"
    _ours(root)
    r = subprocess.run([str(doctor if doctor.exists() else "lerobot-doctor"), "check", "-v", str(root)], env=_env(),
                       capture_output=True, text=True, timeout=600)
    text = r.stdout + r.stderr
    for check in ("Metadata & Format Compliance", "Temporal Consistency", "Video Integrity", "Feature Consistency",
                  "Action Quality", "Portability"):
        assert f"[PASS] {check}" in text, (check, text[-3000:])
    assert "[FAIL]" not in text and "not in stats.json" not in text, text[-3000:]
