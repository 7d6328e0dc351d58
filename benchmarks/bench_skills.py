"""Sync-rate benchmark of the skill decomposition on scripted-expert demonstrations.

Segmentation only needs the gripper width and actions, so this rolls the experts out *without
rendering* (LIBERO ~15 ms/step instead of ~120 ms), keeps the successful episodes (as
``world2act collect`` does), and reports the sync rate of the schema aligner per task, the
discard reasons and the median-centred length share before/after (paper Sec. 3.2, Fig. 3).

    .venv/bin/python benchmarks/bench_skills.py --benchmark libero_10 --tasks 0,1,7 --episodes 5
    .venv/bin/python benchmarks/bench_skills.py --benchmark libero_object --tasks 0,1,2,3 --episodes 10
    .venv/bin/python benchmarks/bench_skills.py --benchmark metaworld --tasks pick-place-v3 --episodes 20
    .venv/bin/python benchmarks/bench_skills.py --dataset /work/data/lo_demos   # an existing dataset

Traces are saved to ``--traces FILE.npz`` (and re-analysed with ``--load FILE.npz``) so detector
settings can be compared without simulating again (``--tau``, ``--w-open``).
"""
from __future__ import annotations

import argparse
import collections
import json
import os
import sys
import time

import numpy as np

os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.setdefault("PYOPENGL_PLATFORM", "egl")


_ENVS: dict = {}


def rollout(benchmark: str, task, seed: int) -> dict:
    from world2act.envs import make_env
    from world2act.experts import make_expert

    key = (benchmark, task)
    if key not in _ENVS:
        for e in _ENVS.values():
            e.close()
        _ENVS.clear()
        _ENVS[key] = make_env(benchmark, task)  # nothing is rendered
    env = _ENVS[key]
    env.reset(seed=seed)
    try:
        expert = make_expert(env, seed=seed)
    except Exception:  # not in the supported table: try the pick-and-place expert anyway (successes only count)
        from world2act.experts.libero_expert import LiberoExpert

        expert = LiberoExpert(env, seed=seed)
    expert.reset()
    widths, actions, pos, ok = [], [], [], False
    for _ in range(env.max_steps):
        widths.append(env.gripper_width())
        pos.append(np.asarray(env.proprio()[:3], np.float64))
        a = np.asarray(expert.act(), dtype=np.float32)
        actions.append(a)
        env.step(a)
        if env.is_success():
            ok = True
            break
    return {"instruction": env.instruction, "task": str(task), "seed": seed, "success": ok,
            "width": np.asarray(widths, np.float64), "actions": np.stack(actions), "pos": np.stack(pos)}


def analyse(traces: list[dict], benchmark: str, tau: float | None, w_open: str, use_action: bool) -> dict:
    from world2act.skills.contacts import BENCHMARK_DEFAULTS, ContactParams, benchmark_family, detect_events, robust_open_width
    from world2act.skills.decompose import decompose_instruction
    from world2act.skills.stats import distribution_report, length_stats
    from world2act.skills.sync import align_schema

    fam = benchmark_family(benchmark)
    good = [t for t in traces if t["success"]]
    if w_open == "dataset":
        wo = robust_open_width(np.concatenate([t["width"] for t in good]))
    elif w_open == "benchmark":
        wo = BENCHMARK_DEFAULTS[fam]["w_open"]
    else:
        wo = float(w_open)
    p = ContactParams(tau=tau if tau is not None else BENCHMARK_DEFAULTS[fam]["tau"], w_open=wo,
                      use_gripper_action=use_action)
    per_task = collections.defaultdict(lambda: [0, 0])
    reasons = collections.Counter()
    before, after = [], []
    examples = {}
    retries = 0
    for t in good:
        steps = decompose_instruction(t["instruction"])
        res = detect_events(t["width"], p, t["actions"])
        al = align_schema(res.events, steps, len(t["width"]), 8, positions=t.get("pos"))
        retries += al.ignored_retries
        per_task[t["instruction"]][0] += 1
        before.append(len(t["width"]))
        if al.ok:
            per_task[t["instruction"]][1] += 1
            after += list(np.diff(al.boundaries))
        else:
            reasons[al.reason] += 1
            examples.setdefault(al.reason, f"{t['task']}/{t['seed']}: {al.detail} "
                                           f"events={[(e.kind, e.index, round(e.closure, 2)) for e in res.events]}")
    n = sum(v[0] for v in per_task.values())
    s = sum(v[1] for v in per_task.values())
    return {
        "episodes": len(traces), "successful": n, "synced": s, "sync_rate": round(s / n, 4) if n else None,
        "tau": p.tau, "w_open": round(wo, 5), "use_gripper_action": use_action,
        "per_task": {k: f"{v[1]}/{v[0]}" for k, v in per_task.items()},
        "discard_reasons": dict(reasons), "examples": examples, "retried_grasps_ignored": retries,
        "median_share_before": length_stats(before)["median_share"], "median_share_after": length_stats(after)["median_share"],
        "median_len_before": length_stats(before)["median"], "median_len_after": length_stats(after)["median"],
        "median_share_abs_window": distribution_report(before, after)["median_share_abs"] if before else None,
    }


def from_dataset(path: str) -> tuple[str, list[dict]]:
    from world2act.data import LeRobotDataset

    ds = LeRobotDataset(path)
    out = []
    for i in range(ds.num_episodes):
        m = ds.episode_meta(i)
        ep = ds.load_episode(i, load_images=False)
        out.append({"instruction": m["task"], "task": str(m.get("task_id", "")), "seed": m.get("seed", i),
                    "success": bool(m["success"]), "width": ep.gripper_width.astype(np.float64), "actions": ep.actions,
                    "pos": ep.states[:, :3].astype(np.float64)})
    return ds.spec.benchmark or m.get("benchmark", ""), out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--benchmark", default="libero_object")
    ap.add_argument("--tasks", default="0")
    ap.add_argument("--episodes", type=int, default=5, help="rollouts per task (successful ones are analysed)")
    ap.add_argument("--seed0", type=int, default=1000)
    ap.add_argument("--dataset", help="analyse an existing LeRobot dataset instead of rolling out")
    ap.add_argument("--traces", help="save the rollouts to this .npz")
    ap.add_argument("--load", help="analyse traces saved with --traces")
    ap.add_argument("--tau", type=float, default=None)
    ap.add_argument("--w-open", default="dataset")
    ap.add_argument("--use-gripper-action", action="store_true")
    a = ap.parse_args()
    t0 = time.time()
    if a.dataset:
        bench, traces = from_dataset(a.dataset)
    elif a.load:
        z = np.load(a.load, allow_pickle=False)
        meta = json.loads(str(z["meta"]))
        bench = meta["benchmark"]
        traces = [dict(m, width=z[f"w{i}"], actions=z[f"a{i}"], pos=z[f"p{i}"] if f"p{i}" in z else None)
                  for i, m in enumerate(meta["traces"])]
    else:
        bench = a.benchmark
        tasks = [int(x) if x.isdigit() else x for x in a.tasks.split(",")]
        traces = []
        for task in tasks:
            for k in range(a.episodes):
                try:
                    tr = rollout(bench, task, a.seed0 + k)
                except Exception as e:  # the expert cannot do this task at all
                    print(f"  {bench} {task}: skipped ({str(e).splitlines()[0][:150]})", file=sys.stderr, flush=True)
                    break
                traces.append(tr)
                print(f"  {bench} {task} seed {a.seed0 + k}: success={tr['success']} steps={len(tr['width'])}",
                      file=sys.stderr, flush=True)
        for e in _ENVS.values():
            e.close()
        if a.traces:
            meta = {"benchmark": bench, "traces": [{k: v for k, v in t.items() if k not in ("width", "actions", "pos")} for t in traces]}
            np.savez_compressed(a.traces, meta=json.dumps(meta), **{f"w{i}": t["width"] for i, t in enumerate(traces)},
                                **{f"a{i}": t["actions"] for i, t in enumerate(traces)},
                                **{f"p{i}": t["pos"] for i, t in enumerate(traces)})
    rep = analyse(traces, bench, a.tau, a.w_open, a.use_gripper_action)
    rep["benchmark"] = bench
    rep["wall_s"] = round(time.time() - t0, 1)
    print(json.dumps(rep, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
