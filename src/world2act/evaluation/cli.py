"""``world2act eval``: success rates under the standard protocol, speed, videos (paper Sec. 5.1)."""
from __future__ import annotations

import argparse

from world2act import World2ActError


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--policy", required=True,
                   help="policy folder (train-base / post-train output), 'expert', or remote://HOST:PORT (world2act serve)")
    p.add_argument("--benchmark", required=True,
                   help="libero_object | libero_spatial | libero_goal | libero_10 | libero_90 | metaworld")
    p.add_argument("--tasks", default="all", help="comma-separated task ids / Meta-World names, or 'all' (default)")
    p.add_argument("--trials", type=int, default=50, help="trials per task and seed (default 50, the paper's protocol)")
    p.add_argument("--seeds", default="0", help="comma-separated evaluation seeds (default 0; the paper uses 0,1,2,3,4)")
    p.add_argument("--workers", type=int, default=2, help="worker processes (default 2; 0 = in this process)")
    p.add_argument("--video-episodes", type=int, default=2, help="episodes to record as MP4 (default 2)")
    p.add_argument("--image-size", type=int, help="render size for the policy's cameras (default: the policy's)")
    p.add_argument("--init-offset-per-seed", type=int, default=0,
                   help="LIBERO: init state of trial i for the k-th seed is (i + k*N) %% 50 (default 0 = official)")
    p.add_argument("--no-latency", action="store_true", help="skip the batch-1 inference timing")
    p.add_argument("--resume", action="store_true", help="keep finished episodes in --out and run the rest")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out folder")


def main(args: argparse.Namespace) -> int:
    from world2act.evaluation.harness import evaluate
    from world2act.utils.seeding import resolve_device

    if not args.out:
        raise World2ActError("eval: --out is required (folder for eval.json, eval.md, videos)")
    res = evaluate(args.policy, args.benchmark, args.tasks, args.trials, args.seeds, args.out, workers=args.workers,
                   video_episodes=args.video_episodes, image_size=args.image_size, device=resolve_device(args.device),
                   resume=args.resume, overwrite=args.overwrite, latency=not args.no_latency,
                   init_offset_per_seed=args.init_offset_per_seed)
    o = res["overall"]
    rate = "n/a" if o["success_rate"] is None else f"{100 * o['success_rate']:.1f}%"
    print(f"{args.policy} on {args.benchmark}: mean success {rate} ({o['n_success']}/{o['n_trials']}, "
          f"{o['n_errors']} errors) -> {args.out}/eval.md")
    return 0
