"""``world2act collect``: scripted-expert demonstrations into a LeRobot v3 dataset.

For every task the scripted expert (:func:`world2act.experts.make_expert`) is rolled out from
seeded random resets (seeds from ``SEED_RANGES["demos"]``, disjoint from post-training and
evaluation; LIBERO's official init states are never used here). Episodes are simulated
*without* cameras while the per-step simulator state is kept; only successful episodes are then
re-rendered from those states (every frame, every camera, at ``--image-size``) inside the
worker. Failed attempts are counted and logged, never written; new seeds are tried until the
task has ``--episodes`` demonstrations or ``--max-attempts`` (default 3×N) were spent.

Determinism: attempt ``i`` of task ``t`` always uses reset seed
``run_seed_for("demos", t, seed, i, block=10000)`` (:func:`world2act.envs.run_seed_for`): any
non-negative ``--seed`` selects one block of 10 000 demo seeds per task, always inside
``SEED_RANGES["demos"]``; seeds ``0..99`` give pairwise disjoint blocks (seeds equal modulo 100
share one), and ``0..9`` keep their original ``seed_for("demos", t, 10000*seed + i)``. A task's
demonstrations are its first N successful attempts in attempt order, whatever the
number of workers or interruptions (``--resume``).

Output (``--out``): the dataset (``meta/info.json``, ``data/``, ``videos/``), per-episode meta
``benchmark, task_id, task_name, seed, attempt``, ``meta/collect_stats.json`` (attempts,
successes, success rate per task, demos/min) and ``manifest.json``.

Simulator states are stored with one fixed width per dataset (LeRobot's writer can then append
to it): before collecting, each task's state width is read from one reset of its env (a
LIBERO scene's width depends on its objects), the dataset's ``sim_state`` gets the largest,
and narrower states are zero-padded (see :class:`~world2act.data.lerobot.DatasetSpec`).
Videos use ``--video-codec`` (default ``h264``: yuv420p, browser-playable).
"""
from __future__ import annotations

import dataclasses
import logging
import math
import time
from pathlib import Path
from typing import Any

import numpy as np

from world2act import World2ActError
from world2act.envs.registry import benchmark_spec
from world2act.utils.config import opt

log = logging.getLogger(__name__)

STATS_PATH = "meta/collect_stats.json"
SEED_BLOCK = 10_000  # attempts per --seed block
ROBOT_TYPE = {"metaworld": "sawyer"}  # LIBERO: panda (kept for importers; the dataset uses benchmark_spec().robot)


@dataclasses.dataclass
class CollectConfig:
    """Options of ``world2act collect`` (see the module docstring).

    Attributes:
        benchmark: one of :data:`world2act.envs.BENCHMARKS`.
        tasks: task ids (LIBERO ints / Meta-World names) or ``["all"]``.
        episodes: successful demonstrations wanted per task.
        image_size: square frame size in pixels.
        cameras: camera names (None → benchmark defaults).
        workers: worker processes (0 = in this process).
        max_attempts: attempts allowed per task (None → 3 × episodes; at most 10000, one seed block).
        seed: any non-negative integer; selects a block of 10000 demo seeds per task (seeds equal
            modulo 100 select the same block, see the module docstring).
        max_steps: step cap per episode (None → the suite's budget).
        video_codec: video preset (:data:`world2act.data.video.VIDEO_PRESETS`: ``h264``
            yuv420p browser-playable (default), ``h264-444`` full chroma, ``h264-lossless``,
            ``av1``).
    """

    benchmark: str = opt("", "libero_object | libero_spatial | libero_goal | libero_10 | libero_90 | metaworld",
                         required=True)
    tasks: list = opt(help="comma-separated LIBERO task ids (0,1,...) or Meta-World env names "
                      "(pick-place-v3,door-open-v3), or 'all'", factory=list, required=True)
    episodes: int | None = opt(None, "successful demonstrations per task", required=True)
    image_size: int = opt(64, "square frame size in pixels (default 64)")
    cameras: list | None = opt(None, "comma-separated cameras (default: agentview,wrist for LIBERO; "
                               "corner2,gripperPOV for Meta-World)")
    workers: int | None = opt(None, "worker processes (default: CPU cores; 0 = in this process)")
    max_attempts: int | None = opt(None, "rollouts allowed per task (default 3 x --episodes; at most 10000)")
    seed: int = 0
    max_steps: int | None = opt(None, "step cap per episode (default: the suite's budget; Meta-World 500)")
    video_codec: str = opt("h264", "video encoding: h264 (default; yuv420p, browser-playable), h264-444 (full "
                           "chroma), h264-lossless (yuv444p CRF 0), av1 (LeRobot's codec)")


# ----------------------------------------------------------------------------- worker side
_ENV_CACHE: dict[tuple, Any] = {}


def _get_env(benchmark: str, task_id, size: int, cameras: tuple[str, ...]):
    key = (benchmark, task_id, size, cameras)
    env = _ENV_CACHE.get(key)
    if env is None:
        keep = 4 if benchmark_spec(benchmark).is_metaworld else 1  # a LIBERO rendering process holds ~2 GB
        while len(_ENV_CACHE) >= keep:
            _, old = _ENV_CACHE.popitem()
            old.close()
        from world2act.envs import make_env

        env = make_env(benchmark, task_id, camera_size=(size, size), cameras=cameras)
        _ENV_CACHE[key] = env
    return env


def sim_state_width(job: dict) -> dict:
    """Worker side: the simulator-state width of ``job["task_id"]`` after one reset.

    Args:
        job: ``dict(benchmark, task_id, seed, image_size, cameras)``.

    Returns:
        ``dict(task_id, width)``.
    """
    env = _get_env(job["benchmark"], job["task_id"], int(job["image_size"]), tuple(job["cameras"]))
    env.reset(seed=int(job["seed"]))
    return dict(task_id=job["task_id"], width=int(np.asarray(env.get_sim_state()).shape[0]))


def collect_episode(job: dict) -> dict:
    """Roll out the expert once (worker side; picklable job in, picklable result out).

    Args:
        job: ``dict(benchmark, task_id, seed, attempt, image_size, cameras, max_steps)``.

    Returns:
        ``dict(task_id, seed, attempt, success, steps, sim_s, render_s, episode)`` where
        ``episode`` is an :class:`~world2act.data.schema.Episode` with images and sim states for
        a success, else None.
    """
    from world2act.data.schema import Episode
    from world2act.experts import run_expert

    cams = tuple(job["cameras"])
    env = _get_env(job["benchmark"], job["task_id"], int(job["image_size"]), cams)
    seed = int(job["seed"])
    t0 = time.perf_counter()
    sims, states, widths = [], [], []

    def record(_step):
        sims.append(env.get_sim_state())
        states.append(env.proprio())
        widths.append(env.gripper_width())

    actions, success = run_expert(env, seed, int(job.get("max_steps") or env.max_steps), record)
    sim_s = time.perf_counter() - t0
    out = dict(task_id=job["task_id"], seed=seed, attempt=job["attempt"], success=success, steps=len(actions),
               sim_s=sim_s, render_s=0.0, episode=None)
    if not success:
        return out
    t1 = time.perf_counter()
    size = (int(job["image_size"]), int(job["image_size"]))
    frames: dict[str, list] = {c: [] for c in cams}
    for st in sims:
        env.set_sim_state(st)
        imgs = env.render(cams, size)
        for c in cams:
            frames[c].append(imgs[c])
    out["render_s"] = time.perf_counter() - t1
    out["episode"] = Episode(
        task=env.instruction,
        actions=np.stack(actions).astype(np.float32),
        states=np.stack(states).astype(np.float32),
        gripper_width=np.asarray(widths, dtype=np.float32),
        images={c: np.stack(v).astype(np.uint8) for c, v in frames.items()},
        sim_states=np.stack(sims).astype(np.float64),
        success=True,
        meta=dict(benchmark=job["benchmark"], task_id=job["task_id"], task_name=env.task_name,
                  seed=seed, attempt=int(job["attempt"])),
    )
    return out


# ----------------------------------------------------------------------------- driver
def _validate(cfg: CollectConfig) -> tuple[list, tuple[str, ...], dict]:
    """All input checks that need no simulator. Returns (task ids, cameras, task index map)."""
    from world2act.envs import BENCHMARKS, check_cameras, list_tasks, resolve_tasks

    if cfg.benchmark not in BENCHMARKS:
        raise World2ActError(f"--benchmark: unknown benchmark {cfg.benchmark!r}; valid: {', '.join(BENCHMARKS)}")
    cams = check_cameras(cfg.benchmark, cfg.cameras)
    tasks = resolve_tasks(cfg.benchmark, cfg.tasks)
    if int(cfg.episodes) <= 0:
        raise World2ActError(f"--episodes must be a positive integer, got {cfg.episodes}")
    if int(cfg.image_size) < 8 or int(cfg.image_size) % 2:
        raise World2ActError(f"--image-size must be an even number >= 8 (video encoding), got {cfg.image_size}")
    if int(cfg.seed) < 0:
        raise World2ActError(f"--seed must be a non-negative integer for collect, got {cfg.seed}")
    from world2act.data.video import video_preset

    video_preset(cfg.video_codec)  # raises with the valid names
    if cfg.max_attempts is not None and int(cfg.max_attempts) < 1:
        raise World2ActError(f"--max-attempts must be >= 1, got {cfg.max_attempts}")
    cap = int(cfg.max_attempts) if cfg.max_attempts else 3 * int(cfg.episodes)
    if cap > SEED_BLOCK:
        raise World2ActError(f"--max-attempts: at most {SEED_BLOCK} attempts per task (one --seed block), got {cap}"
                             + ("" if cfg.max_attempts else f" (3 x --episodes {cfg.episodes})"))
    from world2act.experts import supported_tasks

    supported = supported_tasks(cfg.benchmark)
    missing = [t for t in tasks if t not in supported]
    if missing:
        raise World2ActError(f"--tasks: no scripted expert for {cfg.benchmark} task(s) {missing}; supported: {supported}")
    index = {t.task_id: i for i, t in enumerate(list_tasks(cfg.benchmark))}
    return tasks, cams, index


def _existing_progress(out: Path, tasks: list) -> tuple[dict, dict]:
    """(written episodes per task, next attempt index per task) of an existing dataset."""
    from world2act.utils.io import read_json

    written = {t: 0 for t in tasks}
    next_attempt = {t: 0 for t in tasks}
    if (out / "meta" / "info.json").is_file():
        from world2act.data import LeRobotDataset

        ds = LeRobotDataset(out, check_files=False)
        for i in range(ds.num_episodes):
            m = ds.episode_meta(i)
            t = m.get("task_id")
            if t in written:
                written[t] += 1
                next_attempt[t] = max(next_attempt[t], int(m.get("attempt", -1)) + 1)
    if (out / STATS_PATH).is_file():
        st = read_json(out / STATS_PATH)
        for t in tasks:
            rec = (st.get("per_task") or {}).get(str(t)) or {}
            next_attempt[t] = max(next_attempt[t], int(rec.get("next_attempt", 0)))
    return written, next_attempt


def _check_out(out: Path, resume: bool, overwrite: bool) -> None:
    """Refuse an unusable ``--out`` before any simulator starts (nothing is changed here)."""
    if out.exists() and not out.is_dir():
        raise World2ActError(f"{out}: exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not (resume or overwrite):
        raise World2ActError(f"{out}: folder exists and is not empty (pass --resume to continue or --overwrite to replace it)")


def _sim_state_dim(cfg: CollectConfig, out: Path, tasks: list, cams: tuple, index: dict, resume: bool) -> int:
    """The dataset's fixed ``sim_state`` width: the widest of the tasks' simulator states.

    On ``--resume`` the existing dataset's width is kept (a dataset written before 2026-12
    keeps its per-episode width, ``-1``); a task whose states are wider is refused.
    """
    from world2act.envs import run_seed_for
    from world2act.envs.parallel import is_error, run_jobs

    existing = None
    if resume and (out / "meta" / "info.json").is_file():
        from world2act.data import LeRobotDataset
        from world2act.data.lerobot import VARIABLE

        existing = LeRobotDataset(out, check_files=False).spec.sim_state_dim
        if existing == VARIABLE or existing is None:
            return existing
    jobs = [dict(benchmark=cfg.benchmark, task_id=t, seed=run_seed_for("demos", index[t], cfg.seed, 0, block=SEED_BLOCK),
                 image_size=cfg.image_size, cameras=cams) for t in tasks]
    res = run_jobs(sim_state_width, jobs, min(cfg.workers, len(jobs)), desc=None)
    errors = [r for r in res if is_error(r)]
    if errors:
        raise World2ActError(f"collect: could not start the {cfg.benchmark} simulator to read the state size "
                             f"({errors[0].error})")
    widths = {r["task_id"]: r["width"] for r in res}
    log.info("simulator state widths: %s", widths)
    width = max(widths.values())
    if existing is not None:
        wide = {t: w for t, w in widths.items() if w > existing}
        if wide:
            raise World2ActError(f"{out}: cannot resume: the simulator states of task(s) {sorted(wide)} have "
                                 f"{max(wide.values())} values, the dataset's sim_state holds {existing}; "
                                 "collect these tasks into a new --out")
        return existing
    return width


class _Collection:
    """The running state of one ``collect``: per-task counters, the dataset writer and the
    stats file; :meth:`round_jobs` plans a round of rollouts, :meth:`on_result` books one."""

    def __init__(self, cfg: CollectConfig, out: Path, writer, per_task: dict, cams, N: int, cap: int):
        self.cfg, self.out, self.writer, self.per_task, self.cams, self.N, self.cap = cfg, out, writer, per_task, cams, N, cap
        self.new_written = 0
        self.t_collect = time.time()

    def write_stats(self, complete: bool) -> dict:
        """Write ``STATS_PATH`` (totals, rates, speed, per task) and return it."""
        from world2act.utils.io import write_json

        cfg, per_task, N = self.cfg, self.per_task, self.N
        minutes = max(1e-9, (time.time() - self.t_collect) / 60.0)
        pt = {}
        for t, r in per_task.items():
            rate = r["successes"] / r["attempts"] if r["attempts"] else None
            pt[str(t)] = {k: v for k, v in r.items() if k != "steps_success"} | {
                "success_rate": rate, "mean_success_steps": float(np.mean(r["steps_success"])) if r["steps_success"] else None}
        tot_a = sum(r["attempts"] for r in per_task.values())
        tot_s = sum(r["successes"] for r in per_task.values())
        stats = dict(benchmark=cfg.benchmark, episodes_per_task=N, max_attempts_per_task=self.cap, complete=complete,
                     total_attempts=tot_a, total_successes=tot_s, success_rate=(tot_s / tot_a) if tot_a else None,
                     episodes_written=self.writer.num_episodes, new_episodes=self.new_written,
                     wall_s=round(time.time() - self.t_collect, 2), demos_per_min=round(self.new_written / minutes, 3),
                     workers=cfg.workers, image_size=cfg.image_size, cameras=list(self.cams), per_task=pt)
        write_json(self.out / STATS_PATH, stats)
        return stats

    def on_result(self, _i: int, r) -> None:
        """Book one rollout: an error, a failure (its seed kept), or a success (written while the
        task still needs demonstrations)."""
        from world2act.envs.parallel import is_error

        per_task = self.per_task
        if is_error(r):
            job = r.job
            rec = per_task[job["task_id"]]
            rec["errors"] += 1
            rec["attempts"] = max(rec["attempts"], job["attempt"] + 1)
            rec["next_attempt"] = max(rec["next_attempt"], job["attempt"] + 1)
            log.warning("task %s seed %d: error: %s", job["task_id"], job["seed"], r.error)
            return
        rec = per_task[r["task_id"]]
        rec["attempts"] = max(rec["attempts"], r["attempt"] + 1)
        rec["next_attempt"] = max(rec["next_attempt"], r["attempt"] + 1)
        rec["sim_s"] += r["sim_s"]
        rec["render_s"] += r["render_s"]
        if not r["success"]:
            rec["failed_seeds"].append(r["seed"])
            log.debug("task %s seed %d: expert failed after %d steps", r["task_id"], r["seed"], r["steps"])
            return
        rec["successes"] += 1
        rec["steps_success"].append(r["steps"])
        if rec["written"] < self.N:
            self.writer.add_episode(r["episode"])
            rec["written"] += 1
            self.new_written += 1

    def round_jobs(self, rnd: int, tasks, index: dict, budget: int) -> list[dict]:
        """Round ``rnd``'s rollouts, task-major (so a worker keeps its env): per task, the missing
        demonstrations scaled up by its success rate so far, within its attempt cap."""
        from world2act.envs import run_seed_for

        cfg, N = self.cfg, self.N
        jobs = []
        for t in tasks:  # task-major so a worker keeps its env
            rec = self.per_task[t]
            need = N - rec["written"]
            left = self.cap - rec["next_attempt"]
            if need <= 0 or left <= 0:
                continue
            rate = rec["successes"] / rec["attempts"] if rec["attempts"] else 1.0
            n = min(left, need if rnd == 0 and not rec["attempts"] else math.ceil(need / max(rate, 0.25)))
            for k in range(n):
                a = rec["next_attempt"] + k
                jobs.append(dict(benchmark=cfg.benchmark, task_id=t, seed=run_seed_for("demos", index[t], cfg.seed, a, block=SEED_BLOCK),
                                 attempt=a, image_size=cfg.image_size, cameras=self.cams, max_steps=budget))
        return jobs


def _initial_per_task(out: Path, tasks, written: dict, next_attempt: dict, resume: bool) -> dict:
    """Each task's counters, resumed from the dataset and the previous stats file when resuming."""
    stats_prev = {}
    if resume and (out / STATS_PATH).is_file():
        from world2act.utils.io import read_json

        stats_prev = read_json(out / STATS_PATH).get("per_task") or {}
    return {t: dict(task_id=t, attempts=int(next_attempt[t]), successes=int((stats_prev.get(str(t)) or {}).get("successes", written[t])),
                    written=written[t], next_attempt=int(next_attempt[t]), failed_seeds=[], errors=0,
                    steps_success=[], sim_s=0.0, render_s=0.0) for t in tasks}


def run(cfg: CollectConfig, out: str | Path, *, resume: bool = False, overwrite: bool = False) -> dict:
    """Collect demonstrations (see the module docstring); returns the stats dict.

    Raises:
        World2ActError: bad benchmark / task / camera / sizes, or an unusable ``out`` — all
            before any simulator starts.
    """
    from world2act.data import DatasetSpec, LeRobotDatasetWriter
    from world2act.envs import step_budget
    from world2act.envs.parallel import run_jobs
    from world2act.utils.manifest import write_manifest

    started = time.time()
    tasks, cams, index = _validate(cfg)
    out = Path(out)
    _check_out(out, resume, overwrite)
    bspec = benchmark_spec(cfg.benchmark)
    sim_dim = _sim_state_dim(cfg, out, tasks, cams, index, resume and not overwrite)
    spec = DatasetSpec(fps=bspec.fps, action_dim=bspec.action_dim, state_dim=bspec.state_dim,
                       cameras=cams, image_size=(cfg.image_size, cfg.image_size), benchmark=cfg.benchmark,
                       robot_type=bspec.robot, sim_state_dim=sim_dim)
    writer = LeRobotDatasetWriter(out, spec, resume=resume, overwrite=overwrite, video=cfg.video_codec)
    written, next_attempt = _existing_progress(out, tasks) if resume else ({t: 0 for t in tasks}, {t: 0 for t in tasks})
    N = int(cfg.episodes)
    cap = int(cfg.max_attempts) if cfg.max_attempts else 3 * N
    per_task = _initial_per_task(out, tasks, written, next_attempt, resume)
    budget = cfg.max_steps or step_budget(cfg.benchmark)
    for t in tasks:
        if written[t]:
            log.info("task %s: %d/%d demonstrations already written (resuming at attempt %d)", t, written[t], N, next_attempt[t])
    col = _Collection(cfg, out, writer, per_task, cams, N, cap)

    complete = False
    try:
        rnd = 0
        while True:
            jobs = col.round_jobs(rnd, tasks, index, budget)
            if not jobs:
                break
            rnd += 1
            log.info("round %d: %d rollouts over %d task(s), %d worker(s)", rnd, len(jobs), len({j['task_id'] for j in jobs}), cfg.workers)
            run_jobs(collect_episode, jobs, cfg.workers, desc=f"collect {cfg.benchmark} (round {rnd})", on_result=col.on_result)
            col.write_stats(False)
        complete = True
    finally:
        writer.finalize()
        stats = col.write_stats(complete)
        for t, r in per_task.items():
            if r["written"] < N:
                log.warning("task %s: only %d/%d demonstrations after %d attempts (expert success rate %s)", t,
                            r["written"], N, r["attempts"], f"{r['successes'] / r['attempts']:.2f}" if r["attempts"] else "n/a")
        write_manifest(out, stage="collect", config=cfg, metrics={k: v for k, v in stats.items() if k != "per_task"},
                       complete=complete, started=started)
    log.info("collected %d new demonstrations (%d in dataset) in %.1f s: %.2f demos/min, expert success rate %s",
             col.new_written, writer.num_episodes, stats["wall_s"], stats["demos_per_min"],
             f"{stats['success_rate']:.3f}" if stats["success_rate"] is not None else "n/a")
    return stats


# ----------------------------------------------------------------------------- CLI
Config, RUN_OPTIONS = CollectConfig, ("resume", "overwrite")


def main(cfg: CollectConfig, args) -> int:
    """Entry point of ``world2act collect``."""
    from world2act.envs.parallel import default_workers

    cfg = dataclasses.replace(cfg, tasks=[str(t).strip() for t in cfg.tasks if str(t).strip()],
                              workers=default_workers() if cfg.workers is None else cfg.workers)
    stats = run(cfg, args.out, resume=args.resume, overwrite=args.overwrite)
    print(f"collect: {stats['episodes_written']} demonstrations in {args.out} "
          f"({stats['new_episodes']} new, {stats['demos_per_min']:.1f} demos/min, expert success rate "
          f"{stats['success_rate'] if stats['success_rate'] is None else round(stats['success_rate'], 3)})")
    return 0
