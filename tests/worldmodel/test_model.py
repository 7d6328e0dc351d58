import json

import numpy as np
import pytest
import torch

from world2act import World2ActError
from world2act.worldmodel import WorldModel, get_config


def _video(b=1, t=17, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (b, t, 32, 64, 3), dtype=np.uint8)


def test_configs():
    s = get_config("small")
    assert s.frame_size == (64, 128) and s.num_latent_frames == 5
    assert s.vae_spatial_compression == 4 and s.latent_size == (16, 32) and s.vae_residual
    assert not get_config("tiny").vae_residual and not get_config("cosmos-predict2-2b").vae_residual
    assert get_config("small", layout="2x2").frame_size == (128, 128)
    big = get_config("cosmos-predict2-2b")
    assert big.frame_size == (704, 1280) and big.hidden_size == 2048 and big.text_embed_dim == 1024
    assert big.vae_spatial_compression == 8 and big.latent_size == (88, 160)
    with pytest.raises(World2ActError, match="valid names"):
        get_config("huge")
    with pytest.raises(World2ActError, match="multiple of 16"):
        get_config("small", image_size=(60, 60))
    with pytest.raises(World2ActError, match="needs >= 3 entries"):
        get_config("small", vae_dim_mult=(1, 2))


def test_built_vae_matches_config():
    """The VAE built for a config compresses space by ``vae_spatial_compression`` and time by 4."""
    import torch

    from world2act.worldmodel.model import build_vae, check_vae

    for mult, f, residual in (((1, 1, 1), 4, False), ((1, 1, 1, 1), 8, False), ((1, 1, 1), 4, True)):
        cfg = get_config("tiny", vae_dim_mult=mult, vae_residual=residual)
        vae = build_vae(cfg).eval()
        assert vae.config.is_residual == residual
        with torch.no_grad():
            z = vae.encode(torch.zeros(1, 3, 9, 32, 64)).latent_dist.mode()
            rec = vae.decode(z).sample
        assert tuple(z.shape) == (1, cfg.latent_channels, 3, 32 // f, 64 // f) and cfg.latent_size == (32 // f, 64 // f)
        assert tuple(rec.shape) == (1, 3, 9, 32, 64)
        check_vae(vae, cfg, "here")
        other = get_config("tiny", vae_dim_mult=(1, 1, 1) if f == 8 else (1, 1, 1, 1))
        with pytest.raises(World2ActError, match="here: VAE has z_dim=8 and"):
            check_vae(vae, other, "here")
    with pytest.raises(World2ActError, match="'tiny': cannot build its VAE .*vae_residual=True"):
        build_vae(get_config("tiny", vae_dim_mult=(1, 3, 1), vae_residual=True))  # 8 * 8 channels do not split into 24


def test_encode_decode_shapes(tiny):
    z = tiny.encode(_video(2))
    assert z.shape == (2, 5, 8, 4, 8)  # [B, T', C, H', W']
    v = tiny.decode(z)
    assert v.shape == (2, 17, 32, 64, 3) and v.dtype == np.uint8


def test_bad_video_input(tiny):
    with pytest.raises(World2ActError, match="32x64"):
        tiny.encode(np.zeros((1, 17, 64, 64, 3), np.uint8))
    with pytest.raises(World2ActError, match="RGB"):
        tiny.encode(np.zeros((1, 17, 32, 64, 4), np.uint8))
    with pytest.raises(World2ActError, match="1 \\+ 4n"):
        tiny.encode(np.zeros((1, 16, 32, 64, 3), np.uint8))
    with pytest.raises(World2ActError, match="prompts"):
        tiny.denoised_latents(_video(), [""], 1.0)


def test_training_step_reduces_loss_on_one_batch():
    torch.manual_seed(0)
    m = WorldModel.from_config("tiny")
    x0 = m.encode(_video(2)).permute(0, 2, 1, 3, 4)
    emb = m.encode_prompts(["pick up the bowl", "place it"])
    opt = torch.optim.AdamW(m.transformer.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(0)
    t, noise = torch.full((2,), 0.5), torch.randn(x0.shape, generator=g)
    first = m.flow_matching_loss(x0, emb, t=t, noise=noise).item()
    for _ in range(8):
        loss = m.flow_matching_loss(x0, emb, t=t, noise=noise)
        opt.zero_grad(); loss.backward(); opt.step()
    assert np.isfinite(first) and loss.item() < 0.9 * first


def test_denoised_latents(tiny):
    v = _video(2)
    d = tiny.denoised_latents(v, ["a", "b"], sigma=1.0)
    z = tiny.encode(v)
    assert d.shape == z.shape == (2, 5, 8, 4, 8)
    assert torch.allclose(d[:, 0], z[:, 0])  # frame 0 is the clean conditioning latent
    assert not torch.allclose(d[:, 1:], z[:, 1:])
    assert torch.allclose(d, tiny.denoised_latents(v, ["a", "b"], sigma=1.0))  # seeded
    with pytest.raises(World2ActError, match="2 videos"):
        tiny.denoised_latents(v, ["a"], 1.0)


def test_rollout_shapes_and_chaining(tiny):
    first = _video()[0, 0]
    video, lat = tiny.rollout(first, ["pick up the bowl", "place it in the basket", "pick up the cup"],
                              num_inference_steps=2)
    assert video.shape == (1 + 16 * 3, 32, 64, 3) and video.dtype == np.uint8
    assert lat.shape == (1 + 4 * 3, 8, 4, 8)
    v1, l1 = tiny.generate_clip(first, "pick up the bowl", num_inference_steps=2, seed=0)
    assert np.array_equal(video[:17], v1) and torch.allclose(lat[:5], l1)
    with pytest.raises(World2ActError, match="first_frame"):
        tiny.rollout(np.zeros((32, 32, 3), np.uint8), ["a"])
    with pytest.raises(World2ActError, match="at least one prompt"):
        tiny.rollout(first, [])


def test_multi_frame_conditioning_loss_and_sampling(tiny):
    """num_cond = 2: latent frames 0, 1 are clean conditioning (their noise is unused, they are not
    scored); the sampler keeps them; a rollout chains clips on the last 5 frames (2 latent frames)."""
    x0 = tiny.encode(_video(2)).permute(0, 2, 1, 3, 4)  # [2, C, 5, H', W']
    emb = tiny.encode_prompts(["a", "b"])
    t, noise = torch.full((2,), 0.5), torch.randn(x0.shape, generator=torch.Generator().manual_seed(0))
    other = noise.clone()
    other[:, :, :2] = torch.randn(other[:, :, :2].shape)
    with torch.no_grad():
        two = tiny.flow_matching_loss(x0, emb, t=t, noise=noise, num_cond=2)
        assert torch.equal(two, tiny.flow_matching_loss(x0, emb, t=t, noise=other, num_cond=2))
        assert not torch.equal(tiny.flow_matching_loss(x0, emb, t=t, noise=noise),
                               tiny.flow_matching_loss(x0, emb, t=t, noise=other))  # frame 1 is noised at n = 1
    with pytest.raises(World2ActError, match="num_cond=5"):
        tiny.flow_matching_loss(x0, emb, num_cond=5)
    v = _video(1)[0]
    gen, lat = tiny.generate_clip(v[:5], "a", num_inference_steps=2)
    assert gen.shape == (17, 32, 64, 3) and torch.allclose(lat[:2], tiny.encode(v[None, :5])[0])
    with pytest.raises(World2ActError, match="1 \\+ 4k"):
        tiny.generate_clip(v[:3], "a")
    video, lat = tiny.rollout(v[0], ["a", "b", "c"], num_inference_steps=2, cond_frames=2)
    assert video.shape == (17 + 12 * 2, 32, 64, 3) and lat.shape == (5 + 3 * 2, 8, 4, 8)
    one, _ = tiny.rollout(v[0], ["a", "b"], num_inference_steps=2)
    assert np.array_equal(one, tiny.rollout(v[0], ["a", "b"], num_inference_steps=2, cond_frames=1)[0])
    c2, _ = tiny.generate_clip(video[12:17], "b", num_inference_steps=2, seed=1)  # clip 2 = from clip 1's last 5
    assert np.array_equal(video[17:29], c2[5:])
    with pytest.raises(World2ActError, match="cond_frames=5"):
        tiny.rollout(v[0], ["a"], cond_frames=5)


def test_sampler_matches_diffusers_pipeline(tiny, monkeypatch):
    """Our sampling loop is step for step Cosmos2VideoToWorldPipeline (so training matches the sampler)."""
    from diffusers import Cosmos2VideoToWorldPipeline
    from diffusers.models.autoencoders import vae as vae_mod
    from PIL import Image

    class NoChecker(torch.nn.Module):
        device, dtype = torch.device("cpu"), torch.float32

        def check_text_safety(self, p):
            return True

        def check_video_safety(self, v):
            return v

    # deterministic conditioning latent in both paths (the pipeline samples the posterior)
    monkeypatch.setattr(vae_mod.DiagonalGaussianDistribution, "sample", lambda self, generator=None: self.mode())
    pipe = Cosmos2VideoToWorldPipeline(text_encoder=None, tokenizer=None, transformer=tiny.transformer, vae=tiny.vae,
                                       scheduler=tiny.scheduler, safety_checker=NoChecker())
    frame = _video()[0, 0]
    emb = tiny.encode_prompts(["pick up the bowl"])
    noise = torch.randn(1, 8, 5, 4, 8, generator=torch.Generator().manual_seed(3))
    ref = pipe(image=Image.fromarray(frame), prompt_embeds=emb, height=32, width=64, num_frames=17,
               num_inference_steps=3, guidance_scale=1.0, fps=tiny.config.fps, latents=noise.clone(),
               output_type="latent").frames
    cond = tiny._encode_raw(frame[None, None])
    ours = tiny.sample(cond, emb, num_inference_steps=3, guidance_scale=1.0, latents=noise.clone())
    assert torch.allclose(ours[:, :, 1:], ref[:, :, 1:].float(), atol=1e-4)


def test_save_load_roundtrip(tiny, tmp_path):
    tiny.prompt_windows = {"pick up the bowl": 2}
    tiny.save(tmp_path / "wm")
    for f in ("config.json", "model_index.json", "transformer/config.json", "vae/config.json",
              "scheduler/scheduler_config.json"):
        assert (tmp_path / "wm" / f).is_file()
    assert list((tmp_path / "wm" / "transformer").glob("*.safetensors"))
    m = WorldModel.load(tmp_path / "wm")
    assert m.prompt_windows == {"pick up the bowl": 2} and m.config == tiny.config
    v = _video()
    assert torch.allclose(m.denoised_latents(v, ["x"], 2.0), tiny.denoised_latents(v, ["x"], 2.0), atol=1e-5)


def test_load_rejects_non_world_model(tmp_path):
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "config.json").write_text(json.dumps({"hidden": 3}))
    with pytest.raises(World2ActError, match="missing .*transformer/config.json"):
        WorldModel.load(tmp_path / "x")
    with pytest.raises(World2ActError, match="not found"):
        WorldModel.load(tmp_path / "nope")
