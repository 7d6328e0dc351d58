"""``world2act post-train``: Stage 2 latent action post-training (paper Sec. 4.2).

Writes under ``--out``: ``policy/`` (the post-trained policy folder, loadable by
``world2act eval``), ``imagined/`` (cached imagined target embeddings + a sample video),
``curves.jsonl`` / ``curves.png`` (loss and positive-pair cosine, Fig. 5a), ``checkpoint/``
(resumable), ``metrics.json`` and ``manifest.json``. With ``--log-with`` the per-iteration
curve records (loss, pos/neg cosine, |Δa|, rollout success) and the run summary
(``summary/``) also go to an experiment tracker (:mod:`world2act.utils.tracking`).
"""
from __future__ import annotations

import dataclasses
import logging

from world2act.posttrain.config import PostTrainConfig

log = logging.getLogger(__name__)


def add_arguments(p) -> None:
    p.add_argument("--policy", help="frozen base policy folder, or remote://HOST:PORT (a policy served by world2act serve)")
    p.add_argument("--wm", help="world-model folder (Skill-WM)")
    p.add_argument("--align", help="Stage-1 folder")
    p.add_argument("--benchmark", help="benchmark for the on-policy rollouts (default libero_object)")
    p.add_argument("--tasks", help="task ids / names, comma-separated")
    p.add_argument("--iterations", type=int, help="rollout + update rounds")
    p.add_argument("--num-envs", type=int, help="parallel rollouts per update (N ≥ 2)")
    p.add_argument("--init-states", type=int, help="imagined trajectories per task")
    p.add_argument("--workers", type=int, help="simulator worker processes")
    p.add_argument("--targets", choices=["imagined", "demo"],
                   help="Stage-2 targets: the world model's imagination (default, the paper) or the scripted "
                        "expert's own video from the same init state (an oracle)")
    p.add_argument("--resume", action="store_true", help="continue from the checkpoint in --out")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    from world2act.utils.tracking import add_argument

    add_argument(p)


def main(args) -> int:
    from world2act import World2ActError
    from world2act.posttrain.loop import run
    from world2act.utils.config import load_config
    from world2act.utils.io import prepare_out_dir
    from world2act.utils.seeding import resolve_device, set_torch_threads
    from world2act.utils.tracking import check_backend, make_tracker

    cfg = load_config(PostTrainConfig, args.config, args.overrides, policy=args.policy, wm=args.wm, align=args.align,
                      benchmark=args.benchmark, tasks=args.tasks, iterations=args.iterations,
                      num_envs=args.num_envs, init_states_per_task=args.init_states, workers=args.workers,
                      targets=args.targets,
                      seed=args.seed)
    for name in ("policy", "wm", "align"):
        if not getattr(cfg, name):
            raise World2ActError(f"post-train: --{name} is required")
    if not args.out:
        raise World2ActError("post-train: --out is required")
    log_with = check_backend(getattr(args, "log_with", "none"))
    out = prepare_out_dir(args.out, resume=args.resume, overwrite=args.overwrite)
    set_torch_threads()
    with make_tracker(log_with, out, "post-train", dataclasses.asdict(cfg)) as tracker:
        metrics = run(cfg, out, device=resolve_device(args.device), resume=args.resume, tracker=tracker)
        tracker.log(metrics, step=cfg.iterations, prefix="summary/")
    print(f"post-trained policy: {out / 'policy'}  (pos cos {metrics.get('pos_cos_first', float('nan')):.3f} → "
          f"{metrics.get('pos_cos_last', float('nan')):.3f})")
    for w in metrics.get("warnings", []):
        log.warning("post-train: %s", w)
    return 0
