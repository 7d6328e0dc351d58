"""World-model speed benchmark (not a test): training steps/s and one-clip generation time.

Usage: .venv/bin/python benchmarks/bench_worldmodel.py [--config small] [--threads 2] [--steps 10]
Targets (issue 4): a 17-frame clip at the ``small`` config in <= 2 s with <= 10 sampling steps on
2 cores; the small config trains to its metrics within 30 minutes on 2 cores.
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import torch


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", default="small")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--train-steps", type=int, default=10)
    ap.add_argument("--steps", type=int, default=10, help="sampling steps")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    from world2act.worldmodel import WorldModel

    torch.manual_seed(0)
    m = WorldModel.from_config(a.config)
    cfg = m.config
    h, w = cfg.frame_size
    nt = sum(p.numel() for p in m.transformer.parameters())
    nv = sum(p.numel() for p in m.vae.parameters())
    print(f"config {cfg.name}: frames {cfg.num_frames}x{h}x{w}, latents {cfg.num_latent_frames}x{cfg.latent_channels}x"
          f"{cfg.latent_size}, transformer {nt / 1e6:.2f} M params, VAE {nv / 1e6:.2f} M params, threads {a.threads}")
    video = np.random.default_rng(0).integers(0, 256, (a.batch, cfg.num_frames, h, w, 3), dtype=np.uint8)
    with torch.no_grad():
        m.encode(video[:1])
        t = time.perf_counter(); z = m.encode(video[:1]); enc = time.perf_counter() - t
        t = time.perf_counter(); m.decode(z); dec = time.perf_counter() - t
    print(f"VAE encode 17 frames: {enc:.3f} s, decode: {dec:.3f} s")
    x0 = m.encode(video).permute(0, 2, 1, 3, 4)
    emb = m.encode_prompts(["pick up the bowl"] * a.batch)
    opt = torch.optim.AdamW(m.transformer.parameters(), lr=1e-4)
    for i in range(a.train_steps + 2):
        if i == 2:
            t = time.perf_counter()
        loss = m.flow_matching_loss(x0, emb)
        opt.zero_grad(); loss.backward(); opt.step()
    dt = (time.perf_counter() - t) / a.train_steps
    print(f"training step (batch {a.batch}, fwd+bwd+AdamW): {dt:.3f} s -> {1 / dt:.2f} steps/s")
    m.eval()
    m.generate_clip(video[0, 0], "pick up the bowl", num_inference_steps=2)
    times = []
    for s in range(3):
        t = time.perf_counter()
        m.generate_clip(video[0, 0], "pick up the bowl", num_inference_steps=a.steps, seed=s)
        times.append(time.perf_counter() - t)
    print(f"generate one {cfg.num_frames}-frame clip, {a.steps} steps (encode + sample + decode): "
          f"median {np.median(times):.3f} s (min {min(times):.3f} s)")


if __name__ == "__main__":
    main()
