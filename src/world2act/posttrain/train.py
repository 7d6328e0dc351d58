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


Config, RUN_OPTIONS = PostTrainConfig, ("resume", "overwrite", "log_with")


def main(cfg: PostTrainConfig, args) -> int:
    from world2act.posttrain.loop import run
    from world2act.utils.io import prepare_out_dir
    from world2act.utils.seeding import resolve_device, set_torch_threads
    from world2act.utils.tracking import check_backend, make_tracker

    log_with = check_backend(args.log_with)
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
