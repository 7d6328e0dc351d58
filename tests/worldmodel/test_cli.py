"""End to end on real LeRobot-format datasets: train-wm (skills + episodes), imagine, compare."""
import json

import numpy as np
import pytest
from PIL import Image

from world2act.cli import main as cli

from synthetic import moving_square


def _write(root, episodes):
    from world2act.data import DatasetSpec, Episode, LeRobotDatasetWriter

    spec = DatasetSpec(fps=20, action_dim=7, state_dim=8, cameras=("agentview", "wrist"), image_size=(32, 32))
    with LeRobotDatasetWriter(root, spec) as w:
        for task, frames, meta in episodes:
            T = len(frames)
            w.add_episode(Episode(task=task, actions=np.zeros((T, 7), np.float32), states=np.zeros((T, 8), np.float32),
                                  gripper_width=np.full(T, 0.08, np.float32),
                                  images={"agentview": frames[:, :, :32], "wrist": frames[:, :, 32:]}, meta=meta))


@pytest.fixture(scope="module")
def datasets(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    demos, skills = [], []
    for e in range(4):
        v = moving_square(80, (32, 64), e % 2, e)  # one frame per control step
        instr = "pick up the bowl and place it in the basket"
        demos.append((instr, v, {}))
        for k, (a, b) in enumerate([(0, 40), (40, 80)]):
            skills.append((["pick up the bowl", "place the bowl in the basket"][k], v[a:b],
                           dict(source_episode=e, frame_from=a, frame_to=b, skill_index=k, instruction=instr)))
    _write(root / "demos", demos)
    _write(root / "skills", skills)
    return root


ARGS = ["--model", "tiny", "--steps", "2", "--vae-steps", "1", "--device", "cpu", "threads=1", "batch_size=2",
        "vae_batch=1", "eval_clips=1", "eval_steps=1", "val_fraction=0.25"]


def test_train_imagine_compare(datasets, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("WORLD2ACT_THREADS", "1")  # imagine uses all cores by default
    assert cli(["train-wm", "--dataset", str(datasets / "skills"), "--out", str(tmp_path / "skill"), *ARGS]) == 0
    assert cli(["train-wm", "--dataset", str(datasets / "demos"), "--clips", "episodes",
                "--out", str(tmp_path / "base"), *ARGS]) == 0
    clips = json.loads((tmp_path / "skill" / "clips.json").read_text())
    assert clips["held_out_source_episodes"] == [3]
    c0 = clips["clips"][0]
    assert c0["frame_indices"][:3] == [0, 4, 8] and c0["frame_indices"][-1] == 39 and c0["num_real"] == 10
    base = json.loads((tmp_path / "base" / "clips.json").read_text())["clips"][0]
    assert base["frame_indices"][0] == 0 and base["frame_indices"][-1] == 79

    Image.fromarray(moving_square(1, (32, 64), 0, 9)[0]).save(tmp_path / "first.png")
    assert cli(["imagine", "--wm", str(tmp_path / "skill"), "--image", str(tmp_path / "first.png"),
                "--instruction", "pick up the bowl and place it in the basket", "--steps", "1",
                "--out", str(tmp_path / "im")]) == 0
    info = json.loads((tmp_path / "im" / "prompts.json").read_text())
    assert cli(["imagine", "--wm", str(tmp_path / "skill"), "--dataset", str(datasets / "demos"), "--episode", "3",
                "--instruction", "pick up the bowl and place it in the basket", "--steps", "1",
                "--out", str(tmp_path / "im2")]) == 0
    assert info["skill_prompts"] == ["pick up the bowl", "place the bowl in the basket"]
    assert info["video_shape"] == [33, 32, 64, 3] and info["latents_shape"] == [9, 8, 4, 8]

    from world2act.worldmodel.compare import compare

    res = compare(str(tmp_path / "skill"), str(tmp_path / "base"), str(datasets / "demos"), str(datasets / "skills"),
                  str(tmp_path / "cmp"), steps=1)
    assert set(res["summary"]) == {"skill_wm", "base_wm"}
    assert (tmp_path / "cmp" / "strip_skill_ep3.png").is_file() and (tmp_path / "cmp" / "strip_base_ep3.png").is_file()


def test_bad_inputs(datasets, tmp_path, capsys):
    assert cli(["train-wm", "--dataset", str(datasets / "skills"), "--out", str(tmp_path / "a"),
                "--model", "small", "--device", "cpu"]) == 2
    assert "image size (32, 32)" in capsys.readouterr().err
    assert not (tmp_path / "a").exists()
    assert cli(["imagine", "--wm", str(datasets / "skills"), "--image", "x.png", "--instruction", "x",
                "--out", str(tmp_path / "b")]) == 2
    assert "not a world-model folder" in capsys.readouterr().err
