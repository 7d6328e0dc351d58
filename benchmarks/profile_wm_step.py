"""Where one world-model training step spends its time (issue 16): transformer step and VAE step.

    OMP_NUM_THREADS=1 python benchmarks/profile_wm_step.py --wm runs/mw/wm --dataset runs/mw/skills \
        --out runs/wm16/profile.json [--reps 12] [--vae-reps 6] [--threads 1] [--clock wall|cpu]

Transformer step (as ``train-wm`` runs it: batch 4 of cached latents, cached prompt embeddings):
batch gather, noising + forward (``flow_matching_loss``), backward, grad clip, AdamW step.
VAE step (as ``train_vae``: batch 4 of 17-frame 32x32 crops): crop gather, encode, decode,
loss, backward, clip, AdamW. One-time costs: prompt encoding (MiniLM) and latent encoding
per clip. Medians over ``--reps`` after two warm-up steps; plus the top operators of the
transformer step from ``torch.profiler``.
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np
import torch


CLOCK = time.perf_counter  # --clock cpu: time.process_time (CPU seconds of this process; robust to load)


def _t(fn):
    t0 = CLOCK()
    r = fn()
    return r, CLOCK() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--wm", required=True)
    ap.add_argument("--dataset", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--reps", type=int, default=12)
    ap.add_argument("--vae-reps", type=int, default=6)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--clock", choices=["wall", "cpu"], default="wall",
                    help="wall: perf_counter; cpu: process CPU time (use on a loaded machine)")
    a = ap.parse_args()
    global CLOCK
    CLOCK = time.process_time if a.clock == "cpu" else time.perf_counter
    torch.set_num_threads(a.threads)
    from safetensors.torch import load_file

    from world2act.data import LeRobotDataset
    from world2act.worldmodel import WorldModel
    from world2act.worldmodel.data import build_clips, load_clip_videos

    res: dict = {"threads": a.threads, "batch": a.batch, "clock": a.clock}
    wm, res["load_wm_s"] = _t(lambda: WorldModel.load(a.wm, device="cpu"))
    lat = load_file(Path(a.wm) / "cache" / "latents.safetensors")["latents"]
    ds = LeRobotDataset(a.dataset)
    recs = build_clips(ds, "skills", wm.config.num_frames, wm.config.frame_stride, "pad")
    vids, res["load_clip_videos_s"] = _t(lambda: load_clip_videos(ds, recs, wm.config))
    prompts = sorted({r.prompt for r in recs})
    emb_table, res["encode_prompts_once_s"] = _t(lambda: wm.encode_prompts(prompts).cpu())
    res["n_prompts"] = len(prompts)
    pidx = torch.tensor([prompts.index(r.prompt) for r in recs])
    with torch.no_grad():
        _, enc1 = _t(lambda: wm._encode_raw_batched(vids[:8]))
    res["encode_latents_per_clip_s"] = enc1 / 8

    # ---- transformer step
    tr = wm.transformer.train()
    opt = torch.optim.AdamW(tr.parameters(), lr=1e-5)
    g = torch.Generator().manual_seed(0)
    rng = np.random.default_rng(0)
    rows = []
    for k in range(a.reps + 2):
        t0 = CLOCK()
        b = rng.choice(len(lat), a.batch)
        x0 = lat[b]
        emb = emb_table[pidx[b]].clone()
        t1 = CLOCK()
        loss = wm.flow_matching_loss(x0, emb, generator=g)
        t2 = CLOCK()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        t3 = CLOCK()
        torch.nn.utils.clip_grad_norm_(tr.parameters(), 1.0)
        t4 = CLOCK()
        opt.step()
        t5 = CLOCK()
        if k >= 2:
            rows.append((t1 - t0, t2 - t1, t3 - t2, t4 - t3, t5 - t4, t5 - t0))
    names = ("batch_gather", "forward", "backward", "grad_clip", "adamw", "total")
    res["transformer_step_s"] = {n: statistics.median(r[i] for r in rows) for i, n in enumerate(names)}
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(3):
            loss = wm.flow_matching_loss(lat[:a.batch], emb_table[pidx[:a.batch]], generator=g)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    tab = prof.key_averages()
    tot = sum(e.self_cpu_time_total for e in tab)
    top = sorted(tab, key=lambda e: -e.self_cpu_time_total)[:12]
    res["transformer_top_ops_self_cpu_share"] = {e.key: round(e.self_cpu_time_total / tot, 3) for e in top}
    res["transformer_params_m"] = sum(p.numel() for p in tr.parameters()) / 1e6

    # ---- VAE step
    vae = wm.vae.train()
    for p in vae.parameters():
        p.requires_grad_(True)
    vopt = torch.optim.AdamW(vae.parameters(), lr=1e-6)
    n, t, h, w = vids.shape[:4]
    rows = []
    for k in range(a.vae_reps + 2):
        t0 = CLOCK()
        idx = rng.integers(0, n, a.batch)
        ys, xs = rng.integers(0, h - 32 + 1, a.batch), rng.integers(0, w - 32 + 1, a.batch)
        clip = np.stack([vids[i, :, y:y + 32, x:x + 32] for i, y, x in zip(idx, ys, xs)])
        x = torch.from_numpy(clip).float().div(127.5).sub(1).permute(0, 4, 1, 2, 3)
        t1 = CLOCK()
        post = vae.encode(x).latent_dist
        z = post.sample()
        t2 = CLOCK()
        rec = vae.decode(z).sample
        t3 = CLOCK()
        kl = 0.5 * (post.mean ** 2 + post.var - 1 - post.logvar).mean()
        loss = (rec - x).abs().mean() + ((rec - x) ** 2).mean() + 1e-6 * kl
        vopt.zero_grad(set_to_none=True)
        loss.backward()
        t4 = CLOCK()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        vopt.step()
        t5 = CLOCK()
        if k >= 2:
            rows.append((t1 - t0, t2 - t1, t3 - t2, t4 - t3, t5 - t4, t5 - t0))
    names = ("crop_gather", "encode", "decode", "loss_backward", "clip_adamw", "total")
    res["vae_step_s"] = {n: statistics.median(r[i] for r in rows) for i, n in enumerate(names)}
    res["vae_params_m"] = sum(p.numel() for p in vae.parameters()) / 1e6
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(res, indent=2))
    print(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
