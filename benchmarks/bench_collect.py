"""Speed of simulation, rendering and demonstration collection (issue targets on 2 cores:
LIBERO with two 64x64 cameras >= 4 demos/min, Meta-World >= 20 demos/min).

Prints, per benchmark: ms per control step without cameras, ms per step when both default
cameras are rendered every step, and demos/min of ``world2act collect`` (the real command path:
expert rollout without cameras, re-render of successful episodes, dataset writing).

On a shared machine wall-clock figures depend on the load, so CPU time is reported too:
``demos/min (cpu)`` = demos / (CPU seconds of all processes / cores) × 60, i.e. the rate on
``--workers`` otherwise idle cores.

    .venv/bin/python benchmarks/bench_collect.py [--benchmarks metaworld,libero_object]
        [--episodes-mw 10] [--episodes-libero 4] [--workers 2] [--image-size 64]
"""
from __future__ import annotations

import argparse
import logging
import os
import resource
import sys
import tempfile
import time

os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.setdefault("PYOPENGL_PLATFORM", "egl")

import numpy as np  # noqa: E402


def _cpu(who=resource.RUSAGE_SELF) -> float:
    r = resource.getrusage(who)
    return r.ru_utime + r.ru_stime


def step_costs(benchmark: str, task, size: int, n: int = 40) -> dict:
    """ms per step without cameras and with the two default cameras rendered every step."""
    from world2act.envs import default_cameras, make_env, seed_for
    from world2act.experts import make_expert

    cams = default_cameras(benchmark)
    env = make_env(benchmark, task, camera_size=(size, size), cameras=cams)
    try:
        out = {}
        for label, render in (("no_cameras", False), ("two_cameras", True)):
            env.reset(seed=seed_for("demos", 0, 0))
            ex = make_expert(env)
            ex.reset()
            if render:
                env.render(cams, (size, size))  # warm the renderer
            w0, c0 = time.perf_counter(), _cpu()
            for _ in range(n):
                env.step(ex.act())
                if render:
                    env.render(cams, (size, size))
            out[f"ms_per_step_{label}"] = 1000 * (time.perf_counter() - w0) / n
            out[f"cpu_ms_per_step_{label}"] = 1000 * (_cpu() - c0) / n
        return out
    finally:
        env.close()


def collect_rate(benchmark: str, tasks: list, episodes: int, workers: int, size: int) -> dict:
    from world2act.data.collect import CollectConfig, run

    with tempfile.TemporaryDirectory() as d:
        cfg = CollectConfig(benchmark=benchmark, tasks=tasks, episodes=episodes, image_size=size, workers=workers)
        w0, c0, k0 = time.perf_counter(), _cpu(), _cpu(resource.RUSAGE_CHILDREN)
        stats = run(cfg, os.path.join(d, "demos"))
        wall = time.perf_counter() - w0
        cpu = (_cpu() - c0) + (_cpu(resource.RUSAGE_CHILDREN) - k0)
    n = stats["episodes_written"]
    return {"demos": n, "attempts": stats["total_attempts"], "expert_success_rate": stats["success_rate"],
            "wall_s": wall, "cpu_s": cpu, "demos_per_min_wall": 60 * n / wall,
            "demos_per_min_cpu": 60 * n / (cpu / max(1, workers)),
            "load_avg_1min": os.getloadavg()[0]}


MT10 = ("reach-v3", "push-v3", "pick-place-v3", "door-open-v3", "drawer-open-v3", "drawer-close-v3",
        "button-press-topdown-v3", "peg-insert-side-v3", "window-open-v3", "window-close-v3")


def expert_success_mt10(n: int) -> dict:
    """Success rate of the Meta-World scripted experts on MT10 over ``n`` demo seeds per task."""
    from world2act.envs import list_tasks, make_env, seed_for
    from world2act.experts import make_expert

    index = {t.task_id: i for i, t in enumerate(list_tasks("metaworld"))}
    rates = {}
    for task in MT10:
        env = make_env("metaworld", task)
        ok = 0
        for i in range(n):
            env.reset(seed=seed_for("demos", index[task], i))
            ex = make_expert(env)
            for _ in range(env.max_steps):
                env.step(ex.act())
                if env.is_success():
                    ok += 1
                    break
        env.close()
        rates[task] = ok / n
    return rates


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--benchmarks", default="metaworld,libero_object")
    p.add_argument("--episodes-mw", type=int, default=10)
    p.add_argument("--episodes-libero", type=int, default=4)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--image-size", type=int, default=64)
    p.add_argument("--mt10", type=int, default=0, help="also measure expert success on MT10 over N seeds per task")
    a = p.parse_args()
    if a.mt10:
        rates = expert_success_mt10(a.mt10)
        print("[metaworld] expert success on MT10 (" + str(a.mt10) + " seeds/task): mean "
              f"{np.mean(list(rates.values())):.3f}; " + ", ".join(f"{k} {v:.2f}" for k, v in rates.items()), flush=True)
    logging.basicConfig(level=logging.WARNING)
    targets = {"metaworld": 20.0}
    for bench in [b for b in a.benchmarks.split(",") if b.strip()]:
        if bench == "metaworld":
            task, tasks, n = "pick-place-v3", ["pick-place-v3", "door-open-v3"], a.episodes_mw
        else:
            task, tasks, n = 0, [0, 1], a.episodes_libero
        sc = step_costs(bench, task, a.image_size)
        print(f"[{bench}] step without cameras: {sc['ms_per_step_no_cameras']:.1f} ms wall "
              f"({sc['cpu_ms_per_step_no_cameras']:.1f} ms cpu); with 2 cameras {a.image_size}²: "
              f"{sc['ms_per_step_two_cameras']:.1f} ms wall ({sc['cpu_ms_per_step_two_cameras']:.1f} ms cpu)", flush=True)
        cr = collect_rate(bench, tasks, max(1, n // len(tasks)), a.workers, a.image_size)
        tgt = targets.get(bench, 4.0)
        print(f"[{bench}] collect {cr['demos']} demos ({cr['attempts']} attempts, expert success "
              f"{cr['expert_success_rate']:.2f}) with {a.workers} workers: {cr['demos_per_min_wall']:.1f} demos/min wall, "
              f"{cr['demos_per_min_cpu']:.1f} demos/min on {a.workers} idle cores (cpu {cr['cpu_s']:.0f} s, "
              f"wall {cr['wall_s']:.0f} s, load avg {cr['load_avg_1min']:.1f}); target >= {tgt:g}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
