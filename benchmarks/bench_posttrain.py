"""Stage 2 costs (issue 7 targets; the paper's Table S5 and Table S2 arguments).

Prints:
1. inference latency at batch 1 of the base policy vs base + World2Act residual (ms per chunk,
   ms per action, Hz) and the residual's overhead (target ≤ 10% of the base chunk latency;
   the paper: 3.6 → 4.0 ms, +11%);
2. the cost of one Stage 2 update step (residual forward/backward + AdamW, the loss of Eq. 1)
   vs one step of fine-tuning the base policy itself (flow-matching loss, all base weights)
   on the same batch of N·T observations (target: Stage 2 ≥ 2× cheaper).

Uses the default built-in base policy (chunk K = 16 to match Stage 1) and default adapters;
weights are random, which does not change the cost. Run: .venv/bin/python benchmarks/bench_posttrain.py
"""
from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch

from world2act.align import AlignmentBundle
from world2act.align.bundle import AdapterConfig
from world2act.evaluation.latency import measure_latency, synthetic_observation
from world2act.policies.flow_policy import FlowPolicy, FlowPolicyConfig, images_to_tensor
from world2act.policies.normalizer import Normalizer
from world2act.policies.residual import ResidualPolicy
from world2act.posttrain.objective import RolloutBatch, stage2_step


def build(chunk: int):
    rng = np.random.default_rng(0)
    norm = Normalizer.fit_arrays({"observation.state": rng.normal(size=(100, 8)), "action": rng.uniform(-1, 1, (100, 7))})
    base = FlowPolicy(FlowPolicyConfig(benchmark="libero_object", action_dim=7, state_dim=8, chunk_size=chunk), norm)
    bundle = AlignmentBundle(AdapterConfig(action_dim=7, chunk_size=chunk, latent_dim=32, latent_channels=16), seed=0)
    return base, ResidualPolicy.create(base, bundle, camera="agentview", align_dir="")


def timeit(fn, n: int) -> float:
    fn()
    ts = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return statistics.median(ts) * 1000


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--chunk", type=int, default=16)
    ap.add_argument("--envs", type=int, default=4, help="N parallel rollouts per update")
    ap.add_argument("--chunks", type=int, default=8, help="T chunks per rollout")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("-n", type=int, default=10)
    a = ap.parse_args()
    torch.manual_seed(0)
    base, res = build(a.chunk)
    with torch.no_grad():
        res.residual.gate.fill_(0.1)  # a trained residual, not the zero-gated initial one
    obs = synthetic_observation(base)
    lb = measure_latency(base, obs, n=50, threads=1)
    lr = measure_latency(res, obs, n=50, threads=1)
    print("## Inference at batch 1, 1 thread (Table S5 analogue)")
    print("| policy | ms per chunk | ms per action | Hz |\n|---|---|---|---|")
    for name, l in (("base", lb), ("base + World2Act", lr)):
        print(f"| {name} | {l['ms_per_chunk']:.2f} | {l['ms_per_action']:.3f} | {l['hz']:.0f} |")
    print(f"residual overhead: {100 * (lr['ms_per_chunk'] / lb['ms_per_chunk'] - 1):+.1f}% (target ≤ +10%)\n")

    torch.set_num_threads(a.threads)
    N, T, K = a.envs, a.chunks, a.chunk
    B = N * T
    big = synthetic_observation(base, batch=B, seed=1)
    imgs = torch.from_numpy(big["observation.images.agentview"]).permute(0, 3, 1, 2).float() / 255
    batch = RolloutBatch(images=imgs.reshape(N, T, 3, 64, 64), states=torch.randn(N, T, 8),
                         base_chunks=torch.rand(N, T, K, 7) * 2 - 1, targets=torch.randn(N, T, 32),
                         valid=torch.ones(N, T, dtype=torch.bool))
    params = [p for p in res.residual.parameters() if p.requires_grad]
    opt_r = torch.optim.AdamW(params, lr=3e-4)
    norm = (torch.zeros(8), torch.ones(8))

    def residual_step():
        loss, _ = stage2_step(res.residual, res.bundle.f_a, batch, norm)
        opt_r.zero_grad()
        loss.backward()
        opt_r.step()

    net = base.net.train()
    opt_b = torch.optim.AdamW(net.parameters(), lr=3e-4)
    lang = base.embed_tasks(big["task"])
    cams = [images_to_tensor(big[f"observation.images.{c}"], base.image_size) for c in base.cameras]
    state = torch.randn(B, 8)
    target = torch.rand(B, K, 7) * 2 - 1

    def base_step():
        loss = net.loss(net.encode(cams, state, lang), target)
        opt_b.zero_grad()
        loss.backward()
        opt_b.step()

    tr, tb = timeit(residual_step, a.n), timeit(base_step, a.n)
    n_res = sum(p.numel() for p in params)
    n_base = sum(p.numel() for p in net.parameters())
    print(f"## One update on the same batch of {B} observations (N={N} rollouts × T={T} chunks), {a.threads} threads")
    print("| update | trainable params | ms per step |\n|---|---|---|")
    print(f"| Stage 2 residual (Eq. 1) | {n_res:,} | {tr:.1f} |")
    print(f"| fine-tune the base policy (flow matching) | {n_base:,} | {tb:.1f} |")
    print(f"Stage 2 step is {tb / tr:.1f}× cheaper (target ≥ 2×)")


if __name__ == "__main__":
    main()
