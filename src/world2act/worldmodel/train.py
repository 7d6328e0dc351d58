"""``world2act train-wm``: train the Skill-WM (``--clips skills``) or Base-WM (``--clips episodes``).

Paper Sec. 3.3 / 5.3 and appendix A. Steps (each resumable):

1. Validate the dataset against the model config (cameras, image size, prompts, clip length)
   before any work; build clip records and hold out whole demonstrations (``clips.json``).
2. VAE: ``--vae DIR`` / ``--pretrained DIR`` supply one; otherwise a small ``AutoencoderKLWan``
   is trained on the domain's frames (L1 + MSE + tiny KL on whole clips), its latent
   mean/std are set from the training latents, and its reconstruction PSNR on held-out clips is
   reported (``vae/``).
3. Latents are encoded once (``cache/latents.safetensors``).
4. The transformer is trained with the rectified-flow loss that matches the pipeline's sampler
   (:meth:`WorldModel.flow_matching_loss`), conditioning on the clean first latent frame and the
   clip prompt (10% prompt dropout for classifier-free guidance). ``accelerate`` drives the loop
   (multi-GPU without code change); checkpoints every ``ckpt_every`` steps in ``checkpoint/``;
   a NaN/inf loss stops training and keeps the last good checkpoint.
5. The final model is written in the diffusers layout, plus ``metrics.json``, ``loss_log.csv``
   (transformer), ``vae_loss_log.csv`` (when a VAE was trained) and ``manifest.json``.
"""
from __future__ import annotations

import dataclasses
import logging
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from world2act import World2ActError
from world2act.utils.config import opt

log = logging.getLogger(__name__)

VAL_SIGMAS = (0.05, 0.25, 1.0, 4.0, 20.0)  # fixed EDM noise levels for the validation loss


@dataclass
class TrainWMConfig:
    """Configuration of ``world2act train-wm`` (YAML keys / dotted overrides use these names)."""

    dataset: str = opt("", "LeRobot dataset: a skill dataset (--clips skills) or demonstrations (--clips episodes)")
    clips: str = opt("skills", "skills = Skill-WM (default), episodes = Base-WM (whole episodes)",
                     choices=["skills", "episodes"])
    model: str = opt("small", "config: tiny | small (default) | cosmos-predict2-2b")
    model_overrides: dict = field(default_factory=dict)  # e.g. {num_layers: 4}
    pretrained: str | None = opt(None, "diffusers Cosmos-Predict2 Video2World folder to fine-tune "
                                 "(or a world2act WM folder)")
    vae: str | None = opt(None, "pretrained AutoencoderKLWan folder (skip VAE training)")
    vae_finetune: bool = False      # keep training the --vae/--pretrained VAE on the domain's clips for vae_steps
    short_clips: str = "error"      # error | skip | pad
    val_fraction: float = 0.1
    train_demos: int = 0            # training demos per instruction (the first N not held out; 0 = all): data scaling
    seed: int = 0
    device: str = "auto"
    threads: int = 0                # 0 = all cores
    # VAE training
    vae_steps: int = opt(950, "VAE training steps (default 950: ~15 min for the small residual VAE on one CPU thread)")
    vae_batch: int = 4
    vae_crop: int = 32              # train on random crops of this size (pixels); 0 = whole frames
    vae_frames: int = 0             # frames per training snippet (1 + 4n); 0 = the whole clip (num_frames)
    vae_lr: float = 2e-3
    vae_kl: float = 1e-6
    vae_max_minutes: float = 0.0    # 0 = no wall-clock limit on VAE training
    vae_motion_weight: float = 0.0  # weight the VAE's pixel loss toward moving pixels: 1 + w * moving-pixel map (0 = off)
    # transformer training
    steps: int = opt(2500, "transformer training steps (default 2500)")
    batch_size: int = 4
    lr: float = 3e-4
    weight_decay: float = 0.01
    warmup: int = 100
    grad_clip: float = 1.0
    p_mean: float = 0.0
    p_std: float = 1.6
    motion_weight: float = 0.0      # weight the loss toward moving latents: 1 + w * normalised temporal change (0 = off)
    cond_frames: int = 1            # conditioning latent frames: each step draws n in 1..cond_frames (2 = Cosmos' 5-frame)
    prompt_dropout: float = 0.1
    ckpt_every: int = 250
    log_every: int = 25
    max_minutes: float = 0.0        # 0 = no wall-clock limit
    # evaluation
    eval_clips: int = 16
    eval_steps: int = 10


# ---------------------------------------------------------------------------------------- helpers
def _psnr_t(x, y):
    import torch

    mse = ((x.clamp(-1, 1) - y) ** 2).mean(dim=tuple(range(1, x.ndim)))
    return (10 * torch.log10(4.0 / mse.clamp(min=1e-10))).mean().item()


def _check_vae_frames(n: int) -> None:
    """Raise ``World2ActError`` unless a VAE snippet length ``n`` is 0 (whole clips) or 1 + 4k."""
    if n < 0 or (n and (n - 1) % 4):
        raise World2ActError(f"vae_frames={n}: a VAE snippet has 1 + 4n frames (0 = whole clips)")


def vae_motion_maps(videos: np.ndarray, q: float = 0.99) -> np.ndarray:
    """Moving-pixel maps ``m`` in [0, 1], float16 ``[N, T, H, W]``, of uint8 clips ``[N, T, H, W, 3]``.

    ``d = sum_c |x - median_t(x)|`` (each pixel against the clip's per-pixel temporal median: the
    static background is ~0, the arm and the object it moves are not, both where they are and
    where the median saw them), divided by the clip's ``q``-quantile of ``d`` and clipped to 1.
    A static clip gives all zeros. Derived from the clip alone: the training data has no masks.
    The VAE's loss weights a pixel ``1 + vae_motion_weight * m`` (``train_vae``).
    """
    out = np.zeros(videos.shape[:4], dtype=np.float16)
    for i, v in enumerate(videos):
        v = v.astype(np.float32)
        d = np.abs(v - np.median(v, axis=0, keepdims=True)).sum(axis=-1)  # [T, H, W]
        scale = float(np.quantile(d, q))
        if scale > 1e-6:
            out[i] = np.clip(d / scale, 0.0, 1.0)
    return out


def train_vae(vae, train_videos: np.ndarray, cfg: TrainWMConfig, rng: np.random.Generator, device: str):
    """Train a small Wan VAE on ``cfg.vae_frames``-frame snippets (0 = whole clips) of the training clips.

    Whole clips by default: the VAE encodes/decodes chunk by chunk through causal-conv caches, and
    one trained on 5-frame snippets decodes later chunks of a 17-frame clip ever worse (held-out
    per-frame PSNR 26 dB on frame 0 down to 17 dB on frames 13-16; docs/results.md, world model).

    The VAE is fully convolutional (its mid-block attention works at any size), so it trains on
    random ``cfg.vae_crop`` x ``cfg.vae_crop`` crops: a 32x32 crop costs 1/8 of a 64x128 frame
    (a step is 3.4x cheaper), and held-out whole-frame PSNR agrees with crop PSNR within 1 dB
    (docs/results.md, world model). Loss: L1 + L2 + ``vae_kl`` x KL, on pixels in [-1, 1]; with
    ``vae_motion_weight = w > 0`` the L1 + L2 terms are a weighted mean with per-pixel weight
    ``1 + w * m`` (``m`` from :func:`vae_motion_maps` of the training clip, cropped with it).

    Args:
        train_videos: uint8 ``[N, T, H, W, 3]``.
    Returns:
        list of (step, loss, learning rate) triples (written to ``vae_loss_log.csv`` by :func:`run`).
    """
    import torch
    from world2act.utils.progress import progress_bar
    from world2act.utils.training import cosine_scheduler

    vae.train().to(device)
    opt = torch.optim.AdamW(vae.parameters(), lr=cfg.vae_lr, weight_decay=0.0)
    sched = cosine_scheduler(opt, cfg.vae_steps, max(1, cfg.vae_steps // 20), 0.05, overlap=True)
    n, t, h, w = train_videos.shape[:4]
    ch, cw = (min(cfg.vae_crop, h), min(cfg.vae_crop, w)) if cfg.vae_crop else (h, w)
    nf = min(cfg.vae_frames, t) if cfg.vae_frames else t  # longer than a clip = the whole clip
    _check_vae_frames(nf)
    if cfg.vae_motion_weight < 0:
        raise World2ActError(f"vae_motion_weight must be >= 0, got {cfg.vae_motion_weight}")
    motion = vae_motion_maps(train_videos) if cfg.vae_motion_weight > 0 else None
    hist = []
    t0 = time.time()
    bar = progress_bar(range(cfg.vae_steps), desc="VAE")
    for step in bar:
        if cfg.vae_max_minutes and (time.time() - t0) / 60 > cfg.vae_max_minutes:
            log.warning("vae_max_minutes=%s reached at VAE step %d", cfg.vae_max_minutes, step)
            break
        idx = rng.integers(0, n, cfg.vae_batch)
        starts = rng.integers(0, t - nf + 1, cfg.vae_batch)
        ys = rng.integers(0, h - ch + 1, cfg.vae_batch)
        xs = rng.integers(0, w - cw + 1, cfg.vae_batch)
        clip = np.stack([train_videos[i, s:s + nf, y:y + ch, x:x + cw] for i, s, y, x in zip(idx, starts, ys, xs)])
        x = torch.from_numpy(clip).to(device).float().div(127.5).sub(1).permute(0, 4, 1, 2, 3)
        post = vae.encode(x).latent_dist
        z = post.sample()
        rec = vae.decode(z).sample
        kl = 0.5 * (post.mean ** 2 + post.var - 1 - post.logvar).mean()
        if motion is None:
            loss = (rec - x).abs().mean() + ((rec - x) ** 2).mean() + cfg.vae_kl * kl
        else:
            mm = np.stack([motion[i, s:s + nf, y:y + ch, x_:x_ + cw] for i, s, y, x_ in zip(idx, starts, ys, xs)])
            wt = 1.0 + cfg.vae_motion_weight * torch.from_numpy(mm).to(device).float()[:, None]  # [B, 1, T, h, w]
            err = rec - x
            loss = ((err.abs() + err ** 2) * wt).sum() / (wt.sum() * err.shape[1]) + cfg.vae_kl * kl
        if not torch.isfinite(loss):
            raise World2ActError(f"VAE training diverged at step {step} (loss {loss.item()}); lower vae_lr")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        opt.step()
        sched.step()
        hist.append((step, loss.item(), sched.get_last_lr()[0]))
        if step % 10 == 0:
            bar.set_postfix(loss=f"{loss.item():.4f}", psnr=f"{_psnr_t(rec.detach(), x):.1f}")
    return hist


def _encode_all(vae, videos: np.ndarray, device: str, batch: int = 8):
    """Raw (un-normalised) posterior-mode latents ``[N, C, T', H', W']`` of uint8 clips."""
    import torch

    outs = []
    with torch.no_grad():
        for i in range(0, len(videos), batch):
            x = torch.from_numpy(videos[i:i + batch]).to(device).float().div(127.5).sub(1).permute(0, 4, 1, 2, 3)
            outs.append(vae.encode(x).latent_dist.mode().float().cpu())
    return torch.cat(outs)


def vae_psnr(vae, videos: np.ndarray, device: str) -> tuple[float, list[float]]:
    """Reconstruction PSNR (dB) of uint8 clips ``[N, T, H, W, 3]`` through encode/decode (mode).

    Returns:
        (mean over clips and frames, ``T`` per-frame means over clips). The per-frame curve shows
        whether later latent chunks (frames 1-4, 5-8, ...) decode worse than the first: a VAE
        trained on shorter snippets than the clips it encodes does (docs/results.md, world model).
    """
    import torch

    per_frame = []
    with torch.no_grad():
        for v in videos:
            x = torch.from_numpy(v[None]).to(device).float().div(127.5).sub(1).permute(0, 4, 1, 2, 3)
            rec = vae.decode(vae.encode(x).latent_dist.mode()).sample
            rec8 = ((rec.clamp(-1, 1) + 1) * 127.5).round()
            mse = ((rec8 - (x + 1) * 127.5) ** 2).mean(dim=(0, 1, 3, 4)).cpu().double().numpy()  # [T]
            per_frame.append(10 * np.log10(255 ** 2 / np.maximum(mse, 1e-10)))
    if not per_frame:
        return float("nan"), []
    curve = np.mean(per_frame, axis=0)
    return float(curve.mean()), [round(float(v), 2) for v in curve]


def validation_loss(model, x0, embeds, sigmas=VAL_SIGMAS, seed: int = 1234) -> dict:
    """Flow-matching loss on held-out latents at fixed EDM noise levels (fixed noise, no dropout).

    Args:
        x0: ``[N, C, T', H', W']`` normalised latents; embeds: ``[N, L, D]``.
    Returns:
        ``{"sigma=<s>": loss, ..., "mean": mean}``.
    """
    import torch

    out = {}
    g = torch.Generator().manual_seed(seed)
    noise = torch.randn(x0.shape, generator=g)
    with torch.no_grad():
        for s in sigmas:
            t = torch.full((x0.shape[0],), s / (1 + s))
            losses = []
            for i in range(0, len(x0), 16):
                losses.append(model.flow_matching_loss(x0[i:i + 16].to(model.device), embeds[i:i + 16].to(model.device),
                                                       t=t[i:i + 16].to(model.device),
                                                       noise=noise[i:i + 16].to(model.device), reduce=False).cpu())
            out[f"sigma={s:g}"] = float(torch.cat(losses).mean())
    out["mean"] = float(np.mean([out[f"sigma={s:g}"] for s in sigmas]))
    return out


def generation_metrics(model, videos: np.ndarray, prompts: list[str], steps: int, seed: int = 0,
                       cond_frames: int = 1, score_from: int | None = None) -> dict:
    """PSNR/SSIM of generated clips vs ground truth next to the repeat-the-first-frame baseline,
    on held-out clips ``[N, T, H, W, 3]`` (identical frames count as 100 dB, so padded clips
    lift the baseline).

    Args:
        cond_frames: conditioning latent frames n: the clip is generated from its first
            ``1 + 4(n−1)`` real frames (1 = the first frame only).
        score_from: first frame scored (default ``1 + 4(n−1)``, the first generated frame); pass
            the same value to compare models conditioned on different numbers of frames.
    Raises:
        World2ActError: ``score_from`` inside the conditioning frames or past the clip.
    """
    from world2act.worldmodel.metrics import psnr, ssim

    from world2act.worldmodel.alignment import num_pixel_frames

    overlap = num_pixel_frames(cond_frames)
    start = overlap if score_from is None else int(score_from)
    if not overlap <= start < videos.shape[1]:
        raise World2ActError(f"score_from={score_from}: must be {overlap} .. {videos.shape[1] - 1} "
                             f"with {cond_frames} conditioning latent frames")
    gen_p, gen_s, base_p, base_s = [], [], [], []
    for k, (v, p) in enumerate(zip(videos, prompts)):
        gen, _ = model.generate_clip(v[:overlap], p, num_inference_steps=steps, seed=seed + k)
        gt = v[start:]
        rep = np.repeat(v[:1], len(gt), 0)  # frame 0 for every n: the baseline's figure compares across n
        gen_p.append(psnr(gen[start:], gt)); gen_s.append(ssim(gen[start:], gt))
        base_p.append(psnr(rep, gt)); base_s.append(ssim(rep, gt))
    return {"n_clips": len(videos), "psnr": float(np.mean(gen_p)), "ssim": float(np.mean(gen_s)),
            "baseline_repeat_first_psnr": float(np.mean(base_p)), "baseline_repeat_first_ssim": float(np.mean(base_s)),
            "sampling_steps": steps, "cond_frames": int(cond_frames), "score_from": start}


# ---------------------------------------------------------------------------------------- run
def run(cfg: TrainWMConfig, out: str | os.PathLike, *, resume: bool = False, overwrite: bool = False,
        videos: tuple | None = None, log_with: str = "none") -> dict:
    """Train a world model into ``out``; returns the metrics dict.

    Phases: :func:`_load_clips` (model config, clip checks), :func:`_split_and_record` (held-out
    split, ``clips.json``), :func:`_vae_phase` (VAE training and latent statistics),
    :func:`_model_and_latents` (latent cache, prompt embeddings), :func:`_train_transformer`
    and :func:`_finish` (evaluation, metrics, manifest).

    Args:
        videos: for tests/programmatic use, ``(records, uint8 clips [N, T, H, W, 3])`` instead of
            ``cfg.dataset``.
        log_with: experiment tracker (:mod:`world2act.utils.tracking`): the ``loss_log.csv`` and
            ``vae_loss_log.csv`` rows (``train/``, ``vae/``), held-out validation loss at the start
            and end (``val/``) and held-out generation PSNR/SSIM (``eval/``).
    Raises:
        World2ActError: bad dataset/options (before any training), NaN loss (after saving state).
    """
    from world2act.utils.seeding import resolve_device, seed_everything, set_torch_threads
    from world2act.utils.tracking import check_backend
    from world2act.worldmodel.alignment import check_cond_frames

    started = time.time()
    if cfg.clips not in ("skills", "episodes"):
        raise World2ActError(f"--clips {cfg.clips!r}: valid are skills, episodes")
    _check_vae_frames(cfg.vae_frames)
    if cfg.vae and not (Path(cfg.vae) / "config.json").is_file():
        raise World2ActError(f"--vae {cfg.vae}: not a VAE folder (no config.json; pass the vae/ folder of a world model)")
    check_backend(log_with)
    device = resolve_device(cfg.device)
    set_torch_threads(cfg.threads or None)
    rng = seed_everything(cfg.seed)

    base, wm_cfg, ds, records, clip_videos = _load_clips(cfg, videos)  # 1. checks before writing anything
    check_cond_frames(cfg.cond_frames, wm_cfg.num_latent_frames)
    out, tracker, clip_videos, tr_idx, va_idx, metrics = _split_and_record(
        cfg, out, resume, overwrite, log_with, wm_cfg, ds, records, clip_videos)
    vae = _vae_phase(cfg, out, base, wm_cfg, clip_videos, tr_idx, va_idx, rng, device, tracker, metrics)  # 2.
    model, lat, emb_table, pidx = _model_and_latents(cfg, out, base, wm_cfg, vae, device, records,
                                                      clip_videos, tr_idx)  # 3.
    step, x_val, e_val = _train_transformer(cfg, out, model, lat, emb_table, pidx, tr_idx, va_idx, device,
                                            tracker, metrics)  # 4.
    return _finish(cfg, out, model, x_val, e_val, va_idx, clip_videos, records, step, tracker, metrics,
                   started)  # 5.


def _load_clips(cfg: TrainWMConfig, videos):
    """Phase 1a: the world-model config (from ``cfg.model`` or the pretrained checkpoint) and
    the clip records, checked against it; nothing is written.

    Returns:
        ``(base WorldModel or None, wm_cfg, dataset or None, records, clip videos or None)``
        (clip videos are loaded later from the dataset unless ``videos`` gave them).
    """
    from world2act.worldmodel.configs import get_config
    from world2act.worldmodel.data import build_clips, check_dataset
    from world2act.worldmodel.model import WorldModel

    base = None
    if cfg.pretrained:
        base = WorldModel.load(cfg.pretrained, device="cpu", config=cfg.model if cfg.model != "small" else None)
        wm_cfg = get_config(base.config, **cfg.model_overrides)
    else:
        wm_cfg = get_config(cfg.model, **cfg.model_overrides)
    ds = clip_videos = None
    if videos is None:
        if not cfg.dataset:
            raise World2ActError("--dataset is required")
        from world2act.data import LeRobotDataset

        ds = LeRobotDataset(cfg.dataset)
        check_dataset(ds, wm_cfg)
        records = build_clips(ds, cfg.clips, wm_cfg.num_frames, wm_cfg.frame_stride, cfg.short_clips)
    else:
        records, clip_videos = videos
        h, w = wm_cfg.frame_size
        if clip_videos.ndim != 5 or clip_videos.shape[1:] != (wm_cfg.num_frames, h, w, 3):
            raise World2ActError(f"clips have shape {clip_videos.shape}, the world model takes "
                                 f"[N, {wm_cfg.num_frames}, {h}, {w}, 3]")
    return base, wm_cfg, ds, records, clip_videos


def _split_and_record(cfg: TrainWMConfig, out, resume: bool, overwrite: bool, log_with: str, wm_cfg, ds, records,
                      clip_videos):
    """Phase 1b: split the clips by source demonstration (held-out demos), prepare ``out``,
    write ``clips.json`` and load the clip videos.

    Returns:
        ``(out Path, tracker, clip videos, train indices, held-out indices, metrics dict)``.
    """
    from world2act.utils.io import prepare_out_dir, write_json
    from world2act.utils.tracking import make_tracker
    from world2act.worldmodel.data import first_sources_per_instruction, load_clip_videos, split_by_source

    train_src, val_src = split_by_source(records, cfg.val_fraction, cfg.seed)
    train_src = first_sources_per_instruction(records, train_src, cfg.train_demos)
    if not train_src:
        raise World2ActError("no training demonstrations left after the held-out split (lower val_fraction)")
    out = prepare_out_dir(out, resume=resume, overwrite=overwrite)
    tracker = make_tracker(log_with, out, "train-wm", dataclasses.asdict(cfg))
    write_json(out / "clips.json", {"mode": cfg.clips, "num_frames": wm_cfg.num_frames,
                                    "frame_stride": wm_cfg.frame_stride, "held_out_source_episodes": sorted(val_src),
                                    "clips": [dict(r.to_dict(), split="val" if r.source_episode in val_src else
                                                        "train" if r.source_episode in train_src else "unused")
                                              for r in records]})
    if clip_videos is None:
        clip_videos = load_clip_videos(ds, records, wm_cfg)
    tr_idx = np.array([i for i, r in enumerate(records) if r.source_episode in train_src])
    va_idx = np.array([i for i, r in enumerate(records) if r.source_episode in val_src], dtype=int)
    log.info("%d clips (%d train, %d held-out from %d demos)", len(records), len(tr_idx), len(va_idx), len(val_src))
    metrics: dict = {"clips": cfg.clips, "model": wm_cfg.name, "n_train_clips": int(len(tr_idx)),
                     "n_val_clips": int(len(va_idx)), "held_out_source_episodes": sorted(val_src)}
    return out, tracker, clip_videos, tr_idx, va_idx, metrics


def _vae_phase(cfg: TrainWMConfig, out: Path, base, wm_cfg, clip_videos, tr_idx, va_idx, rng, device: str, tracker,
               metrics: dict):
    """Phase 2: the VAE: reload ``out/vae`` when it exists; else take the pretrained / given one
    (checked) or build a new one, train it unless it stays frozen, set its latent statistics
    (new transformers only), measure held-out PSNR and save it. Updates ``metrics``."""
    from world2act.utils.io import read_json, write_json
    from world2act.worldmodel.model import build_vae, check_vae

    vae_dir = out / "vae"
    if (vae_dir / "config.json").is_file():
        from diffusers import AutoencoderKLWan

        metrics.update(read_json(out / "vae_metrics.json") if (out / "vae_metrics.json").is_file() else {})
        return AutoencoderKLWan.from_pretrained(vae_dir).to(device)
    if cfg.vae or base is not None:
        from diffusers import AutoencoderKLWan

        vae_src = cfg.vae or str(cfg.pretrained)
        vae = base.vae if (base is not None and not cfg.vae) else AutoencoderKLWan.from_pretrained(cfg.vae)
        check_vae(vae, wm_cfg, vae_src)
        vae = vae.to(device)
        vm = {"vae": "fine-tuned" if cfg.vae_finetune else "pretrained", "vae_source": vae_src}
    else:
        vae = build_vae(wm_cfg)
        vm = {"vae": "trained"}
    if vm["vae"] != "pretrained":
        _train_vae_and_stats(vae, cfg, out, base, clip_videos[tr_idx], rng, device, tracker, vm)
    vae.eval()
    held = clip_videos[va_idx] if len(va_idx) else clip_videos[tr_idx[:4]]
    vm["vae_psnr_heldout_db"], vm["vae_psnr_heldout_per_frame_db"] = vae_psnr(vae, held[:16], device)
    log.info("VAE reconstruction PSNR on held-out clips: %.2f dB", vm["vae_psnr_heldout_db"])
    write_json(out / "vae_metrics.json", vm)
    tmp = out / "vae.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    vae.save_pretrained(tmp, safe_serialization=True)
    os.replace(tmp, vae_dir)
    metrics.update(vm)
    return vae


def _train_vae_and_stats(vae, cfg: TrainWMConfig, out: Path, base, train_videos, rng, device: str, tracker,
                         vm: dict) -> None:
    """Train the VAE on the training clips (loss log to ``vae_loss_log.csv`` and the tracker);
    without a pretrained transformer, store the per-channel latent mean/std in its config."""
    t0 = time.time()
    hist = train_vae(vae, train_videos, cfg, rng, device)
    vm.update({"vae_steps": (hist[-1][0] + 1) if hist else 0, "vae_train_s": round(time.time() - t0, 1),
               "vae_final_loss": hist[-1][1] if hist else None})
    _write_loss_log(out / "vae_loss_log.csv", hist)
    for s_, l_, lr_ in hist:
        tracker.log({"loss": l_, "lr": lr_}, step=s_, prefix="vae/")
    if base is None:  # a pretrained transformer keeps the latent normalisation it was trained with
        raw = _encode_all(vae.eval(), train_videos, device)
        mean = raw.mean(dim=(0, 2, 3, 4)).tolist()
        std = raw.std(dim=(0, 2, 3, 4)).clamp(min=1e-3).tolist()
        vae.register_to_config(latents_mean=mean, latents_std=std)


def _model_and_latents(cfg: TrainWMConfig, out: Path, base, wm_cfg, vae, device: str, records, clip_videos, tr_idx):
    """Phase 3: the world model around the (frozen) VAE, the clip latents (cached in
    ``out/cache/latents.safetensors``) and the prompt embedding table.

    Returns:
        ``(model, latents, prompt embedding table, prompt index per clip)``.
    """
    import torch
    from safetensors.torch import load_file, save_file

    from world2act.utils.io import atomic_path
    from world2act.worldmodel.data import prompt_windows
    from world2act.worldmodel.model import WorldModel

    model = WorldModel(wm_cfg, transformer=base.transformer if base is not None else None, vae=vae).to(device)
    if base is not None:  # T5 folders / precomputed text embeddings of the pretrained checkpoint
        model.t5_prompts = base.t5_prompts
    for p in model.vae.parameters():
        p.requires_grad_(False)
    cache = out / "cache" / "latents.safetensors"
    if cache.is_file():
        lat = load_file(cache)["latents"]
    else:
        lat = model._encode_raw_batched(clip_videos)
        with atomic_path(cache) as tmp:
            save_file({"latents": lat.contiguous()}, str(tmp))
    prompts = sorted({r.prompt for r in records})
    emb_table = model.encode_prompts(prompts).cpu()
    pidx = torch.tensor([prompts.index(r.prompt) for r in records])
    model.prompt_windows = prompt_windows([records[i] for i in tr_idx]) if cfg.clips == "skills" else {}
    return model, lat, emb_table, pidx


@dataclass
class _TransformerRun:
    """Mutable state of the transformer phase (what a checkpoint saves)."""

    acc: Any
    tr: Any
    opt: Any
    sched: Any
    out: Path
    metrics: dict
    step: int = 0
    loss_log: list = field(default_factory=list)

    @property
    def ckpt(self) -> Path:
        return self.out / "checkpoint"

    def save_ckpt(self) -> None:
        """Write ``checkpoint/`` atomically (transformer, optimiser, schedule, step, loss log)."""
        from world2act.utils.training import save_training_state

        save_training_state(self.ckpt, model_state=self.acc.unwrap_model(self.tr).state_dict(), optimizer=self.opt,
                            scheduler=self.sched, step=self.step,
                            extra={"loss_log": [list(r) for r in self.loss_log],
                                   "val_loss_start": self.metrics["val_loss_start"]})


def _transformer_setup(cfg: TrainWMConfig, out: Path, model, device: str, metrics: dict) -> _TransformerRun:
    """Optimiser, warm-up + cosine schedule and Accelerator for the transformer; resumes from
    ``out/checkpoint`` when it exists (also one written by an older world2act, with the
    transformer in ``checkpoint/transformer/``)."""
    import torch
    from accelerate import Accelerator

    from world2act.utils.training import checkpoint_folder, cosine_scheduler, load_training_state

    acc = Accelerator(cpu=device == "cpu")
    tr = model.transformer
    opt = torch.optim.AdamW(tr.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, betas=(0.9, 0.99))
    sched = cosine_scheduler(opt, cfg.steps, cfg.warmup, 0.1, overlap=True)
    ckpt = out / "checkpoint"
    step = 0
    loss_log: list[tuple[int, float, float]] = []
    if checkpoint_folder(ckpt) is not None:
        st = load_training_state(ckpt, optimizer=opt, scheduler=sched)
        if not st.model_state and (st.folder / "transformer").is_dir():  # older world2act
            from diffusers import CosmosTransformer3DModel

            st.model_state = CosmosTransformer3DModel.from_pretrained(st.folder / "transformer").state_dict()
        tr.load_state_dict(st.model_state)
        step = st.step
        loss_log = [tuple(x) for x in st.extra.get("loss_log", [])]
        metrics["val_loss_start"] = st.extra.get("val_loss_start")
        log.info("resuming from step %d", step)
    tr, opt = acc.prepare(tr, opt)
    model.transformer = acc.unwrap_model(tr)
    return _TransformerRun(acc, tr, opt, sched, out, metrics, step, loss_log)


def _train_transformer(cfg: TrainWMConfig, out: Path, model, lat, emb_table, pidx, tr_idx, va_idx, device: str,
                       tracker, metrics: dict):
    """Phase 4: flow-matching training of the transformer (held-out validation loss at the
    start, checkpoints every ``ckpt_every`` steps, ``max_minutes`` cap).

    Returns:
        ``(final step, validation latents, validation prompt embeddings)``.

    Raises:
        World2ActError: a non-finite loss (the last good checkpoint is kept).
    """
    run_ = _transformer_setup(cfg, out, model, device, metrics)
    x_val, e_val = lat[va_idx], emb_table[pidx[va_idx]]
    if len(va_idx) == 0:
        x_val, e_val = lat[tr_idx[:8]], emb_table[pidx[tr_idx[:8]]]
    if metrics.get("val_loss_start") is None:
        model.eval()
        metrics["val_loss_start"] = validation_loss(model, x_val, e_val)
    log.info("validation flow-matching loss at start: %.4f", metrics["val_loss_start"]["mean"])
    if run_.step == 0:
        tracker.log(metrics["val_loss_start"], step=0, prefix="val/")
    t_train = time.time()
    steps_done, stopped = _transformer_loop(cfg, run_, model, lat, emb_table, pidx, tr_idx, tracker)
    train_s = time.time() - t_train
    _write_loss_log(out / "loss_log.csv", run_.loss_log)
    if stopped:
        tracker.close()
        raise World2ActError(f"training stopped: {stopped}; the last good checkpoint is kept in {run_.ckpt} "
                             "(lower lr or check the data, then rerun with --resume)")
    if run_.acc.is_main_process:
        run_.save_ckpt()
    metrics["steps"] = run_.step
    metrics["train_steps_per_s"] = round(steps_done / train_s, 3) if steps_done else None
    return run_.step, x_val, e_val


def _transformer_loop(cfg: TrainWMConfig, run_: _TransformerRun, model, lat, emb_table, pidx, tr_idx, tracker):
    """The optimisation loop from ``run_.step`` to ``cfg.steps``; returns ``(steps done, reason
    it stopped early or None)``. Logs every ``log_every`` steps, checkpoints every ``ckpt_every``."""
    import torch

    from world2act.utils.progress import progress_bar

    acc, tr, opt, sched = run_.acc, run_.tr, run_.opt, run_.sched
    g = torch.Generator().manual_seed(cfg.seed + 7919 * run_.step + acc.process_index)
    brng = np.random.default_rng(cfg.seed + run_.step + 1000 * acc.process_index)
    tr.train()
    t_train = time.time()
    steps_done = 0
    bar = progress_bar(total=cfg.steps, initial=run_.step, desc="WM", disable=not acc.is_local_main_process)
    stopped = None
    while run_.step < cfg.steps:
        b = brng.choice(tr_idx, cfg.batch_size, replace=len(tr_idx) < cfg.batch_size)
        x0 = lat[b].to(acc.device)
        n_cond = 1 if cfg.cond_frames == 1 else 1 + int(brng.integers(cfg.cond_frames))  # 1 draws nothing: same batches
        emb = emb_table[pidx[b]].clone()
        drop = torch.rand(len(b), generator=g) < cfg.prompt_dropout
        emb[drop] = 0.0
        loss = model.flow_matching_loss(x0, emb.to(acc.device), generator=g, p_mean=cfg.p_mean, p_std=cfg.p_std,
                                        motion_weight=cfg.motion_weight, num_cond=n_cond,
                                        denoiser=run_.tr)  # the prepared (possibly DDP-wrapped) module: gradients sync
        if not torch.isfinite(loss):
            stopped = f"non-finite loss ({loss.item()}) at step {run_.step}"
            break
        opt.zero_grad(set_to_none=True)
        acc.backward(loss)
        if cfg.grad_clip:
            acc.clip_grad_norm_(tr.parameters(), cfg.grad_clip)
        opt.step()
        sched.step()
        run_.step += 1
        steps_done += 1
        bar.update(1)
        step = run_.step
        if step % cfg.log_every == 0 or step == 1:
            run_.loss_log.append((step, loss.item(), sched.get_last_lr()[0]))
            tracker.log({"loss": run_.loss_log[-1][1], "lr": run_.loss_log[-1][2]}, step=step, prefix="train/")
            bar.set_postfix(loss=f"{loss.item():.4f}")
        if step % cfg.ckpt_every == 0 and acc.is_main_process:
            run_.save_ckpt()
        if cfg.max_minutes and (time.time() - t_train) / 60 > cfg.max_minutes:  # transformer phase only
            log.warning("max_minutes=%s reached at step %d", cfg.max_minutes, step)
            break
    bar.close()
    return steps_done, stopped


def _finish(cfg: TrainWMConfig, out: Path, model, x_val, e_val, va_idx, clip_videos, records, step: int, tracker,
            metrics: dict, started: float) -> dict:
    """Phase 5: save the final model, held-out validation loss and generation metrics, then
    ``metrics.json`` and the manifest; returns ``metrics``."""
    from world2act.utils.io import write_json
    from world2act.utils.manifest import write_manifest

    model.eval()
    model.save(out, save_vae=False)
    metrics["val_loss_end"] = validation_loss(model, x_val, e_val)
    log.info("validation flow-matching loss at end: %.4f", metrics["val_loss_end"]["mean"])
    if len(va_idx) and cfg.eval_clips:
        sel = va_idx[:cfg.eval_clips]
        t0 = time.time()
        metrics["heldout_generation"] = generation_metrics(model, clip_videos[sel], [records[i].prompt for i in sel],
                                                           cfg.eval_steps, seed=cfg.seed)
        metrics["heldout_generation"]["seconds_per_clip"] = round((time.time() - t0) / len(sel), 3)
        log.info("held-out generation: %s", metrics["heldout_generation"])
        if cfg.cond_frames > 1:  # every n scored on the same frames: what the extra conditioning frames buy
            from world2act.worldmodel.alignment import num_pixel_frames

            last = num_pixel_frames(cfg.cond_frames)
            metrics["heldout_generation_by_cond_frames"] = {
                str(n): generation_metrics(model, clip_videos[sel], [records[i].prompt for i in sel], cfg.eval_steps,
                                           seed=cfg.seed, cond_frames=n, score_from=last)
                for n in range(1, cfg.cond_frames + 1)}
            log.info("held-out generation by conditioning frames: %s", metrics["heldout_generation_by_cond_frames"])
    metrics["wall_time_s"] = round(time.time() - started, 1)
    tracker.log(metrics["val_loss_end"], step=step, prefix="val/")
    tracker.log(metrics.get("heldout_generation", {}), step=step, prefix="eval/")
    tracker.close()
    write_json(out / "metrics.json", metrics)
    write_manifest(out, stage="train-wm", config=dataclasses.asdict(cfg),
                   inputs={"dataset": str(cfg.dataset), "pretrained": cfg.pretrained, "vae": cfg.vae},
                   metrics=metrics, started=started)
    return metrics


def _write_loss_log(path: Path, rows) -> None:
    from world2act.utils.io import atomic_write

    atomic_write(path, "step,loss,lr\n" + "".join(f"{s},{l:.6f},{lr:.3e}\n" for s, l, lr in rows))


# ---------------------------------------------------------------------------------------- CLI
Config, RUN_OPTIONS = TrainWMConfig, ("resume", "overwrite", "log_with")


def main(cfg: TrainWMConfig, args) -> int:
    m = run(cfg, args.out, resume=args.resume, overwrite=args.overwrite, log_with=args.log_with)
    end = m["val_loss_end"]["mean"]
    print(f"world model written to {args.out}: val flow-matching loss {m['val_loss_start']['mean']:.4f} -> {end:.4f}")
    return 0
