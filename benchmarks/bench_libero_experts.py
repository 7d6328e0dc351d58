"""Per-task success of the LIBERO scripted experts (no rendering) and simulator speed.

Usage::

    python benchmarks/bench_libero_experts.py --suite libero_object --episodes 50
    python benchmarks/bench_libero_experts.py --suite libero_10 --tasks 0,1,7 --episodes 20 --workers 2
    python benchmarks/bench_libero_experts.py --suite libero_object --render-speed   # ms/step with cameras

Episodes use random layouts ``reset(seed=1000 + e)`` (never the official init states, which
are reserved for evaluation) and the suite's step budget. Prints a markdown table
(task, instruction, successes/episodes, mean steps of successful episodes, gripper closures
per successful episode) and the simulation speed in ms/step (expert included, no rendering).
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor

os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.setdefault("PYOPENGL_PLATFORM", "egl")


def run_task(suite: str, task_id: int, episodes: int, seed0: int) -> dict:
    """Roll the expert out ``episodes`` times on one task; returns counts and timings."""
    from world2act.envs.libero import LiberoEnv
    from world2act.experts.libero_expert import LiberoExpert

    with LiberoEnv(suite, task_id) as env:
        try:
            expert = LiberoExpert(env, seed=seed0)
        except Exception as e:  # noqa: BLE001 - an unsupported goal: report it in the table
            return {"task_id": task_id, "instruction": env.instruction, "error": str(e).split(";")[0]}
        succ, steps, closures, sim_s, cpu_s, n_steps = 0, [], [], 0.0, 0.0, 0
        for e in range(episodes):
            env.reset(seed=seed0 + e)
            expert.reset()
            t0, c0 = time.perf_counter(), time.process_time()
            ok = False
            for t in range(env.max_steps):
                env.step(expert.act())
                n_steps += 1
                if env.is_success():
                    ok = True
                    break
            sim_s += time.perf_counter() - t0
            cpu_s += time.process_time() - c0
            if ok:
                succ += 1
                steps.append(t + 1)
                closures.append(expert.closures)
        return {
            "task_id": task_id,
            "instruction": env.instruction,
            "success": succ,
            "episodes": episodes,
            "mean_steps": sum(steps) / len(steps) if steps else float("nan"),
            "closures": sum(closures) / len(closures) if closures else float("nan"),
            "ms_per_step": 1000 * sim_s / max(n_steps, 1),
            "cpu_ms_per_step": 1000 * cpu_s / max(n_steps, 1),
        }


def render_speed(suite: str, task_id: int, size: int, steps: int = 30) -> tuple[float, float]:
    """ms/step without rendering and with agentview + wrist rendered every step."""
    import numpy as np

    from world2act.envs.libero import LiberoEnv

    with LiberoEnv(suite, task_id) as env:
        env.reset(seed=0)
        a = np.zeros(7)
        a[6] = -1
        t0 = time.perf_counter()
        for _ in range(steps):
            env.step(a)
        plain = (time.perf_counter() - t0) / steps
        t0 = time.perf_counter()
        for _ in range(steps):
            env.step(a)
            env.render(("agentview", "wrist"), (size, size))
        cams = (time.perf_counter() - t0) / steps
    return 1000 * plain, 1000 * cams


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--suite", default="libero_object")
    p.add_argument("--tasks", default="all", help="comma-separated task ids or 'all'")
    p.add_argument("--episodes", type=int, default=50)
    p.add_argument("--seed", type=int, default=1000, help="first layout seed")
    p.add_argument("--workers", type=int, default=1, help="processes (at most 2 on the shared machines)")
    p.add_argument("--render-speed", action="store_true", help="only measure ms/step with/without cameras")
    p.add_argument("--size", type=int, default=64)
    args = p.parse_args(argv)

    from world2act.envs.libero import libero_tasks

    n = len(libero_tasks(args.suite))
    ids = list(range(n)) if args.tasks == "all" else [int(t) for t in args.tasks.split(",")]
    if args.render_speed:
        plain, cams = render_speed(args.suite, ids[0], args.size)
        print(f"{args.suite} task {ids[0]}: {plain:.1f} ms/step without cameras, "
              f"{cams:.1f} ms/step with agentview+wrist at {args.size}x{args.size}")
        return 0

    t0 = time.time()
    if args.workers > 1:
        with ProcessPoolExecutor(args.workers) as pool:
            futs = [pool.submit(run_task, args.suite, i, args.episodes, args.seed) for i in ids]
            rows = [f.result() for f in futs]
    else:
        rows = []
        for i in ids:
            rows.append(run_task(args.suite, i, args.episodes, args.seed))
            r = rows[-1]
            print(f"# task {i}: {r.get('success', '-')}/{r.get('episodes', '-')}", file=sys.stderr, flush=True)
    print(f"\n### {args.suite} ({args.episodes} random resets per task, seeds {args.seed}..{args.seed + args.episodes - 1})\n")
    print("| task | instruction | successes/episodes | mean steps | closures |")
    print("|---|---|---|---|---|")
    tot_s = tot_e = 0
    ms, cpu = [], []
    for r in rows:
        if "error" in r:
            print(f"| {r['task_id']} | {r['instruction']} | unsupported | – | – |")
            continue
        tot_s += r["success"]
        tot_e += r["episodes"]
        ms.append(r["ms_per_step"])
        cpu.append(r["cpu_ms_per_step"])
        print(f"| {r['task_id']} | {r['instruction']} | {r['success']}/{r['episodes']} | {r['mean_steps']:.0f} | {r['closures']:.2f} |")
    if tot_e:
        print(f"\nmean success {100 * tot_s / tot_e:.1f}% ({tot_s}/{tot_e}); "
              f"simulation + expert {sum(ms) / len(ms):.1f} ms/step wall, {sum(cpu) / len(cpu):.1f} ms/step CPU "
              f"(no rendering); wall {time.time() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
