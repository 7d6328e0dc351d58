"""Dataset I/O benchmark: video codec error and LeRobot v3 write/read speed per episode.

Usage::

    .venv/bin/python benchmarks/bench_data.py                         # Meta-World pick-place, 64x64
    .venv/bin/python benchmarks/bench_data.py --benchmark libero_object --task 0
    .venv/bin/python benchmarks/bench_data.py --synthetic             # no simulator

Takes one expert episode (rendered with the project's cameras), then prints
(1) round-trip error of several codec settings (mean / 99th percentile / max absolute error in
grey levels of 255, size per frame, encode/decode ms per frame) and (2) the ms per episode of
``LeRobotDatasetWriter.add_episode`` and ``LeRobotDataset.load_episode`` (with and without
video decoding) at the default settings.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.setdefault("PYOPENGL_PLATFORM", "egl")


def real_episode(benchmark: str, task, size: int):
    from world2act.data.collect import collect_episode
    from world2act.envs import default_cameras

    for seed in range(5):
        out = collect_episode(dict(benchmark=benchmark, task_id=task, seed=seed, attempt=0, image_size=size,
                                   cameras=list(default_cameras(benchmark)), max_steps=None))
        if out["episode"] is not None:
            return out["episode"]
    raise SystemExit(f"the expert failed 5 times on {benchmark} {task}")


def synthetic_episode(size: int, T: int = 120):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
    from data.helpers import make_episode, make_spec

    return make_episode(0, T=T, spec=make_spec(size=(size, size)))


def best_ms(fn, reps: int = 3) -> float:
    ts = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return 1e3 * min(ts)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--benchmark", default="metaworld")
    ap.add_argument("--task", default="pick-place-v3")
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--synthetic", action="store_true")
    ap.add_argument("--episodes", type=int, default=5, help="episodes written for the speed test")
    args = ap.parse_args()

    from world2act.data import DatasetSpec, LeRobotDataset, LeRobotDatasetWriter, read_video, write_video

    task = int(args.task) if args.task.isdigit() else args.task
    ep = synthetic_episode(args.size) if args.synthetic else real_episode(args.benchmark, task, args.size)
    T = len(ep)
    cams = list(ep.images)
    print(f"episode: {'synthetic' if args.synthetic else f'{args.benchmark} {task}'}, T={T}, cameras={cams}, "
          f"{args.size}x{args.size}")

    tmp = Path(tempfile.mkdtemp(prefix="bench_data_"))
    print("\ncodec round trip (all cameras pooled)")
    print(f"{'codec':>10} {'pix_fmt':>8} {'crf':>4} {'MAE':>6} {'p99':>5} {'max':>5} {'B/frame':>8} {'enc ms/f':>9} {'dec ms/f':>9}")
    for pix_fmt, crf in [("yuv444p", 0), ("yuv444p", 5), ("yuv444p", 10), ("yuv444p", 18), ("yuv444p", 23), ("yuv420p", 10), ("yuv420p", 23)]:
        errs, size, enc, dec = [], 0, 0.0, 0.0
        for c in cams:
            p = tmp / f"{c}.mp4"
            enc += best_ms(lambda: write_video(p, ep.images[c], 20, pix_fmt=pix_fmt, crf=crf))
            dec += best_ms(lambda: read_video(p))
            errs.append(np.abs(read_video(p).astype(np.int16) - ep.images[c]).ravel())
            size += p.stat().st_size
        e = np.concatenate(errs)
        n = T * len(cams)
        print(f"{'libx264':>10} {pix_fmt:>8} {crf:>4} {e.mean():6.2f} {np.percentile(e, 99):5.0f} {e.max():5d} "
              f"{size / n:8.0f} {enc / n:9.3f} {dec / n:9.3f}")

    spec = DatasetSpec(fps=20, action_dim=ep.actions.shape[1], state_dim=ep.states.shape[1], cameras=tuple(cams),
                       image_size=(args.size, args.size),
                       sim_state_dim=ep.sim_states.shape[1] if ep.sim_states is not None else None)
    root = tmp / "ds"
    w = LeRobotDatasetWriter(root, spec)
    t0 = time.perf_counter()
    for _ in range(args.episodes):
        w.add_episode(ep)
    write_ms = 1e3 * (time.perf_counter() - t0) / args.episodes
    t0 = time.perf_counter()
    w.finalize()
    fin_ms = 1e3 * (time.perf_counter() - t0)
    ds = LeRobotDataset(root)
    read_ms = best_ms(lambda: [ds.load_episode(i) for i in range(ds.num_episodes)]) / ds.num_episodes
    fast_ms = best_ms(lambda: [ds.load_episode(i, load_images=False) for i in range(ds.num_episodes)]) / ds.num_episodes
    open_ms = best_ms(lambda: LeRobotDataset(root))
    print(f"\nLeRobot v3 dataset, {args.episodes} episodes of T={T}, {len(cams)} cameras (default: libx264 yuv420p crf 10)")
    print(f"  add_episode            {write_ms:8.1f} ms/episode")
    print(f"  finalize (stats)       {fin_ms:8.1f} ms total")
    print(f"  open dataset           {open_ms:8.1f} ms")
    print(f"  load_episode           {read_ms:8.1f} ms/episode (decodes {len(cams)} videos)")
    print(f"  load_episode(no video) {fast_ms:8.1f} ms/episode")
    import shutil

    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
