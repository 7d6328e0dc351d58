"""`world2act diagnose`: the offline Stage-2 signal table (pairing math, episode grid, end to end)."""
import json
import math
import shutil

import numpy as np
import pytest
import torch

from world2act import World2ActError
from world2act.diagnose import (
    DiagnoseConfig,
    action_sensitivity,
    between_demo_action_distance,
    index_paired_gap,
    paired_cosine,
    per_frame_cosine,
    sample_consistency,
    select_demos,
    shift_pair,
)

torch.set_num_threads(1)


# --------------------------------------------------------------------------- pairing math
def _unit(*shape, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.nn.functional.normalize(torch.randn(*shape, generator=g), dim=-1)


def test_hand_made_pairs_give_exact_cosines():
    e0, e1 = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0])
    v = [torch.stack([e0, e1]), torch.stack([e1, e0])]  # demo 0 goes x then y, demo 1 y then x
    a = [x.clone() * 3.0 for x in v]                    # actions embed exactly like the video (scale is irrelevant)
    r = index_paired_gap(v, a, ["t", "t"])
    assert (r["pos"], r["neg"], r["gap"], r["n_demos"], r["n_gap_pos"], r["chunks"]) == (1.0, 0.0, 1.0, 2, 2, 2.0)
    assert r["gap_std"] == 0.0
    # one chunk of lag: video chunk 0 meets action chunk 1 -> own actions orthogonal, the other demo's identical
    lag = index_paired_gap(v, a, ["t", "t"], shift=1)
    assert (lag["pos"], lag["neg"], lag["gap"], lag["chunks"]) == (0.0, 1.0, -1.0, 1.0)
    back = index_paired_gap(v, a, ["t", "t"], shift=-1)  # video chunk 1 meets action chunk 0
    assert (back["pos"], back["neg"], back["gap"]) == (0.0, 1.0, -1.0)


def test_identical_embeddings_have_a_positive_gap_and_shuffled_ones_none():
    n, T, D = 24, 6, 16
    tasks = [f"task {i % 3}" for i in range(n)]
    v = [_unit(T, D, seed=i) for i in range(n)]
    same = index_paired_gap(v, [x.clone() for x in v], tasks)
    assert same["pos"] == pytest.approx(1.0) and abs(same["neg"]) < 0.15
    assert same["gap"] > 0.8 and same["n_gap_pos"] == n == same["n_demos"]
    # actions unrelated to the video (a random permutation of whole demos and chunks): no signal
    rng = np.random.default_rng(0)
    shuffled = [v[int(j)][torch.from_numpy(rng.permutation(T))] for j in rng.permutation(n)]
    noise = index_paired_gap(v, [_unit(T, D, seed=100 + i) for i in range(n)], tasks)
    assert abs(noise["gap"]) < 0.1 and abs(noise["pos"]) < 0.15
    perm = index_paired_gap(v, shuffled, tasks)
    assert abs(perm["gap"]) < 0.15 and perm["pos"] < 0.5


def test_only_shared_chunks_count_and_lonely_demos_are_left_out():
    D = 4
    v = [_unit(5, D, seed=1), _unit(3, D, seed=2), _unit(4, D, seed=3)]
    a = [v[0][:2].clone(), v[1].clone(), v[2].clone()]  # demo 0 has only two action chunks
    r = index_paired_gap(v, a, ["x", "x", "y"])          # demo 2 is the only one of its task
    assert r["n_demos"] == 2
    assert [p["chunks"] for p in r["per_demo"]] == [2, 3, 4]
    assert r["per_demo"][0]["pos"] == pytest.approx(1.0)
    assert math.isnan(r["per_demo"][2]["neg"]) and math.isnan(r["per_demo"][2]["gap"])
    # demo 0's negative uses min(5, 3) = 3 chunks of demo 1's actions
    want = float(torch.nn.functional.cosine_similarity(v[0][:3], a[1][:3], dim=-1).mean())
    assert r["per_demo"][0]["neg"] == pytest.approx(want, abs=1e-6)
    assert r["pos"] - r["neg"] == pytest.approx(r["gap"])
    easy = index_paired_gap(v, a, ["x", "x", "y"], negatives="other_tasks")
    assert easy["n_demos"] == 3 and easy["per_demo"][2]["negatives"] == 2
    with pytest.raises(World2ActError, match="negatives"):
        index_paired_gap(v, a, ["x", "x", "y"], negatives="all")
    with pytest.raises(World2ActError, match="2 tasks"):
        index_paired_gap(v, a, ["x", "x"])


def test_shift_pair_and_paired_cosine_edges():
    x, y = torch.arange(4.0)[:, None], torch.arange(3.0)[:, None]
    assert [t.tolist() for t in shift_pair(x, y, 2)] == [x.tolist(), [[2.0]]]
    assert [t.tolist() for t in shift_pair(x, y, -3)] == [[[3.0]], y.tolist()]
    assert paired_cosine(x, y, shift=5).numel() == 0
    assert paired_cosine(torch.ones(3, 2), torch.ones(2, 2)).tolist() == pytest.approx([1.0, 1.0])


def test_per_frame_cosine_averages_demos_that_have_the_frame():
    e0, e1 = torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 1.0]])
    a = [torch.cat([e0, e0, e0]), torch.cat([e0, e1])]
    b = [torch.cat([e0, e1, e0]), torch.cat([e0, e1])]
    assert per_frame_cosine(a, b) == pytest.approx([1.0, 0.5, 1.0])


def test_sample_consistency_within_vs_between():
    T, D = 5, 8
    # the world model ignores the init state: every sample of every demo is the same trajectory
    same = [[_unit(T, D, seed=0)] * 2 for _ in range(4)]
    r = sample_consistency(same, ["a", "a", "b", "b"])
    assert r["within"] == pytest.approx(1.0) and r["between_same_task"] == pytest.approx(1.0)
    assert r["within_minus_between"] == pytest.approx(0.0) and r["samples"] == 2
    # each init state has its own trajectory (two samples nearly equal): within ≫ between
    own = []
    for d in range(4):
        base = _unit(T, D, seed=10 + d)
        own.append([base, torch.nn.functional.normalize(base + 0.05 * _unit(T, D, seed=50 + d), dim=-1)])
    r = sample_consistency(own, ["a", "a", "b", "b"])
    assert r["within"] > 0.95 and r["within_minus_between"] > 0.6
    one = sample_consistency([[_unit(T, D)]], ["a"])
    assert math.isnan(one["within"]) and math.isnan(one["between_same_task"])


def test_action_sensitivity_finite_differences():
    g = torch.Generator().manual_seed(0)
    chunks = torch.randn(6, 4, 3, generator=g) * 3
    flat = lambda a: a.flatten(-2)  # noqa: E731  (a linear f_a)
    res = action_sensitivity(flat, chunks, [0.01, 0.1, 1.0], draws=16, generator=g)
    assert [r["eps"] for r in res] == [0.01, 0.1, 1.0]
    assert res[0]["rms_per_element"] == pytest.approx(0.01 / math.sqrt(12))
    omc = [r["one_minus_cos"] for r in res]
    assert 0 <= omc[0] < omc[1] < omc[2] < 0.2
    # for a linear map, 1 − cos ≈ ε²/(2|a|²)·(1 − 1/12·…): grows like ε², so per unit like ε
    assert res[2]["per_unit"] / res[1]["per_unit"] == pytest.approx(10, rel=0.5)
    const = action_sensitivity(lambda a: torch.ones(*a.shape[:-2], 5), chunks, [0.5], draws=2, generator=g)
    assert const[0]["one_minus_cos"] == pytest.approx(0.0, abs=1e-12) and const[0]["n"] == 12
    ref = between_demo_action_distance(flat, [chunks[:3], chunks[3:], chunks[:2]], ["a", "a", "b"])
    assert ref["pairs"] == 3
    assert ref["chunk_norm"] == pytest.approx(float((chunks[:3] - chunks[3:]).flatten(1).norm(dim=-1).mean()), rel=1e-5)


def test_select_demos_two_per_task_first():
    task = {1: "A", 2: "A", 3: "A", 4: "B", 5: "B", 6: "C", 7: "D", 8: "D"}
    ids = list(task)
    assert select_demos(ids, task, 4) == [1, 2, 4, 5]
    assert select_demos(ids, task, 5) == [1, 2, 3, 4, 5]  # a lone 5th demo of D would have no negative
    assert select_demos(ids, task, 7) == [1, 2, 3, 4, 5, 7, 8]
    assert select_demos(ids, task, 0) == [1, 2, 3, 4, 5, 7, 8]  # C has one held-out demo: no negatives
    assert select_demos(ids, task, 3) == [1, 2, 3]
    with pytest.raises(World2ActError, match="no task has two"):
        select_demos([1, 4, 6], task, 8)


def test_config_validation():
    assert DiagnoseConfig(sigmas=["1", "4"]).sigmas == [1.0, 4.0]
    for bad in (dict(episodes=1), dict(sigma=-1), dict(shifts=[0]), dict(samples=0), dict(epsilons=[0.0])):
        with pytest.raises(World2ActError):
            DiagnoseConfig(**bad)


# --------------------------------------------------------------------------- tiny components
TASK_A, TASK_B = "put the red block in the basket", "put the blue block in the bowl"
LENGTHS = [70, 66, 50, 70, 70, 34]          # demos 0-2: task A, 3-5: task B
HELD = [1, 2, 4, 5]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from world2act.align import AlignmentBundle
    from world2act.align.bundle import AdapterConfig
    from world2act.data import DatasetSpec, Episode, LeRobotDatasetWriter
    from world2act.utils.io import write_json
    from world2act.worldmodel import WorldModel

    root = tmp_path_factory.mktemp("diagnose")
    torch.manual_seed(0)
    WorldModel.from_config("tiny").save(root / "wm")
    spec = DatasetSpec(fps=20, action_dim=3, state_dim=2, cameras=("agentview", "wrist"), image_size=(32, 32))
    rng = np.random.default_rng(0)
    tasks = [TASK_A] * 3 + [TASK_B] * 3
    with LeRobotDatasetWriter(root / "demos", spec) as w:
        for task, T in zip(tasks, LENGTHS):
            w.add_episode(Episode(
                task=task, actions=rng.uniform(-1, 1, (T, 3)).astype(np.float32),
                states=np.zeros((T, 2), np.float32), gripper_width=np.zeros(T, np.float32),
                images={c: rng.integers(0, 255, (T, 32, 32, 3), dtype=np.uint8) for c in spec.cameras}))
    write_json(root / "wm" / "clips.json", {
        "held_out_source_episodes": HELD,
        "clips": [{"source_episode": i, "instruction": t} for i, t in enumerate(tasks)]})
    bundle = AlignmentBundle(AdapterConfig(action_dim=3, chunk_size=16, latent_dim=8, latent_channels=8,
                                           latent_size=(4, 8), cameras=("agentview", "wrist"), layout="1x2",
                                           sigma=0.1), seed=0)
    bundle.normalizer.fit(torch.from_numpy(rng.uniform(-1, 1, (100, 3)).astype(np.float32)))
    bundle.save(root / "align")
    write_json(root / "align" / "metrics.json", {"split": {"source": "wm", "heldout_demo_ids": HELD}})
    return root


def test_episode_grid_is_consecutive_chunks_from_the_start(tiny):
    from world2act.data import LeRobotDataset
    from world2act.diagnose import load_demo
    from world2act.worldmodel.configs import get_config

    ds = LeRobotDataset(tiny / "demos")
    wc = get_config("tiny")
    demo = load_demo(ds, 1, wc, ["p"])
    acts = ds.load_episode(1, load_images=False).actions
    assert demo.valid == [4] and demo.chunks.shape == (4, 16, 3)  # 66 rows: chunks end at rows 16..64
    np.testing.assert_array_equal(demo.chunks.reshape(-1, 3), acts[:64])
    assert demo.videos.shape == (1, 17, 32, 64, 3) and demo.first_frame.shape == (32, 64, 3)
    ep = ds.load_episode(1)
    np.testing.assert_array_equal(demo.videos[0, 3, :, :32], ep.images["agentview"][12])  # frame i = row 4i
    long = load_demo(ds, 0, get_config("tiny", num_frames=9), ["p"])  # 9-frame clips: windows at 0, 32 (K = 16)
    assert long.valid == [2, 2] and long.chunks.shape == (4, 16, 3)
    np.testing.assert_array_equal(long.chunks.reshape(-1, 3), ds.load_episode(0, load_images=False).actions[:64])


def test_diagnose_end_to_end(tiny, capsys, monkeypatch):
    from world2act.cli import main

    monkeypatch.setenv("WORLD2ACT_THREADS", "1")  # the command would take every core (2 threads: 4x slower under load)

    out = tiny / "out"
    rc = main(["diagnose", "--wm", str(tiny / "wm"), "--align", str(tiny / "align"), "--dataset", str(tiny / "demos"),
               "--out", str(out), "--episodes", "4", "--samples", "2", "--imagine-steps", "1", "--sigmas", "1,4",
               "eps_draws=2"])
    assert rc == 0
    r = json.loads((out / "diagnose.json").read_text())
    assert r["heldout"]["used"] == HELD and r["heldout"]["source"] == "world model ∩ align"
    assert r["heldout"]["tasks"] == {TASK_A: [1, 2], TASK_B: [4, 5]}
    rows = {x["key"]: x for x in r["rows"]}
    assert list(rows) == ["real_sigma0.1", "real_sigma0.1_other_tasks", "real_sigma0.1_shift+1",
                          "real_sigma0.1_shift-1", "real_sigma1", "real_sigma4", "imagined"]
    # chunks per demo on the episode grid: 66, 50, 70, 34 rows -> 4, 3, 4, 2 chunks
    assert [p["chunks"] for p in rows["real_sigma0.1"]["per_demo"]] == [4, 3, 4, 2]
    assert [p["chunks"] for p in rows["real_sigma0.1_shift+1"]["per_demo"]] == [3, 2, 3, 1]
    for row in r["rows"]:
        assert row["n_demos"] == 4 and 0 <= row["n_gap_pos"] <= 4
        assert -1 <= row["pos"] <= 1 and -1 <= row["neg"] <= 1
        assert row["gap"] == pytest.approx(row["pos"] - row["neg"]) and row["gap_std"] >= 0
    # the imagination: 2 skills x 1 clip x 4 latent frames = 8 chunks, paired with the demos' 2..4
    iv = r["imagined_vs_real"]
    assert iv["imagined_chunks"] == 8 and iv["real_chunks"] == 3.25 and len(iv["per_frame_own"]) == 4
    assert all(-1 <= x <= 1 for x in (iv["own"], iv["other_demos"], iv["real_vs_other_real"]))
    s = r["samples"]
    assert s["samples"] == 2 and s["n_demos"] == 4 and -1 <= s["within"] <= 1 and -1 <= s["between_other_tasks"] <= 1
    pert = r["action_sensitivity"]["perturbations"]
    assert [p["eps"] for p in pert] == [0.1, 0.3, 1.0] and all(p["per_unit"] > 0 for p in pert)
    assert pert[0]["n"] == 2 * 13  # two draws x 13 chunks
    assert r["action_sensitivity"]["between_demos"]["pairs"] == 3 + 2  # task A: min(4,3), task B: min(4,2)
    md = (out / "diagnose.md").read_text()
    assert "| real video, x0 at σ = 0.1, episode grid |" in md and "within − between" in md and "(1 − cos) / ε" in md
    man = json.loads((out / "manifest.json").read_text())
    assert man["stage"] == "diagnose" and man["complete"] and man["config"]["samples"] == 2
    assert "real_sigma0.1" in man["metrics"]
    assert "gap" in capsys.readouterr().out
    assert not list(out.glob(".*.tmp*"))  # atomic writes leave no temporary files
    # a second run into the same folder is refused without --overwrite
    args = ["diagnose", "--wm", str(tiny / "wm"), "--align", str(tiny / "align"), "--dataset", str(tiny / "demos"),
            "--out", str(out), "--no-imagine", "--sigmas", "2", "--episodes", "0"]
    assert main(args) == 2
    assert "not empty" in capsys.readouterr().err
    assert main(args + ["--overwrite", "shifts=[2]"]) == 0  # real video only: no imagination rows
    r = json.loads((out / "diagnose.json").read_text())
    assert [x["key"] for x in r["rows"]] == ["real_sigma0.1", "real_sigma0.1_other_tasks", "real_sigma0.1_shift+2",
                                            "real_sigma2"]
    assert "samples" not in r and "imagined_vs_real" not in r and "imagination" not in r["timings_s"]
    assert r["rows"][0]["per_demo"] == rows["real_sigma0.1"]["per_demo"]  # same seed, same x0 noise, same numbers
    assert "+2 chunks (+32 steps)" in (out / "diagnose.md").read_text()


# --------------------------------------------------------------------------- bad input
def _light_wm(tiny, tmp_path, held=HELD, name="wm_light"):
    """The WM folder's config and clips.json only: a check that loaded the weights would fail on it."""
    from world2act.utils.io import write_json

    wm = tmp_path / name
    wm.mkdir()
    shutil.copy(tiny / "wm" / "config.json", wm / "config.json")
    clips = json.loads((tiny / "wm" / "clips.json").read_text())
    write_json(wm / "clips.json", {**clips, "held_out_source_episodes": held})
    return wm


def _align(tiny, tmp_path, **kw):
    from world2act.align import AlignmentBundle
    from world2act.align.bundle import AdapterConfig

    cfg = dict(action_dim=3, chunk_size=16, latent_dim=8, latent_channels=8, latent_size=(4, 8),
               cameras=("agentview", "wrist"), layout="1x2")
    cfg.update(kw)
    d = tmp_path / "align_bad"
    AlignmentBundle(AdapterConfig(**cfg), seed=0).save(d)
    return d


def _run_cli(capsys, wm, align, dataset, out):
    from world2act.cli import main

    rc = main(["diagnose", "--wm", str(wm), "--align", str(align), "--dataset", str(dataset), "--out", str(out)])
    err = capsys.readouterr().err.strip()
    return rc, err


@pytest.mark.parametrize("kw, words", [
    (dict(action_dim=4), "dataset .* action_dim = 3 but align .* action_dim = 4"),
    (dict(chunk_size=8), "chunk size .* = 16 but align .* chunk_size = 8"),
    (dict(latent_channels=16), "latent_channels = 8 but align .* latent_channels = 16"),
    (dict(cameras=("agentview",), layout="1x1"), "cameras = \\['agentview', 'wrist'\\] but align .* \\['agentview'\\]"),
])
def test_mismatched_components_fail_in_one_line_before_loading(tiny, tmp_path, capsys, kw, words):
    out = tmp_path / "out"
    rc, err = _run_cli(capsys, _light_wm(tiny, tmp_path), _align(tiny, tmp_path, **kw), tiny / "demos", out)
    assert rc == 2 and "\n" not in err and err.startswith("error: mismatched components")
    import re

    assert re.search(words, err), err
    assert not out.exists()


def test_dataset_without_heldout_episodes_is_refused(tiny, tmp_path, capsys):
    out = tmp_path / "out"
    align = tmp_path / "align_none"
    shutil.copytree(tiny / "align", align)
    (align / "metrics.json").unlink()
    rc, err = _run_cli(capsys, _light_wm(tiny, tmp_path, held=[]), align, tiny / "demos", out)
    assert rc == 2 and "no held-out episodes" in err and "lists none" in err and "\n" not in err
    (tmp_path / "wm_light" / "clips.json").unlink()
    rc, err = _run_cli(capsys, tmp_path / "wm_light", align, tiny / "demos", out)
    assert rc == 2 and "no held-out episodes known" in err
    assert not out.exists()


def test_heldout_rules(tiny, tmp_path, capsys):
    from world2act.data import LeRobotDataset
    from world2act.diagnose import heldout_demos

    ds = LeRobotDataset(tiny / "demos")
    wm = _light_wm(tiny, tmp_path, held=[1, 2, 4, 9])
    assert heldout_demos(wm, tiny / "align", ds, "D") == ([1, 2, 4], "world model ∩ align")
    with pytest.raises(World2ActError, match="no demo is held out by both"):
        heldout_demos(_light_wm(tiny, tmp_path, held=[0, 3], name="wm_x"), tiny / "align", ds, "D")
    lone = tmp_path / "align_lone"
    shutil.copytree(tiny / "align", lone)
    (lone / "metrics.json").unlink()
    with pytest.raises(World2ActError, match=r"held-out demos \[9\] lie outside"):
        heldout_demos(wm, lone, ds, "D")
    # a dataset that is not the one the world model came from (instructions differ)
    clips = json.loads((wm / "clips.json").read_text())
    clips["clips"][1]["instruction"] = "open the drawer"
    (wm / "clips.json").write_text(json.dumps(clips))
    with pytest.raises(World2ActError, match="episode 1 is .* but the world model's held-out demo 1 was 'open the drawer'"):
        heldout_demos(wm, tiny / "align", ds, "D")
    # only one held-out demo per task: no negatives
    rc, err = _run_cli(capsys, _light_wm(tiny, tmp_path, held=[1, 4], name="wm_y"), lone, tiny / "demos",
                       tmp_path / "out")
    assert rc == 2 and "no task has two" in err
