"""``world2act eval``: success rates under the standard protocol, speed, videos (paper Sec. 5.1)."""
from __future__ import annotations

import argparse
import dataclasses
from typing import Any

from world2act import World2ActError


@dataclasses.dataclass
class EvalConfig:
    """Configuration of ``world2act eval`` (``--config FILE.yaml`` keys and ``key=value`` overrides).

    Attributes (as the options of the same names): policy, benchmark (both required, as options
    or here), tasks (``all``, a comma-separated string or a list), trials, seeds (the protocol's
    evaluation seeds: an int, a comma-separated string or a list), workers, video_episodes,
    image_size (None: the policy's), init_offset_per_seed, init_states (``eval`` or
    ``validation``), latency (False = ``--no-latency``).
    """

    policy: str = ""
    benchmark: str = ""
    tasks: Any = "all"
    trials: int = 50
    seeds: Any = "0"
    workers: int = 2
    video_episodes: int = 2
    image_size: int | None = None
    init_offset_per_seed: int = 0
    init_states: str = "eval"
    latency: bool = True


def eval_config(args: argparse.Namespace) -> EvalConfig:
    """The :class:`EvalConfig` of a parsed ``world2act eval`` command line: defaults <- ``--config``
    <- options <- ``key=value`` overrides.

    Raises:
        World2ActError: a bad config file or override, no policy or benchmark, or ``--seed``
            (evaluation seeds are ``--seeds``; the shared ``--seed`` does not apply).
    """
    from world2act.utils.config import load_config

    if getattr(args, "seed", 0):
        raise World2ActError(f"eval: --seed {args.seed} does not apply; evaluation seeds are --seeds "
                             "(e.g. --seeds 0,1,2,3,4)")
    cfg = load_config(EvalConfig, getattr(args, "config", None), getattr(args, "overrides", None),
                      policy=args.policy, benchmark=args.benchmark, tasks=args.tasks, trials=args.trials,
                      seeds=args.seeds, workers=args.workers, video_episodes=args.video_episodes,
                      image_size=args.image_size, init_offset_per_seed=args.init_offset_per_seed,
                      init_states=args.init_states, latency=False if args.no_latency else None)
    if not cfg.policy:
        raise World2ActError("eval: --policy is required (or policy: in --config)")
    if not cfg.benchmark:
        raise World2ActError("eval: --benchmark is required (or benchmark: in --config)")
    if isinstance(cfg.tasks, int):
        cfg.tasks = str(cfg.tasks)
    if isinstance(cfg.seeds, int):
        cfg.seeds = [cfg.seeds]
    return cfg


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--policy",
                   help="policy folder (train-base / post-train output), 'expert', or remote://HOST:PORT (world2act serve); "
                        "required here or in --config")
    p.add_argument("--benchmark",
                   help="libero_object | libero_spatial | libero_goal | libero_10 | libero_90 | metaworld, or a "
                        "LIBERO-Object robustness suite: libero_object_swap | _object | _lan | _task | _with_mug | "
                        "_with_yellow_book (required here or in --config)")
    p.add_argument("--tasks", default=None, help="comma-separated task ids / Meta-World names, or 'all' (default)")
    p.add_argument("--trials", type=int, default=None, help="trials per task and seed (default 50, the paper's protocol)")
    p.add_argument("--seeds", default=None, help="comma-separated evaluation seeds (default 0; the paper uses 0,1,2,3,4)")
    p.add_argument("--workers", type=int, default=None, help="worker processes (default 2; 0 = in this process)")
    p.add_argument("--video-episodes", type=int, default=None, help="episodes to record as MP4 (default 2)")
    p.add_argument("--image-size", type=int, help="render size for the policy's cameras (default: the policy's)")
    p.add_argument("--init-offset-per-seed", type=int, default=None,
                   help="LIBERO: init state of trial i for the k-th seed is (i + k*N) %% 50 (default 0 = official)")
    p.add_argument("--init-states", default=None, choices=["eval", "validation"],
                   help="eval (default: the protocol's held-out init states) or validation (seeded resets from the "
                        "post-training range, disjoint from Stage 2's own: choose settings here, never on eval)")
    p.add_argument("--no-latency", action="store_true", help="skip the batch-1 inference timing")
    p.add_argument("--resume", action="store_true", help="keep finished episodes in --out and run the rest")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out folder")


def main(args: argparse.Namespace) -> int:
    """``world2act eval``: evaluate the policy of :func:`eval_config` and print the mean success."""
    from world2act.evaluation.harness import evaluate
    from world2act.utils.seeding import resolve_device

    if not args.out:
        raise World2ActError("eval: --out is required (folder for eval.json, eval.md, videos)")
    cfg = eval_config(args)
    res = evaluate(cfg.policy, cfg.benchmark, cfg.tasks, cfg.trials, cfg.seeds, args.out, workers=cfg.workers,
                   video_episodes=cfg.video_episodes, image_size=cfg.image_size, device=resolve_device(args.device),
                   resume=args.resume, overwrite=args.overwrite, latency=cfg.latency,
                   init_offset_per_seed=cfg.init_offset_per_seed, init_states=cfg.init_states)
    o = res["overall"]
    rate = "n/a" if o["success_rate"] is None else f"{100 * o['success_rate']:.1f}%"
    print(f"{cfg.policy} on {cfg.benchmark}: mean success {rate} ({o['n_success']}/{o['n_trials']}, "
          f"{o['n_errors']} errors) -> {args.out}/eval.md")
    return 0
