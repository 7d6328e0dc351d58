"""DreamGen baseline (`world2act dreamgen`): frame-pair cutting, label ensembling, un-stitching,
the IDM, bad input, and a smoke-size run end to end on Meta-World with tiny components."""
from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch

from world2act import World2ActError
from world2act.baselines.dreamgen import chunk_frame_pairs, ensemble_labels, pseudo_chunks
from world2act.data import stitch_views, unstitch_views

torch.set_num_threads(1)

TASK = "pick-place-v3"
CAMS = ("corner2", "gripperPOV")


# --------------------------------------------------------------------------- frame pairs
def test_chunk_frame_pairs_follow_the_frame_stride():
    # tiny WM: 17 frames, one every s = 4 steps; K = 16 = 4 frames = one latent frame
    p = chunk_frame_pairs(17, 4, 16)
    assert p.shape == (13, 2) and p[0].tolist() == [0, 4] and p[-1].tolist() == [12, 16]
    assert (p[:, 1] - p[:, 0] == 4).all()
    # a two-clip rollout (1 + 2·16 frames) with a K = 8 policy: pairs two frames apart
    p = chunk_frame_pairs(33, 4, 8)
    assert len(p) == 31 and p[-1].tolist() == [30, 32]
    assert chunk_frame_pairs(4, 4, 16).shape == (0, 2)  # shorter than one chunk
    assert chunk_frame_pairs(5, 4, 16).tolist() == [[0, 4]]
    for bad in ((17, 4, 6), (17, 4, 2), (17, 0, 4)):
        with pytest.raises(World2ActError, match="multiple of the world model's frame stride"):
            chunk_frame_pairs(*bad)


def test_ensemble_labels_average_overlapping_predictions():
    s, K = 2, 4  # pairs start every frame = every 2 steps; a chunk covers 4 steps
    pairs = chunk_frame_pairs(5, s, K)  # starts 0, 1, 2 -> steps 0-3, 2-5, 4-7
    chunks = np.stack([np.full((K, 1), v, np.float32) for v in (1.0, 3.0, 5.0)])
    acts, count, spread = ensemble_labels(chunks, pairs[:, 0], s, num_steps=8)
    assert count.tolist() == [1, 1, 2, 2, 2, 2, 1, 1]
    assert acts[:, 0].tolist() == [1, 1, 2, 2, 4, 4, 5, 5]
    assert spread[:, 0].tolist() == [0, 0, 1, 1, 1, 1, 0, 0]
    # training chunks: cut from the averaged labels, or each pair's own prediction
    ens, _, _ = pseudo_chunks(chunks, pairs, s, 8, ensemble=True)
    raw, _, _ = pseudo_chunks(chunks, pairs, s, 8, ensemble=False)
    assert ens[1, :, 0].tolist() == [2, 2, 4, 4] and raw[1, :, 0].tolist() == [3, 3, 3, 3]
    assert ens.shape == raw.shape == (3, K, 1)


def test_unstitch_inverts_stitch():
    rng = np.random.default_rng(0)
    views = {c: rng.integers(0, 255, (3, 8, 12, 3), dtype=np.uint8) for c in ("a", "b", "c")}
    for layout, cams in (("1x2", ("a", "b")), ("2x2", ("a", "b", "c")), ("1x2", ("a",))):
        back = unstitch_views(stitch_views(views, cams, layout), cams, layout)
        assert list(back) == list(cams)
        for c in cams:
            np.testing.assert_array_equal(back[c], views[c])
    one = unstitch_views(views["a"][0], ("a",), "1x1")
    np.testing.assert_array_equal(one["a"], views["a"][0])
    with pytest.raises(World2ActError, match="layout 1x2 holds 1 to 2"):
        unstitch_views(np.zeros((8, 24, 3), np.uint8), ("a", "b", "c"), "1x2")
    with pytest.raises(World2ActError, match="not divisible"):
        unstitch_views(np.zeros((8, 25, 3), np.uint8), ("a", "b"), "1x2")
    with pytest.raises(World2ActError, match="unknown view layout"):
        unstitch_views(np.zeros((8, 24, 3), np.uint8), ("a",), "3x3")


# --------------------------------------------------------------------------- the IDM
def _moving_square(n: int, T: int, rng):
    """Episodes of a bright square at a random place in every frame; the action of step t is its
    displacement to frame t + 1 (so two frames tell the action), the state its position."""
    from world2act.policies.train_base import Demos

    pos = rng.integers(4, 28, size=(n * T, 2))
    frames = np.zeros((n * T, 32, 32, 3), np.uint8)
    for i, (x, y) in enumerate(pos):
        frames[i, y - 3:y + 3, x - 3:x + 3] = 255
    nxt = np.roll(pos, -1, 0)
    acts = ((nxt - pos) / 12.0).astype(np.float32)  # the last step of an episode has no next frame: unused
    return Demos(images={"cam": frames}, states=(pos / 32.0).astype(np.float32), actions=acts,
                 ep_end=np.repeat(np.arange(1, n + 1) * T, T), task_index=np.zeros(n * T, np.int64), tasks=["t"],
                 episodes=n, benchmark=None, fps=20.0)


def test_idm_learns_motion_and_round_trips(tmp_path):
    from world2act.baselines.idm import IDMConfig, IDMTrainConfig, InverseDynamicsModel, pair_starts, train_idm

    K = 1
    demos = _moving_square(6, 40, np.random.default_rng(0))
    assert pair_starts([(0, 5), (5, 7)], 2).tolist() == [0, 1, 2]  # an episode of 2 frames has no 2-step pair
    cfg = IDMConfig(action_dim=2, state_dim=2, chunk_size=K, cameras=("cam",), image_size=(32, 32),
                    channels=(16, 16, 32, 32), hidden=64)
    tcfg = IDMTrainConfig(steps=150, batch_size=32, lr=2e-3, warmup_steps=10, augment_shift=0, heldout_fraction=0.3)
    model, m = train_idm(tcfg, demos, cfg, tmp_path / "idm", seed=0)
    assert m["heldout_episodes"] == 2 and m["train_episodes"] == 4 and m["heldout_pairs"] == 2 * (40 - K)
    assert m["heldout_action_mse"] < 0.5 * m["mean_action_mse"], m  # it reads the motion, not the average
    assert m["heldout_state_mse"] < m["mean_state_mse"]
    back = InverseDynamicsModel.load(tmp_path / "idm")
    a, b = {"cam": demos.images["cam"][:3]}, {"cam": demos.images["cam"][K:K + 3]}
    c1, s1 = model.predict(a, b)
    c2, s2 = back.predict(a, b)
    assert c1.shape == (3, K, 2) and s1.shape == (3, 2)
    np.testing.assert_allclose(c1, c2, atol=1e-6)
    assert json.loads((tmp_path / "idm" / "config.json").read_text())["training"]["steps"] == 150


# --------------------------------------------------------------------------- tiny components
@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from world2act.data import DatasetSpec, Episode, LeRobotDatasetWriter
    from world2act.envs import task_info
    from world2act.policies.flow_policy import FlowPolicy, FlowPolicyConfig
    from world2act.policies.normalizer import Normalizer
    from world2act.worldmodel import WorldModel

    root = tmp_path_factory.mktemp("dreamgen")
    torch.manual_seed(0)
    WorldModel.from_config("tiny", cameras=CAMS, num_frames=9).save(root / "wm")  # 9 frames x stride 4
    instr = task_info("metaworld", TASK).instruction
    rng = np.random.default_rng(0)

    def dataset(name, action_dim=4):
        spec = DatasetSpec(fps=80, action_dim=action_dim, state_dim=4, cameras=CAMS, image_size=(32, 32),
                           benchmark="metaworld")
        with LeRobotDatasetWriter(root / name, spec) as w:
            for _ in range(3):
                T = 30
                w.add_episode(Episode(task=instr, actions=rng.uniform(-1, 1, (T, action_dim)).astype(np.float32),
                                      states=rng.normal(size=(T, 4)).astype(np.float32),
                                      gripper_width=np.ones(T, np.float32),
                                      images={c: rng.integers(0, 255, (T, 32, 32, 3), dtype=np.uint8) for c in CAMS}))
        return root / name

    dataset("demos")
    dataset("demos3", action_dim=3)

    def policy(name, chunk=16, cams=CAMS):
        pc = FlowPolicyConfig(benchmark="metaworld", action_dim=4, state_dim=4, chunk_size=chunk, cameras=cams,
                              image_size=(32, 32), d_model=32, n_heads=2, enc_layers=1, dec_layers=1, ffn_dim=64,
                              flow_steps=2)
        norm = Normalizer.fit_arrays({"observation.state": rng.normal(size=(50, 4)).astype(np.float32),
                                      "action": rng.uniform(-1, 1, (50, 4)).astype(np.float32)})
        FlowPolicy(pc, norm).save(root / name)
        return root / name

    policy("base")
    policy("base_k6", chunk=6)
    # a world model imagining other views (its config alone: the checks never load weights)
    meta = json.loads((root / "wm" / "config.json").read_text())
    meta["config"]["cameras"] = ["corner2", "corner3"]
    (root / "wm_c3").mkdir()
    (root / "wm_c3" / "config.json").write_text(json.dumps(meta))
    return root


def _cli(tiny, out, *extra, policy="base", wm="wm", dataset="demos", benchmark="metaworld"):
    from world2act.cli import main

    return main(["dreamgen", "--policy", str(tiny / policy), "--wm", str(tiny / wm), "--dataset", str(tiny / dataset),
                 "--benchmark", benchmark, "--tasks", TASK, "--init-states", "2", "--imagine-steps", "1",
                 "--idm-steps", "3", "--steps", "3", "--out", str(out), *[e for e in extra if e.startswith("--")],
                 "idm.batch_size=8", "finetune.batch_size=8", "idm.channels=[8,8,16,16]", "idm.hidden=32",
                 *[e for e in extra if not e.startswith("--")]])


@pytest.mark.parametrize("kw, words", [
    (dict(dataset="demos3"), r"mismatched components: policy .*base action_dim = 4 but dataset .*demos3 action_dim = 3"),
    (dict(policy="base_k6"), r"chunk_size = 6 is not a multiple of world model .* frame_stride = 4"),
    (dict(wm="wm_c3"), r"cameras = \['corner2', 'gripperPOV'\] but world model .*wm_c3 imagines \['corner2', 'corner3'\]"),
    (dict(benchmark="libero_object_env"), r"benchmark libero_object_env has no post-training init-state seeds"),
])
def test_bad_input_fails_in_one_line_before_any_work(tiny, tmp_path, capsys, kw, words):
    out = tmp_path / "out"
    rc = _cli(tiny, out, **kw)
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "\n" not in err and err.startswith("error: "), err
    assert re.search(words, err), err
    assert not out.exists()


@pytest.mark.sim
def test_dreamgen_end_to_end_on_metaworld(tiny, tmp_path, monkeypatch):
    from safetensors.torch import load_file

    from world2act.policies.io import load_policy

    monkeypatch.setenv("WORLD2ACT_THREADS", "1")
    out = tmp_path / "dg"
    assert _cli(tiny, out) == 0
    for f in ("idm/config.json", "idm/model.safetensors", "idm/normalizer.safetensors", "idm/metrics.json",
              "pseudo/labels.json", "pseudo/strip.png", "policy/config.json", "policy/model.safetensors",
              "policy/normalizer.safetensors", "metrics.json", "manifest.json", "curve.json"):
        assert (out / f).is_file(), f
    m = json.loads((out / "metrics.json").read_text())
    assert m["idm"]["heldout_episodes"] == 1 and m["idm"]["mean_action_mse"] > 0 and "heldout_action_mse" in m["idm"]
    p = m["pseudo"]
    # 2 init states; "pick up the puck", "place ..." = 2 clips of 9 frames -> 1 + 2*8 = 17 frames, 13 pairs each
    assert (p["trajectories"], p["frames"], p["pairs"], p["samples"]) == (2, 34, 26, 26)
    assert len(p["label_mean"]) == 4 and 0 <= p["clipped_fraction"] <= 1 and "state_mse_frame0" in p
    assert m["budget"]["imagined_trajectories"] == 2 and m["finetune"]["batch_pseudo"] == 4
    labels = json.loads((out / "pseudo" / "labels.json").read_text())
    from world2act.posttrain.loop import posttrain_seeds

    assert [t["seed"] for t in labels["trajectories"]] == posttrain_seeds("metaworld", TASK, 2)  # post-train's pool
    traj = load_file(str(out / "pseudo" / labels["trajectories"][0]["file"]))
    assert traj["video"].shape == (17, 32, 64, 3) and traj["pred_chunks"].shape == (13, 16, 4)
    assert traj["actions"].shape == (64, 4) and traj["pred_states"].shape == (13, 4)
    man = json.loads((out / "manifest.json").read_text())
    assert man["stage"] == "dreamgen" and man["complete"] and man["config"]["finetune"]["pseudo_fraction"] == 0.5

    pol = load_policy(out / "policy", benchmark="metaworld")
    obs = {f"observation.images.{c}": np.zeros((2, 32, 32, 3), np.uint8) for c in CAMS}
    obs.update({"observation.state": np.zeros((2, 4), np.float32), "task": ["pick up the puck"] * 2})
    assert tuple(pol.predict_action_chunk(obs).shape) == (2, 16, 4)
    cfg = json.loads((out / "policy" / "config.json").read_text())
    assert cfg["training"]["method"] == "dreamgen" and cfg["chunk_size"] == 16
    base = load_file(str(tiny / "base" / "model.safetensors"))
    tuned = load_file(str(out / "policy" / "model.safetensors"))
    assert any(not torch.equal(base[k], tuned[k]) for k in base)  # the weights were fine-tuned

    # the imagined videos are World2Act's: post-train's imagine_targets from the same init state gives the same frames
    from world2act.align import AlignmentBundle
    from world2act.align.bundle import AdapterConfig
    from world2act.baselines.dreamgen import imagine_video
    from world2act.envs import make_env
    from world2act.posttrain.loop import imagine_targets
    from world2act.worldmodel import WorldModel

    wm = WorldModel.load(tiny / "wm")
    bundle = AlignmentBundle(AdapterConfig(action_dim=4, chunk_size=16, latent_dim=8, latent_channels=8,
                                           latent_size=(4, 8), cameras=CAMS, layout="1x2"), seed=0)
    seed = labels["trajectories"][0]["seed"]
    env = make_env("metaworld", TASK, camera_size=(32, 32), cameras=CAMS)
    try:
        ours = imagine_video(wm, env, seed, steps=1)
        env.reset(seed=seed)
        first = stitch_views(env.render(CAMS, (32, 32)), CAMS, "1x2")
        theirs = imagine_targets(wm, bundle, first, env.instruction, steps=1, seed=seed)
    finally:
        env.close()
    np.testing.assert_array_equal(ours["video"], theirs["video"])
    np.testing.assert_array_equal(ours["video"], traj["video"].numpy())
    assert ours["prompts"] == theirs["prompts"] == labels["trajectories"][0]["prompts"]

    # --resume: the IDM, the imagined videos and the policy are reused, nothing is rewritten
    stamps = {f: f.stat().st_mtime_ns for f in (out / "idm").glob("*.safetensors")}
    stamps.update({f: f.stat().st_mtime_ns for f in (out / "pseudo").glob("*.safetensors")})
    stamps[out / "policy" / "model.safetensors"] = (out / "policy" / "model.safetensors").stat().st_mtime_ns
    assert _cli(tiny, out, "--resume") == 0
    assert all(f.stat().st_mtime_ns == t for f, t in stamps.items())
    # a changed fine-tuning setting keeps the IDM and the videos but fine-tunes again
    assert _cli(tiny, out, "--resume", "finetune.pseudo_fraction=1.0") == 0
    assert (out / "policy" / "model.safetensors").stat().st_mtime_ns != stamps[out / "policy" / "model.safetensors"]
    assert json.loads((out / "metrics.json").read_text())["finetune"]["batch_real"] == 0
    assert all(f.stat().st_mtime_ns == t for f, t in stamps.items() if "policy" not in str(f))
