"""``world2act eval``: success rates under the standard protocol, speed, videos (paper Sec. 5.1)."""
from __future__ import annotations

import dataclasses
from typing import Any

from world2act import World2ActError
from world2act.utils.config import opt


@dataclasses.dataclass
class EvalConfig:
    """Configuration of ``world2act eval`` (options, ``--config FILE.yaml`` keys and ``key=value``
    overrides; ``tasks`` and ``seeds`` may also be lists in YAML)."""

    policy: str = opt("", "policy folder (train-base / post-train output), 'expert', or remote://HOST:PORT "
                      "(world2act serve); required here or in --config", required=True)
    benchmark: str = opt("", "libero_object | libero_spatial | libero_goal | libero_10 | libero_90 | metaworld, or a "
                         "LIBERO-Object robustness suite: libero_object_swap | _object | _lan | _task | _with_mug | "
                         "_with_yellow_book (required here or in --config)", required=True)
    tasks: Any = opt("all", "comma-separated task ids / Meta-World names, or 'all' (default)")
    trials: int = opt(50, "trials per task and seed (default 50, the paper's protocol)")
    seeds: Any = opt("0", "comma-separated evaluation seeds (default 0; the paper uses 0,1,2,3,4)")
    workers: int = opt(2, "worker processes (default 2; 0 = in this process)")
    video_episodes: int = opt(2, "episodes to record as MP4 (default 2)")
    image_size: int | None = opt(None, "render size for the policy's cameras (default: the policy's)")
    init_offset_per_seed: int = opt(0, "LIBERO: init state of trial i for the k-th seed is (i + k*N) %% 50 "
                                    "(default 0 = official)")
    init_states: str = opt("eval", "eval (default: the protocol's held-out init states) or validation (seeded resets "
                           "from the post-training range, disjoint from Stage 2's own: choose settings here, never on "
                           "eval)", choices=["eval", "validation"])
    latency: bool = opt(True, "skip the batch-1 inference timing", flag="--no-latency")


Config, RUN_OPTIONS = EvalConfig, ("resume", "overwrite")


def make_config(args) -> EvalConfig:
    """The :class:`EvalConfig` of a parsed ``world2act eval`` command line (``--seed`` is refused:
    evaluation seeds are ``--seeds``)."""
    from world2act.utils.config import config_from_args

    if args.seed:
        raise World2ActError(f"eval: --seed {args.seed} does not apply; evaluation seeds are --seeds "
                             "(e.g. --seeds 0,1,2,3,4)")
    cfg = config_from_args(EvalConfig, args, where="eval")
    return dataclasses.replace(cfg, tasks=str(cfg.tasks) if isinstance(cfg.tasks, int) else cfg.tasks,
                               seeds=[cfg.seeds] if isinstance(cfg.seeds, int) else cfg.seeds)


def main(cfg: EvalConfig, args) -> int:
    """``world2act eval``: evaluate the policy and print the mean success."""
    from world2act.evaluation.harness import evaluate
    from world2act.utils.seeding import resolve_device

    res = evaluate(cfg.policy, cfg.benchmark, cfg.tasks, cfg.trials, cfg.seeds, args.out, workers=cfg.workers,
                   video_episodes=cfg.video_episodes, image_size=cfg.image_size, device=resolve_device(args.device),
                   resume=args.resume, overwrite=args.overwrite, latency=cfg.latency,
                   init_offset_per_seed=cfg.init_offset_per_seed, init_states=cfg.init_states)
    o = res["overall"]
    rate = "n/a" if o["success_rate"] is None else f"{100 * o['success_rate']:.1f}%"
    print(f"{cfg.policy} on {cfg.benchmark}: mean success {rate} ({o['n_success']}/{o['n_trials']}, "
          f"{o['n_errors']} errors) -> {args.out}/eval.md")
    return 0
