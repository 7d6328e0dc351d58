"""Wall time of a `world2act compare` grid, per cell and in total (issue 19's target: 3 methods ×
2 Meta-World tasks × 50 episodes within 45 min on 2 cores).

Runs the grid into a fresh folder (a folder with finished cells would be reused, not timed), then
prints for every cell its training and evaluation wall time and the whole command's wall time
against the target. ``--from DIR`` prints the same figures for a grid that already ran
(``compare.json``'s per-cell ``cell_s``; the total is their sum, without the start-up).

    python benchmarks/bench_compare.py --out runs/bench-grid45      # configs/compare_metaworld_grid45.yaml
    python benchmarks/bench_compare.py --from runs/cmp/grid45
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.setdefault("PYOPENGL_PLATFORM", "egl")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

TARGET_MIN = 45.0


def figures(res: dict, total_s: float | None) -> dict:
    """Per-cell walls (minutes) from a ``compare.json`` and the total (measured, or the cells' sum)."""
    cells = []
    for c in res["cells"]:
        cells.append({"name": c["name"], "method": c["method"], "status": c["status"],
                      "trained": c.get("trained"), "evaluated": c.get("evaluated"),
                      "train_min": None if c.get("train_wall_s") is None else round(c["train_wall_s"] / 60, 2),
                      "eval_min": None if c.get("eval_wall_s") is None else round(c["eval_wall_s"] / 60, 2),
                      "cell_min": None if c.get("cell_s") is None else round(c["cell_s"] / 60, 2),
                      "episodes": c.get("n_episodes"), "success_rate": c.get("success_rate")})
    measured = total_s is not None
    if total_s is None:
        total_s = sum(c.get("cell_s") or 0.0 for c in res["cells"])
    return {"grid": res.get("grid"), "cells": cells, "total_min": round(total_s / 60, 2),
            "total_is": "measured wall of the command" if measured else "sum of the cells' walls (no start-up)",
            "target_min": TARGET_MIN, "within_target": total_s / 60 <= TARGET_MIN,
            "reused": [c["name"] for c in cells if "reused" in (c["trained"], c["evaluated"])]}


def print_figures(fig: dict) -> None:
    print(f"grid {fig['grid']}")
    print(f"{'cell':<22}{'method':<11}{'status':<8}{'train min':>10}{'eval min':>10}{'cell min':>10}{'episodes':>10}{'success':>9}")
    for c in fig["cells"]:
        sr = "" if c["success_rate"] is None else f"{100 * c['success_rate']:.1f}%"
        print(f"{c['name']:<22}{c['method']:<11}{c['status']:<8}{c['train_min'] or '':>10}{c['eval_min'] or '':>10}"
              f"{c['cell_min'] or '':>10}{c['episodes'] or '':>10}{sr:>9}")
    verdict = "within" if fig["within_target"] else "OVER"
    print(f"total {fig['total_min']:.1f} min ({fig['total_is']}): {verdict} the {fig['target_min']:.0f}-min target")
    if fig["reused"]:
        print(f"note: cells {', '.join(fig['reused'])} reused earlier work; their walls are not this run's")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--grid", default=str(Path(__file__).resolve().parents[1] / "configs" / "compare_metaworld_grid45.yaml"))
    ap.add_argument("--out", help="fresh output folder for the grid run")
    ap.add_argument("--from", dest="from_dir", help="print the figures of a grid that already ran in this folder")
    ap.add_argument("--json", help="also write the figures to this JSON file")
    args = ap.parse_args()
    if bool(args.out) == bool(args.from_dir):
        ap.error("give exactly one of --out (run the grid) or --from (a finished grid)")
    total = None
    if args.from_dir:
        path = Path(args.from_dir) / "compare.json"
        if not path.is_file():
            print(f"error: {path}: not found (no grid ran in {args.from_dir})", file=sys.stderr)
            return 2
    else:
        out = Path(args.out)
        if out.exists() and any(out.iterdir()):
            print(f"error: --out {out} is not empty: finished cells would be reused, not timed", file=sys.stderr)
            return 2
        from world2act.cli import main as cli_main

        load = os.getloadavg()
        t0 = time.time()
        cli_main(["compare", "--grid", args.grid, "--out", str(out)])
        total = time.time() - t0
        print(f"load average at start: {load[0]:.2f} (cores: {os.cpu_count()})")
        path = out / "compare.json"
    fig = figures(json.loads(path.read_text()), total)
    print_figures(fig)
    if args.json:
        Path(args.json).write_text(json.dumps(fig, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
