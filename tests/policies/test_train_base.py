"""Training a tiny base policy for a few steps through `world2act train-base`: it writes a
loadable policy folder, the loss falls on a learnable dataset, and --resume continues."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from world2act import World2ActError
from world2act.cli import main as cli_main
from world2act.policies import load_policy

torch.set_num_threads(1)

TINY = ["d_model=32", "enc_layers=1", "dec_layers=1", "flow_steps=2", "batch_size=16", "warmup_steps=2",
        "save_every=5", "augment_shift=2"]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    from world2act.data import DatasetSpec, Episode, LeRobotDatasetWriter

    root = tmp_path_factory.mktemp("ds") / "demos"
    spec = DatasetSpec(fps=20, action_dim=7, state_dim=8, cameras=("agentview", "wrist"), image_size=(32, 32),
                       benchmark="libero_object")
    rng = np.random.default_rng(0)
    with LeRobotDatasetWriter(root, spec) as w:
        for n in range(4):
            T = 20
            x = rng.uniform(-1, 1, (T, 1)).astype(np.float32)
            acts = np.concatenate([x, np.zeros((T, 5), np.float32), np.sign(x)], 1)  # action = f(state)
            states = np.concatenate([x, rng.normal(size=(T, 7)).astype(np.float32)], 1)
            imgs = np.broadcast_to(((x + 1) * 120).astype(np.uint8).reshape(T, 1, 1, 1), (T, 32, 32, 3)).copy()
            w.add_episode(Episode(task=f"task {n % 2}", actions=acts, states=states,
                                  gripper_width=np.full(T, 0.08, np.float32),
                                  images={"agentview": imgs, "wrist": imgs}, meta={"task_id": n % 2}))
    return root


def test_train_tiny_policy_and_resume(dataset, tmp_path):
    out = tmp_path / "base"
    rc = cli_main(["train-base", "--dataset", str(dataset), "--out", str(out), "--steps", "10", "--threads", "1",
                   *TINY])
    assert rc == 0
    for f in ("config.json", "model.safetensors", "normalizer.safetensors", "metrics.json", "manifest.json",
              "checkpoint/state.json", "checkpoint/normalizer.safetensors"):
        assert (out / f).is_file(), f
    m = json.loads((out / "metrics.json").read_text())
    assert m["steps"] == 10 and m["demonstrations"] == 4 and m["frames"] == 80
    pol = load_policy(out, benchmark="libero_object")
    assert (pol.chunk_size, pol.action_dim, pol.image_size) == (8, 7, (32, 32))
    obs = {"observation.images.agentview": np.zeros((1, 32, 32, 3), np.uint8),
           "observation.images.wrist": np.zeros((1, 32, 32, 3), np.uint8),
           "observation.state": np.zeros((1, 8), np.float32), "task": ["task 0"]}
    assert pol.predict_action_chunk(obs).shape == (1, 8, 7)
    # resume to 20 steps continues from the checkpoint at 10
    rc = cli_main(["train-base", "--dataset", str(dataset), "--out", str(out), "--steps", "20", "--threads", "1",
                   "--resume", *TINY])
    assert rc == 0
    m2 = json.loads((out / "metrics.json").read_text())
    assert m2["steps"] == 20
    curve = json.loads((out / "curve.json").read_text())
    assert [c["step"] for c in curve] == [25 * i for i in range(1, len(curve) + 1)]
    # an existing folder without --resume/--overwrite is refused
    assert cli_main(["train-base", "--dataset", str(dataset), "--out", str(out), *TINY]) == 2


def test_loss_decreases(dataset, tmp_path):
    from world2act.policies.train_base import TrainBaseConfig, run

    cfg = TrainBaseConfig(dataset=str(dataset), steps=60, batch_size=16, d_model=32, enc_layers=1, dec_layers=1,
                          flow_steps=2, warmup_steps=5, save_every=1000, threads=1, lr=3e-3)
    run(cfg, tmp_path / "b")
    curve = json.loads((tmp_path / "b" / "curve.json").read_text())
    assert curve[-1]["loss"] < 0.8 * curve[0]["loss"]


def test_bad_dataset(tmp_path):
    from world2act.policies.train_base import TrainBaseConfig, run

    with pytest.raises(World2ActError, match="no such folder"):
        run(TrainBaseConfig(dataset=str(tmp_path / "nope")), tmp_path / "o")
    assert not (tmp_path / "o").exists()
    assert cli_main(["train-base", "--dataset", str(tmp_path), "--out", str(tmp_path / "o2")]) == 2


def test_log_with_tensorboard_writes_the_loss_curve(dataset, tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = tmp_path / "base"
    assert cli_main(["train-base", "--dataset", str(dataset), "--out", str(out), "--steps", "25", "--threads", "1",
                     "--log-with", "tensorboard", *TINY]) == 0
    ea = EventAccumulator(str(out / "tensorboard"))
    ea.Reload()
    assert {"train/loss", "train/lr", "final/final_loss"} <= set(ea.Tags()["scalars"])
    assert [e.step for e in ea.Scalars("train/loss")] == [25]
    curve = json.loads((out / "curve.json").read_text())
    assert ea.Scalars("train/loss")[0].value == pytest.approx(curve[-1]["loss"], rel=1e-6)
