"""Evaluation throughput with 1 vs 2 worker processes, and batch-1 policy latency (Table S5).

Runs the same evaluation (same seeds → same episodes) with ``--workers 1`` and ``--workers 2``,
checks that the per-episode outcomes are identical, and prints episodes per minute and the
speed-up (target ≥ 1.7× on 2 cores). Wall times include spawning the workers and building the
simulators, as a user would see them.

    python benchmarks/bench_eval.py                       # expert, libero_object tasks 0,1, 6 trials
    python benchmarks/bench_eval.py --policy runs/base --trials 4
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.setdefault("PYOPENGL_PLATFORM", "egl")
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--policy", default="expert")
    ap.add_argument("--benchmark", default="libero_object")
    ap.add_argument("--tasks", default="0,1")
    ap.add_argument("--trials", type=int, default=6)
    ap.add_argument("--seeds", default="0")
    ap.add_argument("--workers", default="1,2", help="worker counts to compare (default 1,2)")
    ap.add_argument("--json", help="also write the figures to this JSON file")
    args = ap.parse_args()

    from world2act.evaluation import evaluate

    figures = {"policy": args.policy, "benchmark": args.benchmark, "tasks": args.tasks, "trials": args.trials,
               "seeds": args.seeds, "cpu_count": os.cpu_count(), "load_avg_start": os.getloadavg(), "runs": {}}
    outcomes = {}
    with tempfile.TemporaryDirectory() as tmp:
        for w in [int(x) for x in args.workers.split(",")]:
            t = time.time()
            res = evaluate(args.policy, args.benchmark, args.tasks, args.trials, args.seeds, f"{tmp}/w{w}", workers=w,
                           video_episodes=0, latency=(w == 1 and args.policy != "expert"), progress=False)
            wall = time.time() - t
            n = len(res["episodes"])
            outcomes[w] = [(e["task"], e["seed"], e["trial"], e["success"], e["steps"], bool(e["error"]))
                           for e in res["episodes"]]
            figures["runs"][w] = {"wall_s": round(wall, 1), "episodes": n, "episodes_per_min": round(60 * n / wall, 2),
                                  "success_rate": res["overall"]["success_rate"], "errors": res["overall"]["n_errors"],
                                  "mean_episode_s": res["timing"]["mean_episode_s"]}
            if "latency" in res:
                figures["latency"] = res["latency"]
            print(f"workers={w}: {n} episodes in {wall:.1f} s = {60 * n / wall:.2f} episodes/min "
                  f"(success {res['overall']['n_success']}/{n}, errors {res['overall']['n_errors']})", flush=True)
    ws = sorted(figures["runs"])
    if len(ws) >= 2:
        sp = figures["runs"][ws[0]]["wall_s"] / figures["runs"][ws[-1]]["wall_s"]
        figures["speedup"] = round(sp, 2)
        same = all(outcomes[w] == outcomes[ws[0]] for w in ws)
        figures["identical_outcomes"] = same
        print(f"speed-up {ws[-1]} vs {ws[0]} workers: {sp:.2f}x (target >= 1.7x); identical outcomes: {same}")
    if "latency" in figures:
        lat = figures["latency"]
        print(f"latency (batch 1, {lat['threads']} thread): {lat['ms_per_chunk']:.1f} ms/chunk, "
              f"{lat['ms_per_action']:.2f} ms/action, {lat['hz']:.0f} Hz")
    figures["load_avg_end"] = os.getloadavg()
    print(f"load average start {figures['load_avg_start']}, end {figures['load_avg_end']} (shared machine)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(figures, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
