"""The real Cosmos-Predict2-2B-Video2World path without the download or a GPU: a folder in the
checkpoint's diffusers layout with its real configuration and random weights
(``world2act.worldmodel.fake2b``), loaded by ``WorldModel.load`` / ``train-wm --pretrained`` /
``imagine`` and run for one denoising step at the smallest legal resolution (two 8x8 views in
the 2x2 grid = 16x16 frames, 5 frames = 2 latent frames) with T5-width (1024-d) text embeddings
supplied precomputed (``prompt_embeds.safetensors``), and ``concat_padding_mask=True`` without
torchvision.

Measured figures (time, peak RSS) are printed (``pytest -s``) and recorded in docs/worldmodel.md.
"""
import json
import resource
import time

import numpy as np
import pytest
import torch

from world2act.worldmodel import WorldModel
from world2act.worldmodel.fake2b import make_fake_checkpoint

SMALLEST = dict(image_size=(8, 8), num_frames=5)


def _rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20


def test_fake_checkpoint_has_the_real_layout_and_config(tmp_path):
    info = make_fake_checkpoint(tmp_path / "ckpt", num_layers=1)
    root = tmp_path / "ckpt"
    index = json.loads((root / "model_index.json").read_text())
    assert index["_class_name"] == "Cosmos2VideoToWorldPipeline"
    tc = json.loads((root / "transformer" / "config.json").read_text())
    assert (tc["in_channels"], tc["num_attention_heads"], tc["attention_head_dim"], tc["text_embed_dim"],
            tc["adaln_lora_dim"], tc["concat_padding_mask"], list(tc["rope_scale"])) == (17, 16, 128, 1024, 256, True,
                                                                                    [1.0, 3.0, 3.0])
    vc = json.loads((root / "vae" / "config.json").read_text())
    assert (vc["base_dim"], vc["z_dim"], vc["dim_mult"], vc["num_res_blocks"]) == (96, 16, [1, 2, 4, 4], 2)
    assert abs(vc["latents_mean"][0] - (-0.7571)) < 1e-6  # the Wan 2.1 VAE's released statistics
    assert info["num_layers"] == 1 and info["bytes"] == 2 * info["params"]  # bf16


@pytest.mark.slow
def test_full_28_layer_2b_loads_and_denoises_one_step_on_cpu(tmp_path):
    """Every dimension real (bf16): build, load, one step. All 28 layers (1.96 B parameters, a
    4.5 GB folder, ≈ 45 s and ≈ 5-7 GB RSS, docs/worldmodel.md) with WORLD2ACT_FULL_2B=1;
    by default 2 layers, so `make test` does not write 4.5 GB per run on small CI disks."""
    import os
    import shutil

    layers = 28 if os.environ.get("WORLD2ACT_FULL_2B") == "1" else 2
    t0 = time.time()
    info = make_fake_checkpoint(tmp_path / "ckpt", num_layers=None if layers == 28 else layers)
    t_build = time.time() - t0
    assert info["num_layers"] == layers and (layers != 28 or info["params"] > 1.9e9)
    t0 = time.time()
    wm = WorldModel.load(tmp_path / "ckpt", overrides=SMALLEST)
    t_load = time.time() - t0
    assert wm.transformer.dtype == torch.bfloat16 and wm.config.text_embed_dim == 1024
    frame = np.random.default_rng(0).integers(0, 255, (1, 5, 16, 16, 3), dtype=np.uint8)
    t0 = time.time()
    x0 = wm.denoised_latents(frame, ["pick up the bowl"], sigma=1.0)  # one transformer pass (+ VAE encode)
    t_step = time.time() - t0
    assert x0.shape == (1, 2, 16, 2, 2) and torch.isfinite(x0).all()
    t0 = time.time()
    video, lat = wm.rollout(frame[0, 0], ["pick up the bowl"], num_inference_steps=1, guidance_scale=1.0)
    t_roll = time.time() - t0
    assert video.shape == (5, 16, 16, 3) and torch.isfinite(lat).all()
    print(f"\n2B ({layers} layers) build {t_build:.1f}s load {t_load:.1f}s one step {t_step:.1f}s "
          f"rollout 1 step {t_roll:.1f}s peak RSS {_rss_gb():.2f} GB")
    del wm
    shutil.rmtree(tmp_path / "ckpt", ignore_errors=True)


@pytest.mark.slow
def test_train_wm_pretrained_and_imagine_with_real_widths(tmp_path):
    """``train-wm --pretrained`` (one optimiser step) and ``imagine`` on the 2B's widths, one layer
    (an AdamW step on all 28 layers would need ~16 GB: bf16 weights, grads and two moments)."""
    from PIL import Image

    from world2act.cli import main as cli
    from world2act.worldmodel.train import TrainWMConfig, run

    from synthetic import synthetic_clips

    make_fake_checkpoint(tmp_path / "ckpt", num_layers=1)
    t0 = time.time()
    m = run(TrainWMConfig(model="cosmos-predict2-2b", pretrained=str(tmp_path / "ckpt"), steps=1, batch_size=1,
                          eval_clips=1, eval_steps=1, val_fraction=0.25, device="cpu", threads=1,
                          model_overrides=dict(SMALLEST)),
            tmp_path / "wm", videos=synthetic_clips(4, hw=(16, 16), num_frames=5))
    t_train = time.time() - t0
    assert m["steps"] == 1 and np.isfinite(m["val_loss_end"]["mean"])
    assert (tmp_path / "wm" / "prompt_embeds.safetensors").is_file()
    Image.fromarray(np.full((16, 16, 3), 90, np.uint8)).save(tmp_path / "first.png")
    t0 = time.time()
    rc = cli(["imagine", "--wm", str(tmp_path / "wm"), "--image", str(tmp_path / "first.png"), "--instruction",
              "pick up the bowl", "--out", str(tmp_path / "im"), "--steps", "1"])  # guidance 7: the negative prompt too
    assert rc == 0
    info = json.loads((tmp_path / "im" / "prompts.json").read_text())
    assert info["video_shape"] == [5, 16, 16, 3]
    print(f"\ntrain-wm (1 layer, 1 step) {t_train:.1f}s imagine {time.time() - t0:.1f}s peak RSS {_rss_gb():.2f} GB")


def test_imagine_overrides_load_the_diffusers_folder_at_a_small_size(tmp_path):
    from PIL import Image

    from world2act.cli import main as cli

    make_fake_checkpoint(tmp_path / "ckpt", num_layers=1)
    Image.fromarray(np.full((16, 16, 3), 90, np.uint8)).save(tmp_path / "first.png")
    rc = cli(["imagine", "--wm", str(tmp_path / "ckpt"), "--image", str(tmp_path / "first.png"), "--instruction",
              "pick up the bowl", "--out", str(tmp_path / "im"), "--steps", "1", "--guidance", "1",
              "image_size=[8, 8]", "num_frames=5"])
    assert rc == 0
    assert json.loads((tmp_path / "im" / "prompts.json").read_text())["video_shape"] == [5, 16, 16, 3]


def test_prompt_embeds_table_named_prompts_and_missing_prompt(tmp_path):
    import json as _json

    from safetensors.torch import save_file

    from world2act import World2ActError
    from world2act.worldmodel.model import T5Prompts, _read_embed_table

    emb = torch.randn(2, 6, 32)
    save_file({"embeds": emb}, str(tmp_path / "prompt_embeds.safetensors"),
              metadata={"prompts": _json.dumps(["pick up the bowl", "open the drawer"])})
    wm = WorldModel.from_config("tiny", text_encoder="t5", text_embed_dim=32)
    wm.t5_prompts = T5Prompts(table=_read_embed_table(tmp_path))
    out = wm.encode_prompts(["open the drawer", "pick up the bowl"])
    assert torch.equal(out[0], emb[1]) and torch.equal(out[1], emb[0])
    with pytest.raises(World2ActError, match="no embeddings for \\['close the door'\\]"):
        wm.encode_prompts(["close the door"])


def test_padding_mask_stand_in_matches_nearest_resize():
    from world2act.worldmodel.model import _NearestResize

    x = torch.arange(16.0).view(1, 1, 4, 4)
    y = _NearestResize.functional.resize(x, [2, 2], interpolation=_NearestResize.InterpolationMode.NEAREST)
    assert torch.equal(y, x[:, :, ::2, ::2])


def test_t5_prompt_source_is_explicit_and_survives_save_and_load(tmp_path):
    """A fine-tuned copy of a T5 world model keeps pointing at the pretrained folder's T5 and
    carries its precomputed embeddings; a folder without T5 is refused with a clear error."""
    from world2act import World2ActError
    from world2act.worldmodel.model import T5Prompts

    pre = tmp_path / "pretrained"
    (pre / "text_encoder").mkdir(parents=True)
    (pre / "tokenizer").mkdir()
    emb = torch.randn(1, 6, 32)
    wm = WorldModel.from_config("tiny", text_encoder="t5", text_embed_dim=32)
    wm.t5_prompts = T5Prompts(pre, {"*": emb[0]}, max_length=6)
    wm.save(tmp_path / "ft")
    loaded = WorldModel.load(tmp_path / "ft")
    assert loaded.t5_prompts.folder == pre.resolve()
    assert torch.equal(loaded.encode_prompts(["anything"])[0], emb[0])
    with pytest.raises(World2ActError, match="no text_encoder/ and tokenizer/"):
        T5Prompts(tmp_path / "ft", None)(["pick up the bowl"], "cpu", torch.float32)
