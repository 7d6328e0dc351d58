"""`world2act segment --gripper-from`: the closure signal from a gripper action/state dimension."""
from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from world2act import World2ActError
from world2act.cli import main as cli_main
from world2act.data import DatasetSpec, LeRobotDataset, LeRobotDatasetWriter
from world2act.skills.contacts import signal_range, width_from_command
from world2act.skills.segment import SegmentConfig, run

from skills_synth import PNP, make_episode

PNP2 = "pick up the cream cheese and place it in the basket"


def _episode(T: int, grasps, held: float, task: str = PNP, seed: int = 0):
    """Instant closures (a step-shaped width) so every signal switches on the same frames:
    width 0.08 open / ``held`` closed, command +1 while closed, fingers at ±width/2."""
    w = np.full(T, 0.08)
    for a, b in grasps:
        w[a:b] = held
    ep = make_episode(task, w, sim_dim=5, meta={"seed": seed})
    closed = w < 0.08 - 1e-9
    ep.actions[:, 6] = np.where(closed, 1.0, -1.0)
    ep.states[:, 6], ep.states[:, 7] = w / 2, -w / 2
    return ep


def _spec(**kw):
    return DatasetSpec(fps=20, action_dim=7, state_dim=8, cameras=("agentview",), image_size=(16, 16),
                       benchmark="libero_object", robot_type="panda", sim_state_dim=5, **kw)


@pytest.fixture
def step_datasets(tmp_path):
    """The same five episodes twice: with observation.gripper_width, and without it (as a
    LeRobot dataset that records only actions and states)."""
    eps = [_episode(90, [(30, 60)], 0.063, seed=0), _episode(100, [(25, 70)], 0.001, PNP2, seed=1),
           _episode(85, [(20, 30), (40, 62)], 0.063, seed=2),  # a retried grasp
           _episode(95, [(33, 80)], 0.005, seed=3), _episode(80, [], 0.0, seed=4)]  # no closure
    roots = {}
    for name, spec in (("width", _spec()), ("nowidth", _spec(has_gripper_width=False))):
        root = tmp_path / name
        with LeRobotDatasetWriter(root, spec) as w:
            for e in eps:
                w.add_episode(e if spec.has_gripper_width else
                              dataclasses.replace(e, gripper_width=np.full(len(e), np.nan, np.float32)))
        roots[name] = root
    return roots


def _events(out):
    seg = json.loads((out / "meta/skill_segments.json").read_text())
    return [([(e["kind"], e["index"], e["end"]) for e in s["events"]], s["reason"],
             [(c["frame_from"], c["frame_to"]) for c in s.get("clips", [])]) for s in seg]


def test_gripper_from_gives_the_width_events(step_datasets, tmp_path):
    ref = tmp_path / "ref"
    run(SegmentConfig(dataset=str(step_datasets["width"]), out=str(ref), progress=False))
    expected = _events(ref)
    assert [len(e[0]) for e in expected] == [2, 2, 4, 2, 0]
    for spec in ("action:6", "action:gripper", "state:6", "state:finger_left", "state:7:close-high"):
        for name in ("width", "nowidth"):
            out = tmp_path / f"{name}-{spec.replace(':', '_')}"
            stats = run(SegmentConfig(dataset=str(step_datasets[name]), out=str(out), progress=False, gripper_from=spec))
            assert _events(out) == expected, (spec, name)
            c = stats["contact"]
            assert c["w_open"] == 1.0 and c["tau"] == (0.5 if spec.startswith("action") else 0.1)
            assert c["signal"].startswith("action[6] 'gripper'" if spec.startswith("action") else "observation.state[")
    # the skill dataset of a dataset without widths has none either, and keeps the clips exact
    out = tmp_path / "nowidth-action_6"
    skills = LeRobotDataset(out)
    assert skills.spec.has_gripper_width is False and "observation.gripper_width" not in skills.features
    src = LeRobotDataset(step_datasets["nowidth"])
    m = skills.episode_meta(1)
    np.testing.assert_array_equal(skills.load_episode(1).actions,
                                  src.load_episode(m["source_episode"]).actions[m["frame_from"]:m["frame_to"]])


def test_without_width_the_flag_is_named(step_datasets, tmp_path, capsys):
    rc = cli_main(["segment", "--dataset", str(step_datasets["nowidth"]), "--out", str(tmp_path / "o"), "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "\n" not in err and "observation.gripper_width" in err and "--gripper-from action:DIM" in err
    assert "'gripper'" in err  # the action names help choose the dimension
    rc = cli_main(["segment", "--dataset", str(step_datasets["nowidth"]), "--out", str(tmp_path / "o"), "--no-progress",
                   "--gripper-from", "action:gripper"])
    assert rc == 0 and "4/5 episodes synchronised" in capsys.readouterr().out


@pytest.mark.parametrize("spec,needles", [
    ("action:9", ["feature 'action'", "7 dimension(s)", "0..6"]),
    ("action:grip", ["feature 'action'", "no dimension named 'grip'", "gripper"]),
    ("state:-1", ["feature 'observation.state'", "8 dimension(s)"]),
    ("torque:0", ["no numeric feature 'torque'", "action"]),
    ("observation.images.agentview:0", ["no numeric feature 'observation.images.agentview'"]),
    ("gripper", ["expected SOURCE:DIM"]),
    ("action:6:sideways", ["convention 'sideways'", "feature 'action'"]),
])
def test_bad_gripper_from_is_one_line(step_datasets, tmp_path, capsys, spec, needles):
    root = step_datasets["nowidth"]
    with pytest.raises(World2ActError) as e:
        run(SegmentConfig(dataset=str(root), out=str(tmp_path / "o"), progress=False, gripper_from=spec))
    msg = str(e.value)
    assert "\n" not in msg and str(root) in msg and f"--gripper-from {spec!r}" in msg
    for n in needles:
        assert n in msg, (n, msg)
    assert not (tmp_path / "o").exists()
    rc = cli_main(["segment", "--dataset", str(root), "--out", str(tmp_path / "o"), "--gripper-from", spec])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err.startswith("error:") and "\n" not in err


def test_w_open_benchmark_is_refused_and_constant_signal(step_datasets, tmp_path):
    with pytest.raises(World2ActError, match="--w-open benchmark"):
        run(SegmentConfig(dataset=str(step_datasets["width"]), out=str(tmp_path / "o"), progress=False,
                          gripper_from="action:6", w_open="benchmark"))
    root = tmp_path / "flat"  # one episode that never closes: the command is constant
    with LeRobotDatasetWriter(root, _spec(has_gripper_width=False)) as w:
        w.add_episode(dataclasses.replace(_episode(60, [], 0.0), gripper_width=np.full(60, np.nan, np.float32)))
    with pytest.raises(World2ActError, match=r"action\[6\] 'gripper' \(close-high\) is constant"):
        run(SegmentConfig(dataset=str(root), out=str(tmp_path / "o2"), progress=False, gripper_from="action:6"))


def test_width_from_command_rule():
    cmd = np.array([-1.0, -1.0, 1.0, 1.0, 0.0])
    lo, hi = signal_range(cmd)
    assert (lo, hi) == pytest.approx((-1.0, 1.0), abs=0.02)
    np.testing.assert_allclose(width_from_command(cmd, -1.0, 1.0, "close-high"), [1, 1, 0, 0, 0.5])
    np.testing.assert_allclose(width_from_command(np.array([0.04, 0.01, 0.05]), 0.01, 0.04, "open-high"), [1, 0, 1])
    with pytest.raises(ValueError, match="constant"):
        width_from_command(cmd, 1.0, 1.0)
