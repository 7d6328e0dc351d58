import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from world2act import World2ActError
from world2act.worldmodel import WorldModel
from world2act.worldmodel.train import TrainWMConfig, run

from synthetic import synthetic_clips

FAST = dict(model="tiny", steps=4, vae_steps=2, vae_batch=2, batch_size=2, ckpt_every=2, log_every=1,
            eval_clips=1, eval_steps=1, val_fraction=0.25, device="cpu", threads=1)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("wm")
    data = synthetic_clips(8)
    m = run(TrainWMConfig(**FAST), out, overwrite=True, videos=data, log_with="tensorboard")
    return out, m, data


def test_train_writes_model_and_metrics(trained):
    out, m, _ = trained
    for f in ("metrics.json", "manifest.json", "clips.json", "loss_log.csv", "vae_loss_log.csv", "config.json", "vae/config.json",
              "transformer/config.json", "checkpoint/state.json"):
        assert (out / f).is_file(), f
    metrics = json.loads((out / "metrics.json").read_text())
    assert len((out / "vae_loss_log.csv").read_text().splitlines()) == 1 + FAST["vae_steps"]
    assert metrics["steps"] == 4 and set(metrics["val_loss_start"]) == set(metrics["val_loss_end"])
    assert "psnr" in metrics["heldout_generation"] and "baseline_repeat_first_psnr" in metrics["heldout_generation"]
    clips = json.loads((out / "clips.json").read_text())
    held = set(clips["held_out_source_episodes"])
    assert held and all((c["split"] == "val") == (c["source_episode"] in held) for c in clips["clips"])
    wm = WorldModel.load(out)
    assert wm.config.name == "tiny"


def test_log_with_tensorboard_has_the_loss_log_and_evaluation(trained):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out, m, _ = trained
    ea = EventAccumulator(str(out / "tensorboard"))
    ea.Reload()
    tags = set(ea.Tags()["scalars"])
    assert {"train/loss", "train/lr", "vae/loss", "val/mean", "eval/psnr", "eval/ssim"} <= tags
    assert [e.step for e in ea.Scalars("train/loss")] == [1, 2, 3, 4]  # the loss_log.csv rows (log_every=1)
    assert [e.step for e in ea.Scalars("val/mean")] == [0, 4]
    assert ea.Scalars("eval/psnr")[0].value == pytest.approx(m["heldout_generation"]["psnr"], rel=1e-5)


def test_resume_continues_from_checkpoint(trained, tmp_path):
    out, _, data = trained
    state = json.loads((out / "checkpoint" / "state.json").read_text())
    assert state["step"] == 4
    m = run(TrainWMConfig(**dict(FAST, steps=6)), out, resume=True, videos=data)
    assert m["steps"] == 6
    assert json.loads((out / "checkpoint" / "state.json").read_text())["step"] == 6


def test_resume_reads_a_checkpoint_of_the_older_layout(trained, tmp_path):
    """Before issue 17: checkpoint/transformer/ (diffusers layout), optimizer.pt (torch.save), state.json."""
    import shutil

    from diffusers import CosmosTransformer3DModel

    out, _, data = trained
    shutil.copytree(out, tmp_path / "wm")
    ck = tmp_path / "wm" / "checkpoint"
    m = run(TrainWMConfig(**dict(FAST, steps=6)), tmp_path / "wm", resume=True, videos=data)  # a new-format checkpoint at 6
    state = json.loads((ck / "state.json").read_text())
    opt = torch.optim.AdamW(WorldModel.load(tmp_path / "wm").transformer.parameters())
    from world2act.utils.training import load_training_state

    st = load_training_state(ck, optimizer=opt)
    tr = CosmosTransformer3DModel.from_config(WorldModel.load(tmp_path / "wm").transformer.config)
    tr.load_state_dict(st.model_state)
    tr.save_pretrained(ck / "transformer", safe_serialization=True)
    torch.save(opt.state_dict(), ck / "optimizer.pt")
    for f in ("model.safetensors", "state.safetensors"):
        (ck / f).unlink()
    (ck / "state.json").write_text(json.dumps({"step": 6, **state["extra"]}))
    m = run(TrainWMConfig(**dict(FAST, steps=8)), tmp_path / "wm", resume=True, videos=data)
    assert m["steps"] == 8
    assert json.loads((ck / "state.json").read_text())["format"] == "world2act-training-state"


def test_nan_loss_stops_and_keeps_checkpoint(tmp_path, monkeypatch):
    data = synthetic_clips(8)
    calls = {"n": 0}
    orig = WorldModel.flow_matching_loss

    def bad(self, *a, **k):
        loss = orig(self, *a, **k)
        if torch.is_grad_enabled():
            calls["n"] += 1
            if calls["n"] > 2:
                return loss * float("nan")
        return loss

    monkeypatch.setattr(WorldModel, "flow_matching_loss", bad)
    with pytest.raises(World2ActError, match="non-finite loss.*last good checkpoint"):
        run(TrainWMConfig(**dict(FAST, steps=10)), tmp_path / "wm", videos=data)
    assert json.loads((tmp_path / "wm" / "checkpoint" / "state.json").read_text())["step"] == 2


def test_bad_clip_shape_rejected_before_training(tmp_path):
    recs, vids = synthetic_clips(4)
    with pytest.raises(World2ActError, match="world model takes"):
        run(TrainWMConfig(**FAST), tmp_path / "wm", videos=(recs, vids[:, :, :, :32]))
    assert not (tmp_path / "wm").exists()


def test_imagine_writes_documented_outputs(trained, tmp_path):
    from world2act.worldmodel.imagine import imagine

    out, _, (recs, vids) = trained
    wm = WorldModel.load(out)
    info = imagine(wm, vids[0, 0], "pick up the bowl and place it in the basket", tmp_path / "im", steps=1)
    n = len(info["clip_prompts"])
    assert n >= 1 and info["video_shape"] == [1 + 16 * n, 32, 64, 3]
    t = load_file(tmp_path / "im" / "latents.safetensors")
    assert tuple(t["latents"].shape) == (1 + 4 * n, 8, 4, 8)
    assert t["latent_action_ranges"][1].tolist() == [0, 16]
    assert (tmp_path / "im" / "video.mp4").stat().st_size > 0
    assert json.loads((tmp_path / "im" / "prompts.json").read_text())["clip_prompts"] == info["clip_prompts"]


@pytest.mark.parametrize("crop, frames, expect", [(16, 5, (5, 16, 16)), (0, 0, (17, 32, 64)),
                                                  (100, 9, (9, 32, 64)), (16, 40, (17, 16, 16))])
def test_train_vae_crops(crop, frames, expect):
    """The VAE trains on ``vae_frames``-frame snippets (0 or more than a clip = whole clips) of
    random ``vae_crop`` crops (0 or a crop larger than the frame = whole frames), and a step
    updates its weights."""
    from world2act.worldmodel.configs import get_config
    from world2act.worldmodel.model import build_vae
    from world2act.worldmodel.train import train_vae

    vae = build_vae(get_config("tiny"))
    shapes = []
    orig = vae.encode

    def spy(x, *a, **k):
        shapes.append(tuple(x.shape))
        return orig(x, *a, **k)

    vae.encode = spy
    before = [p.detach().clone() for p in vae.parameters()]
    videos = np.random.default_rng(0).integers(0, 256, (3, 17, 32, 64, 3), dtype=np.uint8)
    cfg = TrainWMConfig(**{**FAST, "vae_steps": 2, "vae_batch": 3, "vae_crop": crop,
                                 "vae_frames": frames})
    hist = train_vae(vae, videos, cfg, np.random.default_rng(0), "cpu")
    assert len(hist) == 2 and all(np.isfinite(loss) and lr > 0 for _, loss, lr in hist)
    assert shapes == [(3, 3, *expect)] * 2
    assert any(not torch.equal(b, p) for b, p in zip(before, vae.parameters()))


def test_train_vae_rejects_bad_snippet_length():
    """A snippet must be 1 + 4n frames (the VAE's causal chunking); anything else is a clear error."""
    from world2act.worldmodel.configs import get_config
    from world2act.worldmodel.model import build_vae
    from world2act.worldmodel.train import train_vae

    videos = np.zeros((2, 17, 32, 64, 3), dtype=np.uint8)
    cfg = TrainWMConfig(**{**FAST, "vae_steps": 1, "vae_frames": 8})
    with pytest.raises(World2ActError, match="vae_frames=8"):
        train_vae(build_vae(get_config("tiny")), videos, cfg, np.random.default_rng(0), "cpu")


def test_train_wm_rejects_bad_vae_frames_before_writing(tmp_path):
    """``train-wm`` checks ``vae_frames`` before it creates the output folder."""
    records, vids = synthetic_clips(4)
    out = tmp_path / "wm"
    with pytest.raises(World2ActError, match="vae_frames=6"):
        run(TrainWMConfig(**{**FAST, "vae_frames": 6}), out, videos=(records, vids))
    assert not out.exists()


def test_cond_frames_trains_and_scores_each_n_on_the_same_frames(tmp_path):
    records, vids = synthetic_clips(8)
    m = run(TrainWMConfig(**{**FAST, "cond_frames": 2}), tmp_path / "wm", videos=(records, vids))
    by_n = m["heldout_generation_by_cond_frames"]
    assert set(by_n) == {"1", "2"} and all(r["score_from"] == 5 for r in by_n.values())
    assert by_n["1"]["psnr"] != by_n["2"]["psnr"] and m["heldout_generation"]["score_from"] == 1
    with pytest.raises(World2ActError, match="cond_frames=5"):
        run(TrainWMConfig(**{**FAST, "cond_frames": 5}), tmp_path / "bad", videos=(records, vids))
    assert not (tmp_path / "bad").exists()


def test_missing_vae_folder_is_one_line_error_before_writing(tmp_path):
    records, vids = synthetic_clips(4)
    with pytest.raises(World2ActError, match="--vae .*nope: not a VAE folder"):
        run(TrainWMConfig(**{**FAST, "vae": str(tmp_path / "nope")}), tmp_path / "wm", videos=(records, vids))
    assert not (tmp_path / "wm").exists()


def test_vae_psnr_per_frame_curve_locates_error():
    """``vae_psnr`` returns the mean and a per-frame curve; a VAE that is exact on frames 0-4 and
    off by 16 grey levels on frames 5-16 shows exactly that curve."""
    from types import SimpleNamespace

    from world2act.worldmodel.train import vae_psnr

    class FakeVAE:
        def encode(self, x):
            return SimpleNamespace(latent_dist=SimpleNamespace(mode=lambda: x))

        def decode(self, z):
            out = z.clone()
            out[:, :, 5:] += 16 / 127.5
            return SimpleNamespace(sample=out)

    videos = np.full((2, 17, 8, 8, 3), 100, dtype=np.uint8)
    mean, curve = vae_psnr(FakeVAE(), videos, "cpu")
    off = 10 * np.log10(255 ** 2 / 16 ** 2)  # 24.05 dB
    assert len(curve) == 17
    assert all(v > 140 for v in curve[:5]) and np.allclose(curve[5:], off, atol=0.01)
    assert mean == pytest.approx(np.mean(curve), abs=0.01)


@pytest.mark.parametrize("finetune", [False, True])
def test_given_vae_is_frozen_or_fine_tuned(trained, tmp_path, finetune):
    src, _, data = trained
    before = load_file(src / "vae" / "diffusion_pytorch_model.safetensors")
    cfg = TrainWMConfig(**{**FAST, "steps": 1, "vae": str(src / "vae"), "vae_finetune": finetune, "vae_steps": 3})
    m = run(cfg, tmp_path / "wm", videos=data)
    after = load_file(tmp_path / "wm" / "vae" / "diffusion_pytorch_model.safetensors")
    changed = any(not torch.equal(before[k], after[k]) for k in before)
    assert changed == finetune
    assert m["vae"] == ("fine-tuned" if finetune else "pretrained") and m["vae_source"] == str(src / "vae")
    assert m.get("vae_steps") == (3 if finetune else None)
