"""The ``world2act`` command: parses arguments and hands off to one stage module.

Each subcommand lives in its own module exposing ``Config`` (a dataclass whose
:func:`~world2act.utils.config.opt` fields are its options, declared once), ``RUN_OPTIONS`` (which
of ``--resume``/``--overwrite``/``--log-with`` it takes) and ``main(cfg, args) -> int | None``;
an optional ``make_config(args)`` replaces the generic :func:`config_from_args`. Modules are
imported only when their command runs so that ``world2act --help`` stays fast. Shared options
(``--out``, ``--seed``, ``--device``, ``--config`` and trailing dotted ``key=value``
overrides) are added here once.

Exit status: 0 on success, 2 with a one-line ``error: ...`` on stderr for any user-facing
failure (:class:`world2act.World2ActError`), 130 on Ctrl-C.
"""
from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys

from world2act import World2ActError, __version__

# command -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "collect": ("world2act.data.collect", "roll out scripted experts in LIBERO / Meta-World into a LeRobot v3 dataset"),
    "segment": ("world2act.skills.segment", "cut demonstrations into synchronised atomic-skill clips (skill dataset)"),
    "train-wm": ("world2act.worldmodel.train", "train the Cosmos-Predict2-architecture world model (Skill-WM / Base-WM)"),
    "imagine": ("world2act.worldmodel.imagine", "generate a skill-compositional video from an image and an instruction"),
    "wm-eval": ("world2act.worldmodel.evaluate",
                "world-model fidelity on held-out demos: PSNR/SSIM on all and on robot pixels, frame strips"),
    "train-base": ("world2act.policies.train_base", "train the built-in flow-matching base policy on demonstrations"),
    "align": ("world2act.align.train", "Stage 1: align world-model video latents and action chunks (InfoNCE)"),
    "post-train": ("world2act.posttrain.train", "Stage 2: train a residual policy on on-policy rollouts, reward-free"),
    "dreamgen": ("world2act.baselines.dreamgen",
                 "DreamGen baseline: IDM pseudo-labels for the imagined videos, base fine-tuned on real + pseudo data"),
    "diagnose": ("world2act.diagnose", "offline Stage-2 signal table: do WM latents and actions agree on held-out demos?"),
    "eval": ("world2act.evaluation.cli", "success rates under the standard protocol, speed, videos"),
    "eval-compare": ("world2act.evaluation.compare_cli",
                     "pair two evaluations episode by episode: paired difference, its interval, exact McNemar p"),
    "compare": ("world2act.evaluation.compare_grid",
                "run a comparison grid (base / world2act / dreamgen cells) on the same episodes, paired with base"),
    "serve": ("world2act.policies.serve",
              "serve a policy folder over Isaac-GR00T's ZeroMQ policy protocol (clients: --policy remote://HOST:PORT)"),
    "wm-compare": ("world2act.worldmodel.compare",
                   "Skill-WM vs Base-WM on held-out multi-skill demos: PSNR/SSIM against repeat-first, frame strips"),
    "pipeline": ("world2act.pipeline", "run every stage end to end and write report.md"),
    "report": ("world2act.report", "(re)write report.md / summary.json of an existing pipeline folder"),
}


RUN_OPTIONS = {  # options that steer a run but are not part of its config (modules list theirs)
    "resume": dict(action="store_true", help="continue an interrupted run in --out"),
    "overwrite": dict(action="store_true", help="delete --out first (replace an existing run)"),
    "log_with": dict(default="none", help="experiment tracker for the training curves (default none; offline: "
                     "tensorboard -> OUT/tensorboard, wandb -> OUT/wandb offline run, trackio -> local store)"),
}


def _add_shared(p: argparse.ArgumentParser, run_options=()) -> None:
    g = p.add_argument_group("shared options")
    g.add_argument("--out", help="output folder")
    g.add_argument("--seed", type=int, help="random seed (default 0)")
    g.add_argument("--device", choices=["auto", "cpu", "cuda"], help="torch device (default auto)")
    g.add_argument("--config", help="YAML file with config values (overridden by options and key=value overrides)")
    g.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    for name in run_options:
        extra = {}
        if name == "log_with":
            from world2act.utils.tracking import BACKENDS

            extra = {"choices": BACKENDS}
        g.add_argument("--" + name.replace("_", "-"), **RUN_OPTIONS[name], **extra)
    p.add_argument("overrides", nargs="*", metavar="key=value",
                   help="dotted config overrides applied last, e.g. train.lr=3e-4")


def command_parser(name: str, module) -> argparse.ArgumentParser:
    """The argument parser of ``world2act NAME``: the module's ``Config`` options + shared ones."""
    from world2act.utils.config import add_config_arguments

    parser = argparse.ArgumentParser(prog=f"world2act {name}", description=COMMANDS[name][1])
    add_config_arguments(parser, module.Config)
    _add_shared(parser, getattr(module, "RUN_OPTIONS", ()))
    return parser


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="world2act", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"world2act {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (_, help_) in COMMANDS.items():
        sub.add_parser(name, help=help_, add_help=False)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    top = build_parser()
    if not argv or argv[0] not in COMMANDS:
        if argv and not argv[0].startswith("-"):
            top.error(f"unknown command {argv[0]!r}; valid: {', '.join(COMMANDS)}")
        top.parse_args(argv)  # --help / --version / no command
        top.print_help()
        return 0
    name = argv[0]
    try:
        module = importlib.import_module(COMMANDS[name][0])
    except ModuleNotFoundError as e:
        if e.name and e.name.startswith("world2act"):
            print(f"error: command {name!r} is not implemented in this version", file=sys.stderr)
            return 2
        raise
    args = command_parser(name, module).parse_args(argv[1:])
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname).1s %(name)s: %(message)s", datefmt="%H:%M:%S")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        from world2act.utils.config import config_from_args

        if not args.out and getattr(module, "NEEDS_OUT", True):
            raise World2ActError(f"{name}: --out DIR is required")
        if getattr(args, "resume", False) and getattr(args, "overwrite", False):
            raise World2ActError(f"{name}: --resume and --overwrite exclude each other")
        cfg = getattr(module, "make_config", lambda a: config_from_args(module.Config, a, where=name))(args)
        args.seed, args.device = args.seed or 0, args.device or "auto"
        rc = module.main(cfg, args)
    except World2ActError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: finished results are kept", file=sys.stderr)
        return 130
    return int(rc or 0)


if __name__ == "__main__":
    sys.exit(main())
