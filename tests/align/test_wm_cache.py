"""`world2act align` end to end on a tiny world model and a tiny skill dataset (CPU, seconds)."""
import json

import numpy as np
import pytest
import torch

from world2act import World2ActError
from world2act.align import AlignmentBundle
from world2act.align.wm_cache import clip_windows, window_pair

torch.set_num_threads(1)


def test_clip_windows_follow_latent_action_mapping():
    # defaults: 17 frames, stride 4 -> 64 steps per window, K = 16
    assert clip_windows(65, 17, 4) == [(0, 4)]
    assert clip_windows(64, 17, 4) == [(0, 3)]  # row 64 (end of chunk 4) is not a real frame
    assert clip_windows(40, 17, 4) == [(0, 2)]
    assert clip_windows(150, 17, 4) == [(0, 4), (64, 4), (128, 1)]
    assert clip_windows(16, 17, 4) == []
    assert clip_windows(10, 17, 4) == []
    assert clip_windows(9, 9, 1) == [(0, 2)]  # 9 frames stride 1: K=4, 8 steps per window


def test_window_pair_actions_and_frames():
    L, A = 40, 2
    actions = np.arange(L * A, dtype=np.float32).reshape(L, A)
    frames = np.arange(L, dtype=np.uint8)[:, None, None, None] * np.ones((1, 2, 2, 3), np.uint8)
    video, chunks, mask = window_pair(actions, frames, 0, 17, 4)
    assert video.shape == (17, 2, 2, 3)
    assert video[:, 0, 0, 0].tolist() == [min(4 * i, L - 1) for i in range(17)]  # frame i = row 4i, held at the end
    assert chunks.shape == (4, 16, 2) and mask.tolist() == [True, True, False, False]
    assert np.array_equal(chunks[1], actions[16:32])  # latent frame 2 <- steps [16, 32)
    assert not chunks[2:].any()


@pytest.fixture(scope="module")
def tiny_inputs(tmp_path_factory):
    from world2act.data import DatasetSpec, Episode, LeRobotDatasetWriter
    from world2act.worldmodel import WorldModel

    root = tmp_path_factory.mktemp("align_e2e")
    torch.manual_seed(0)
    WorldModel.from_config("tiny").save(root / "wm")
    (root / "wm" / "clips.json").write_text(json.dumps({"held_out_source_episodes": [1]}))
    spec = DatasetSpec(fps=20, action_dim=3, state_dim=2, cameras=("agentview", "wrist"), image_size=(32, 32))
    rng = np.random.default_rng(0)
    with LeRobotDatasetWriter(root / "skills", spec) as w:
        for demo in range(3):
            for sk in range(2):
                T = 36
                w.add_episode(Episode(
                    task=f"skill {sk}", actions=rng.standard_normal((T, 3)).astype(np.float32),
                    states=np.zeros((T, 2), np.float32), gripper_width=np.zeros(T, np.float32),
                    images={c: rng.integers(0, 255, (T, 32, 32, 3), dtype=np.uint8) for c in spec.cameras},
                    meta={"source_episode": demo, "frame_from": 0, "frame_to": T, "skill_index": sk,
                          "instruction": "do both skills"}))
    return root


def test_align_command_end_to_end(tiny_inputs, capsys):
    from world2act.cli import main

    root = tiny_inputs
    out = root / "out"
    rc = main(["align", "--skills", str(root / "skills"), "--wm", str(root / "wm"), "--out", str(out),
               "steps=6", "eval_every=3", "log_every=3", "batch_size=6", "num_negatives=3"])
    assert rc == 0
    m = json.loads((out / "metrics.json").read_text())
    assert m["data"]["K"] == 16 and m["data"]["T"] == 4 and m["data"]["C"] == 8
    assert m["split"]["source"] == "wm" and m["split"]["heldout_demo_ids"] == [1]  # the WM's held-out demos
    assert m["split"]["train_demos"] == 2
    info = json.loads((out / "cache" / "cache_info.json").read_text())
    assert info["windows"] == 6 and info["valid_latent_frames"] == 12  # 36 steps -> 2 latent frames each
    b = AlignmentBundle.load(out)
    assert (b.config.K, b.config.A, b.config.C, tuple(b.config.latent_size)) == (16, 3, 8, (4, 8))
    assert b.config.frame_stride == 4 and b.config.num_frames == 17 and b.config.layout == "1x2"
    # a second run with --resume reuses the cache (same key) and the finished checkpoint
    rc = main(["align", "--skills", str(root / "skills"), "--wm", str(root / "wm"), "--out", str(out), "--resume",
               "steps=6", "eval_every=3", "log_every=3", "batch_size=6", "num_negatives=3"])
    assert rc == 0


def test_align_command_errors(tiny_inputs, tmp_path, capsys):
    from world2act.cli import main

    assert main(["align", "--skills", str(tmp_path / "nope"), "--wm", str(tiny_inputs / "wm"), "--out", str(tmp_path / "o")]) == 2
    assert "--skills" in capsys.readouterr().err
    assert main(["align", "--skills", str(tiny_inputs / "skills"), "--wm", str(tiny_inputs / "wm"), "--out",
                 str(tmp_path / "o2"), "variant=nope"]) == 2
    assert "variant" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
