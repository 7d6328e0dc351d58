"""Stage-1 speed figures on this machine: one training step and held-out evaluation.

Usage: .venv/bin/python benchmarks/bench_align.py [--threads 2]
Prints milliseconds per training step at the `small` world model's latent shape (C=16, 8x16,
T'=4, K=16, A=7): in-batch negatives (default, 32 items) vs explicit (16 anchors x 16 items).
"""
import argparse
import time

import torch

from world2act.align import AlignConfig, synthetic_dataset, train_adapters


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--steps", type=int, default=20)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    data = synthetic_dataset(n_skills=20, n_demos=10, T=4, K=16, A=7, C=16, size=(8, 16))
    for mode, kw in (("in_batch", dict(batch_size=32)), ("explicit", dict(anchors_per_batch=16))):
        cfg = AlignConfig(steps=args.steps, negatives=mode, num_negatives=15, eval_every=10**6, log_every=10**6, **kw)
        t = time.perf_counter()
        train_adapters(data, None, cfg, progress=False)
        dt = (time.perf_counter() - t) / args.steps
        print(f"{mode} {kw}, 15 negatives/anchor, C=16 8x16 T'=4 K=16 A=7: {dt * 1000:.1f} ms/step "
              f"({args.threads} threads)")


if __name__ == "__main__":
    main()
