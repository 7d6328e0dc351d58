"""Dump what every preset stage's command hands to its stage function (config + keyword
arguments), without running anything: ``python scripts/stage_configs.py OUT.json``.

Used to show that a change to the CLI/config layer leaves every stage's inputs unchanged:
run it once with the old source first on ``PYTHONPATH`` and once with the new, and diff.
"""
from __future__ import annotations

import dataclasses
import importlib
import json
import sys
from pathlib import Path

# command -> (module, attribute) of the function its CLI glue hands the config to
TARGETS = {
    "collect": ("world2act.data.collect", "run"), "segment": ("world2act.skills.segment", "run"),
    "train-wm": ("world2act.worldmodel.train", "run"), "wm-eval": ("world2act.worldmodel.evaluate", "run"),
    "train-base": ("world2act.policies.train_base", "run"), "align": ("world2act.align.train", "run"),
    "post-train": ("world2act.posttrain.loop", "run"), "dreamgen": ("world2act.baselines.dreamgen", "run"),
    "diagnose": ("world2act.diagnose", "run"), "eval": ("world2act.evaluation.harness", "evaluate"),
    "eval-compare": ("world2act.evaluation.compare_cli", "compare"),
    "compare": ("world2act.evaluation.compare_grid", "run_grid"), "pipeline": ("world2act.pipeline", "run_pipeline"),
}


class Captured(Exception):
    pass


def plain(x):
    if dataclasses.is_dataclass(x) and not isinstance(x, type):
        return {"__class__": type(x).__name__, **plain(dataclasses.asdict(x))}
    if isinstance(x, dict):
        return {str(k): plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [plain(v) for v in x]
    if isinstance(x, (str, int, float, bool)) or x is None:
        return x
    if isinstance(x, Path):
        return str(x)
    return f"<{type(x).__name__}>"


def capture(command: str, argv: list[str]) -> dict:
    from world2act import cli
    from world2act.utils import io

    mod, attr = TARGETS[command]
    module = importlib.import_module(mod)
    seen = {}

    def fake(*args, **kw):
        seen.update(args=plain(list(args)), kwargs=plain(kw))
        raise Captured

    old, old_prep = getattr(module, attr), io.prepare_out_dir
    setattr(module, attr, fake)
    io.prepare_out_dir = lambda out, **kw: Path(out)  # post-train prepares --out in its glue
    try:
        rc = cli.main([command, *argv])
        seen.setdefault("rc", rc)
    except Captured:
        pass
    finally:
        setattr(module, attr, old)
        io.prepare_out_dir = old_prep
    return seen


def main() -> int:
    from world2act.presets import PRESETS

    res = {}
    for name in sorted(PRESETS):
        stages, _ = PRESETS[name]()
        for st in stages:
            argv = [a.replace("{out}", "/tmp/x") for a in st.args] + ["--out", f"/tmp/x/{st.name}"]
            res[f"{name}/{st.name}"] = {"argv": [st.command, *argv], **capture(st.command, argv)}
    Path(sys.argv[1]).write_text(json.dumps(res, indent=1, sort_keys=True))
    print(f"{len(res)} stages -> {sys.argv[1]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
