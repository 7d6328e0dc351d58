"""`world2act wm-eval`: masked PSNR/SSIM, the frame grid, strips, and the command end to end."""
import json
import math

import numpy as np
import pytest
import torch

from world2act import World2ActError
from world2act.worldmodel.evaluate import (
    WMEvalConfig,
    aggregate,
    assemble_windows,
    init_state_dependence,
    outline,
    select_episodes,
    stitch_masks,
    strip_image,
    view_boxes,
    window_starts,
)
from world2act.worldmodel.metrics import masked_psnr, masked_ssim, psnr, psnr_per_frame, ssim, ssim_per_frame


# --------------------------------------------------------------------------- masked metrics
def test_masked_psnr_known_values():
    a = np.zeros((2, 8, 8, 3), np.uint8)
    b = a.copy()
    b[0, :2, :2] = 10   # inside the mask: MSE 100 -> 10·log10(255²/100) = 28.1308 dB
    b[0, 4:, 4:] = 50   # outside the mask: counts for the whole frame only
    mask = np.zeros((2, 8, 8), bool)
    mask[0, :2, :2] = True
    want = 10 * math.log10(255 ** 2 / 100)
    per = psnr_per_frame(b, a, mask)
    assert per[0] == pytest.approx(want) and math.isnan(per[1])  # frame 1 has no masked pixel: left out
    assert masked_psnr(b, a, mask) == pytest.approx(want)
    whole = 10 * math.log10(255 ** 2 / ((4 * 100 + 16 * 2500) / 64))
    assert psnr_per_frame(b, a)[0] == pytest.approx(whole) and psnr(b, a) == pytest.approx((whole + 100) / 2)
    mask[1, 3, 3] = True  # frame 1 identical on its masked pixel: 100 dB
    assert masked_psnr(b, a, mask) == pytest.approx((want + 100) / 2)
    # one mask for every frame
    assert psnr_per_frame(b, a, mask[0]) == pytest.approx([want, 100.0])
    assert math.isnan(masked_psnr(b, a, np.zeros((8, 8), bool)))
    with pytest.raises(ValueError, match="does not fit"):
        psnr_per_frame(b, a, np.zeros((3, 8, 8), bool))


def test_masked_ssim_and_unchanged_whole_frame_ssim():
    rng = np.random.default_rng(0)
    a = rng.integers(0, 255, (3, 16, 16, 3), dtype=np.uint8)
    b = np.clip(a.astype(int) + rng.integers(-40, 40, a.shape), 0, 255).astype(np.uint8)
    assert ssim(a, b) == pytest.approx(float(ssim_per_frame(a, b).mean()))
    assert masked_ssim(a, a, np.ones((16, 16), bool)) == pytest.approx(1.0)
    c = a.copy()
    c[:, 8:] = b[:, 8:]  # bottom half differs
    top, bottom = np.zeros((16, 16), bool), np.zeros((16, 16), bool)
    top[3:5, 4:12], bottom[11:13, 4:12] = True, True  # 7x7 windows entirely inside one half
    assert masked_ssim(c, a, top) == pytest.approx(1.0) and masked_ssim(c, a, bottom) < 0.99
    border = np.zeros((16, 16), bool)
    border[0, :] = True  # no 7x7 window is centred there
    assert math.isnan(masked_ssim(c, a, border))


# --------------------------------------------------------------------------- pure helpers
def test_config_validation():
    for bad in (dict(episodes=-1), dict(steps=0), dict(strip_every=0), dict(strips=-1)):
        with pytest.raises(World2ActError):
            WMEvalConfig(**bad)


def test_select_episodes_one_per_task_in_turn():
    task = {18: "A", 19: "A", 38: "B", 39: "B", 58: "C", 59: "C"}
    assert select_episodes(list(task), task, 3) == [18, 38, 58]
    assert select_episodes(list(task), task, 4) == [18, 19, 38, 58]
    assert select_episodes(list(task), task, 0) == sorted(task)


def test_windows_cover_the_demo_like_a_rollout():
    assert window_starts(1, 17) == [0] and window_starts(17, 17) == [0] and window_starts(18, 17) == [0, 16]
    assert window_starts(22, 17) == [0, 16] and window_starts(34, 17) == [0, 16, 32]
    frames = np.arange(22)
    wins = np.stack([frames[np.minimum(s + np.arange(17), 21)] for s in window_starts(22, 17)])
    np.testing.assert_array_equal(assemble_windows(wins, 22), frames)  # frame i comes back at index i


def test_masks_stitch_like_the_views():
    from world2act.data import stitch_views

    m = {"a": np.zeros((2, 4, 6), bool), "b": np.zeros((2, 4, 6), bool)}
    m["b"][1, 3, 5] = True
    img = stitch_views({c: np.repeat(v[..., None], 3, -1).astype(np.uint8) for c, v in m.items()}, ["a", "b"], "1x2")
    np.testing.assert_array_equal(stitch_masks(m, ["a", "b"], "1x2", (4, 6)), img[..., 0] > 0)
    assert view_boxes(["a", "b"], "1x2", (4, 6)) == {"a": (0, 4, 0, 6), "b": (0, 4, 6, 12)}
    assert stitch_masks(m, ["a", "b"], "2x2", (4, 6)).shape == (2, 8, 12)
    assert view_boxes(["a"], "1x1", (4, 6)) == {"a": (0, 4, 0, 6)}


def test_frame_metrics_views_match_their_crops():
    from world2act.worldmodel.evaluate import frame_metrics

    rng = np.random.default_rng(1)
    real = rng.integers(0, 255, (3, 16, 32, 3), dtype=np.uint8)
    pred = np.clip(real.astype(int) + rng.integers(-60, 60, real.shape), 0, 255).astype(np.uint8)
    masks = np.zeros((3, 16, 32), bool)
    masks[:, 4:12, 6:26] = True  # straddles both views
    boxes = view_boxes(["a", "b"], "1x2", (16, 16))
    r = frame_metrics(pred, real, masks, boxes)
    assert r["all"]["ssim"] == pytest.approx(ssim_per_frame(pred, real))
    assert r["robot"]["psnr"] == pytest.approx(psnr_per_frame(pred, real, masks))
    for cam, (y0, y1, x0, x1) in boxes.items():
        crop = (slice(None), slice(y0, y1), slice(x0, x1))
        assert r[f"{cam}/all"]["ssim"] == pytest.approx(ssim_per_frame(pred[crop], real[crop]))
        assert r[f"{cam}/robot"]["ssim"] == pytest.approx(ssim_per_frame(pred[crop], real[crop], masks[crop]))
        assert r[f"{cam}/robot"]["psnr"] == pytest.approx(psnr_per_frame(pred[crop], real[crop], masks[crop]))


def test_outline_and_strip_image():
    m = np.zeros((6, 6), bool)
    m[1:5, 1:5] = True
    o = outline(m)
    assert o.sum() == 12 and not o[2:4, 2:4].any()  # the 4x4 square's ring
    frames = np.zeros((9, 8, 16, 3), np.uint8)
    masks = np.zeros((9, 8, 16), bool)
    masks[:, 2:6, 2:6] = True
    img = strip_image([("real", frames), ("imagined", frames)], masks, [0, 4, 8], scale=2, header=["a", "b", "c"])
    assert img.dtype == np.uint8 and img.shape == (14 + 2 * (16 + 2), 76 + 3 * (32 + 2), 3)
    magenta = (img == np.array([255, 0, 255])).all(-1)
    assert magenta.sum() == 3 * outline(masks[0].repeat(2, 0).repeat(2, 1)).sum()  # the real row only


def test_aggregate_means_and_latent_frames():
    def demo(vals_all, vals_robot):
        return {"generation": {"all": {"psnr": np.array(vals_all, float), "ssim": np.array(vals_all, float) / 100},
                               "robot": {"psnr": np.array(vals_robot, float), "ssim": np.array(vals_robot, float) / 100}}}

    d0 = demo([10, 10, 10, 10, 20, 20], [1, np.nan, 3, 4, 5, 5])  # 6 frames: latent frames 1 (4) and 2 (2)
    d1 = demo([30, 30, 30, 30], [np.nan] * 4)                     # 4 frames, never a robot pixel
    summary, latent = aggregate([d0, d1])
    assert summary["generation"]["all"]["psnr"] == pytest.approx((40 / 3 + 30) / 2)
    assert summary["generation"]["robot"]["psnr"] == pytest.approx((1 + 3 + 4 + 5 + 5) / 5)  # d1 left out
    assert [r["latent_frame"] for r in latent] == [1, 2] and latent[1]["frames"] == [5, 8]
    assert latent[0]["generation"]["all"]["psnr"] == pytest.approx(20) and latent[0]["n_demos"] == 2
    assert latent[1]["generation"]["all"]["psnr"] == pytest.approx(20) and latent[1]["n_demos"] == 1
    assert latent[0]["generation"]["robot"]["psnr"] == pytest.approx(8 / 3)


# --------------------------------------------------------------------------- end to end (Meta-World, tiny WM)
TASK = "pick-place-v3"
HELD = [1, 2]


@pytest.fixture(scope="module")
def mw_tiny(tmp_path_factory):
    """A tiny world model on Meta-World's cameras and three short random-action demos with sim states."""
    from world2act.data import DatasetSpec, Episode, LeRobotDatasetWriter
    from world2act.envs import make_env
    from world2act.utils.io import write_json
    from world2act.worldmodel import WorldModel

    root = tmp_path_factory.mktemp("wm_eval")
    cams = ("corner2", "gripperPOV")
    torch.manual_seed(0)
    WorldModel.from_config("tiny", cameras=cams).save(root / "wm")
    env = make_env("metaworld", TASK, camera_size=(32, 32), cameras=cams)
    rng = np.random.default_rng(0)
    eps = []
    try:
        for k, T in enumerate([40, 45, 37]):
            env.reset(seed=100 + k)
            sims, imgs, acts = [], {c: [] for c in cams}, []
            for _ in range(T):
                sims.append(env.get_sim_state())
                for c, im in env.render(cams, (32, 32)).items():
                    imgs[c].append(im)
                a = rng.uniform(-1, 1, 4).astype(np.float32)
                acts.append(a)
                env.step(a)
            eps.append(Episode(task=env.instruction, actions=np.stack(acts), states=np.zeros((T, 4), np.float32),
                               gripper_width=np.ones(T, np.float32), images={c: np.stack(v) for c, v in imgs.items()},
                               sim_states=np.stack(sims), meta=dict(benchmark="metaworld", task_id=TASK, seed=100 + k)))
        instruction = env.instruction
    finally:
        env.close()
    spec = DatasetSpec(fps=80, action_dim=4, state_dim=4, cameras=cams, image_size=(32, 32), benchmark="metaworld",
                       robot_type="sawyer", sim_state_dim=int(eps[0].sim_states.shape[1]))
    with LeRobotDatasetWriter(root / "demos", spec) as w:
        for ep in eps:
            w.add_episode(ep)
    write_json(root / "wm" / "clips.json", {"held_out_source_episodes": HELD,
                                           "clips": [{"source_episode": i, "instruction": instruction} for i in range(3)]})
    return root


@pytest.mark.sim
def test_init_state_dependence_tells_own_from_other_demos():
    rng = np.random.default_rng(0)
    reals = {e: rng.integers(0, 256, (6, 8, 8, 3), dtype=np.uint8) for e in (0, 1, 2, 3)}
    masks = {e: np.zeros((6, 8, 8), bool) for e in reals}
    for m in masks.values():
        m[:, :4] = True
    task_of = {0: "a", 1: "a", 2: "a", 3: "b"}  # demo 3 has no other demo of its task: skipped
    follows = init_state_dependence({e: reals[e].copy() for e in reals}, reals, masks, task_of)
    assert follows["demos"] == 3 and [p["others"] for p in follows["per_demo"]] == [[1, 2], [0, 2], [0, 1]]
    assert follows["robot"]["own"] == 100.0 and follows["robot"]["demos_own_above_other"] == 3
    assert follows["robot"]["other"] == pytest.approx(follows["robot"]["real_vs_other"])  # gen = real
    assert follows["all"]["own_minus_other"] > 80
    # an imagination that renders demo 0 whatever the init state: own - other < 0 for demos 1, 2
    typical = init_state_dependence({e: reals[0].copy() for e in reals}, reals, masks, task_of)
    assert typical["robot"]["demos_own_above_other"] == 1
    assert [p["own"]["robot"] < p["other"]["robot"] for p in typical["per_demo"]] == [False, True, True]
    assert init_state_dependence({0: reals[0]}, reals, masks, {0: "a"})["demos"] == 0


def test_wm_eval_end_to_end(mw_tiny, capsys, monkeypatch):
    from world2act.cli import main

    monkeypatch.setenv("WORLD2ACT_THREADS", "1")
    out = mw_tiny / "out"
    args = ["wm-eval", "--wm", str(mw_tiny / "wm"), "--dataset", str(mw_tiny / "demos"), "--out", str(out),
            "--episodes", "0", "--steps", "1", "--strips", "1"]
    assert main(args) == 0
    r = json.loads((out / "wm_eval.json").read_text())
    assert r["heldout"]["used"] == HELD and "Sawyer" in r["robot_pixels"]["metaworld"]
    # 45 and 37 rows at stride 4 -> 12 and 10 real frames; the imagination has 1 + 16·2 = 33 frames
    assert [(p["real_frames"], p["imagined_frames"], p["frames_compared"]) for p in r["per_demo"]] == [(12, 33, 11), (10, 33, 9)]
    for p in r["per_demo"]:
        assert 0 < p["robot_fraction"] < 0.5 and p["frames_with_robot"] == p["frames_compared"]
        assert p["rerender_psnr"] > 25  # the masks line up with the stored frames
    s = r["summary"]
    assert set(s) == {"reconstruction", "generation", "repeat_first"}
    for k in s:
        assert set(s[k]) == {"all", "robot", "corner2/all", "corner2/robot", "gripperPOV/all", "gripperPOV/robot"}
        for reg in s[k].values():
            assert 0 < reg["psnr"] < 100 and -1 <= reg["ssim"] <= 1
    assert [x["latent_frame"] for x in r["per_latent_frame"]] == [1, 2, 3]
    assert r["per_latent_frame"][2]["n_demos"] == 2 and r["per_latent_frame"][2]["frames"] == [9, 12]
    dep = r["init_state_dependence"]
    assert dep["demos"] == (2 if len({p["task"] for p in r["per_demo"]}) == 1 else 0)
    assert r["strips"] == ["strips/episode_000001.png"] and (out / r["strips"][0]).stat().st_size > 0
    from PIL import Image

    assert Image.open(out / r["strips"][0]).size == (76 + 3 * (128 + 2), 14 + 3 * (64 + 2))  # frames 0, 4, 8
    md = (out / "wm_eval.md").read_text()
    assert "| VAE reconstruction |" in md and "PSNR robot" in md and "| corner2 | robot |" in md
    man = json.loads((out / "manifest.json").read_text())
    assert man["stage"] == "wm-eval" and man["complete"] and "generation_robot_psnr" in man["metrics"]
    assert "dB robot" in capsys.readouterr().out
    assert main(args) == 2 and "not empty" in capsys.readouterr().err  # no silent overwrite


@pytest.mark.sim
def test_wm_eval_bad_input(mw_tiny, tmp_path, capsys):
    import shutil

    from world2act.cli import main
    from world2act.utils.io import write_json

    def run(wm, dataset=mw_tiny / "demos"):
        rc = main(["wm-eval", "--wm", str(wm), "--dataset", str(dataset), "--out", str(tmp_path / "o")])
        return rc, capsys.readouterr().err.strip()

    wm = tmp_path / "wm"
    wm.mkdir()
    shutil.copy(mw_tiny / "wm" / "config.json", wm / "config.json")  # config only: a check that loaded weights fails
    rc, err = run(wm)
    assert rc == 2 and "no clips.json" in err and "\n" not in err
    write_json(wm / "clips.json", {"held_out_source_episodes": [1, 7]})
    rc, err = run(wm)
    assert rc == 2 and "held-out demos [7] lie outside" in err
    write_json(wm / "clips.json", {"held_out_source_episodes": [1], "clips": [{"source_episode": 1, "instruction": "open the door"}]})
    rc, err = run(wm)
    assert rc == 2 and "was 'open the door'" in err
    assert not (tmp_path / "o").exists()
