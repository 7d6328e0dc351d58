"""Residual latency overhead, timed the fair way: base and base + World2Act interleaved in ONE process.

Timing the two policies in separate processes (as each ``world2act eval`` does) compares two
different machine loads: a fresh quick run once reported +41.9% for the residual, while the
same two policies timed back to back in one process gave +4.2 … +6.7%. This script times them
with :func:`world2act.evaluation.paired_latency.paired_latency` (A, B, B, A, … at batch 1 on
the same observation) and prints each policy's median ms per chunk and the paired ratio
(median of per-round ratios, bootstrap 95% interval); with ``--repeat R`` it repeats the whole
measurement R times to show how stable the ratio is.

By default it builds two small fresh policies (random weights do not change the cost): the
built-in flow-matching base (K = 16, as the presets) and a ResidualPolicy on top of it with
default Stage-1 adapters and an open gate (a trained residual, not the zero-gated initial one).

    .venv/bin/python benchmarks/bench_latency_paired.py
    .venv/bin/python benchmarks/bench_latency_paired.py --base runs/mw/base4k --post runs/mw/pt-exp/policy
    .venv/bin/python benchmarks/bench_latency_paired.py -n 100 --repeat 3 --json /tmp/lat.json
"""
from __future__ import annotations

import argparse
import json
import os
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def build(chunk: int = 16, small: bool = False):
    """A fresh base FlowPolicy (libero_object shapes: A = 7, S = 8, agentview + wrist 64²) and a
    ResidualPolicy on top of it (gate opened to 0.1). ``small``: a tiny base (d_model 32) for
    quick checks. Returns ``(base, post)``."""
    import numpy as np
    import torch

    from world2act.align import AlignmentBundle
    from world2act.align.bundle import AdapterConfig
    from world2act.policies.flow_policy import FlowPolicy, FlowPolicyConfig
    from world2act.policies.normalizer import Normalizer
    from world2act.policies.residual import ResidualPolicy

    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    norm = Normalizer.fit_arrays({"observation.state": rng.normal(size=(100, 8)), "action": rng.uniform(-1, 1, (100, 7))})
    kw = dict(d_model=32, n_heads=2, enc_layers=1, dec_layers=1, ffn_dim=64, flow_steps=3) if small else {}
    base = FlowPolicy(FlowPolicyConfig(benchmark="libero_object", action_dim=7, state_dim=8, chunk_size=chunk, **kw), norm)
    bundle = AlignmentBundle(AdapterConfig(action_dim=7, chunk_size=chunk, latent_dim=32, latent_channels=16), seed=0)
    post = ResidualPolicy.create(base, bundle, camera="agentview", align_dir="")
    with torch.no_grad():
        post.residual.gate.fill_(0.1)
    return base, post


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--base", help="base policy folder (default: a fresh built-in base)")
    ap.add_argument("--post", help="post-trained policy folder (default: a fresh residual on the base)")
    ap.add_argument("--chunk", type=int, default=16, help="chunk size K of the fresh policies")
    ap.add_argument("--small", action="store_true", help="tiny fresh base (d_model 32): a quick smoke check")
    ap.add_argument("-n", type=int, default=50, help="timed rounds (one call of each policy per round)")
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads while timing")
    ap.add_argument("--repeat", type=int, default=1, help="repeat the whole paired measurement")
    ap.add_argument("--json", help="also write the figures to this JSON file")
    a = ap.parse_args()

    from world2act.evaluation.latency import synthetic_observation
    from world2act.evaluation.paired_latency import paired_latency

    if bool(a.base) != bool(a.post):
        ap.error("--base and --post go together")
    if a.base:
        from world2act.policies import load_policy

        base, post = load_policy(a.base), load_policy(a.post)
        what = f"{a.base} vs {a.post}"
    else:
        base, post = build(a.chunk, a.small)
        what = f"fresh built-in base (K={a.chunk}{', tiny' if a.small else ''}) vs the same base + residual"
    obs = synthetic_observation(base)
    print(f"# Paired latency, batch 1, {a.threads} thread(s), {a.n} interleaved rounds: {what}")
    print(f"load average {os.getloadavg()} on {os.cpu_count()} cores (shared machine)\n")
    print("| repeat | base ms/chunk | base + World2Act ms/chunk | paired ratio | 95% CI | overhead | other load (cores) |")
    print("|---:|---:|---:|---:|---|---:|---:|")
    runs = []
    for r in range(max(1, a.repeat)):
        res = paired_latency({"base": base, "base + World2Act": post}, obs, n=a.n, warmup=a.warmup, threads=a.threads, seed=r)
        pb, pp = res["policies"]["base"], res["policies"]["base + World2Act"]
        lo, hi = res["ratio_ci95"]
        print(f"| {r} | {pb['ms_per_chunk']:.2f} | {pp['ms_per_chunk']:.2f} | {res['ratio']:.3f} | {lo:.3f} … {hi:.3f} | "
              f"{100 * (res['ratio'] - 1):+.1f}% | {res['other_load_cores']} |", flush=True)
        runs.append(res)
    print("\npaper (Table S5): 3.6 → 4.0 ms per chunk, +11%")
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"what": what, "runs": runs}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
