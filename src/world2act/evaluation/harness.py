"""The evaluation harness every success rate in world2act comes from (paper Sec. 5.1).

Protocol
--------
* Episodes are self-contained jobs ``(task, trial, seed)``; what happens in an episode depends
  only on its job, never on which worker runs it or what ran before, so results are identical
  for any worker count.
* LIBERO: trial ``i`` of evaluation seed ``s`` starts from official init state
  ``(i + offset(s)) % 50`` with ``offset(s) = 0`` — the official protocol (trial i ↔ init state
  i; 50 trials cover all 50 states); the seed changes the policy's sampling noise. (Pass
  ``init_offset_per_seed=k`` to use ``offset(s) = k · position of s in seeds`` instead.)
* Meta-World: trial ``i`` (at most 500 trials) of seed ``s`` (any non-negative integer) resets
  with ``run_seed_for("eval", task_index, s, i, block=500)`` — from the evaluation seed range,
  disjoint from every demonstration and post-training seed (``world2act.envs.SEED_RANGES``);
  seeds ``0..1999`` give pairwise disjoint resets (seeds equal modulo 2000 share theirs, so one
  run refuses such a pair), and ``0..199`` keep their original ``seed_for("eval", task_index,
  500·s + i)``. ``task_index`` is the task's position in the full Meta-World task list, so a
  task's episodes do not depend on which other tasks are evaluated.
* The policy's noise generator is seeded per episode from ``(s, task, i)``.
* Budget: the suite's step budget after the env's settle steps (LIBERO spatial 220, object 280,
  goal 300, libero_10 520; Meta-World 500). An episode ends at the first successful step.
* Chunked execution: the policy is queried at chunk boundaries only, and only then are its
  cameras rendered (policies with no cameras, like the expert, cause no rendering at all).
* Errors: an exception from the simulator or the policy ends that episode with its error
  recorded (a trial, a failure, counted in ``n_errors``); a worker process that dies takes its
  in-flight episodes with it: they are retried once in a fresh worker, then recorded as errors.
* Workers: one process per worker (spawned), the policy loaded once per worker, one torch
  thread per worker (the same arithmetic whatever the worker count); a free worker takes the
  next job of the task whose simulator it already holds.
* Every finished episode is appended to ``episodes.jsonl`` as it completes; Ctrl-C (or SIGTERM)
  writes the summary of what finished (``complete: false``); ``resume=True`` skips finished
  episodes.
"""
from __future__ import annotations

import concurrent.futures as cf
import dataclasses
import json
import logging
import os
import time
import traceback
from pathlib import Path
from typing import Any, Callable

import numpy as np

from world2act import World2ActError

log = logging.getLogger(__name__)

EPISODES_FILE = "episodes.jsonl"
MW_SEED_STRIDE = 500  # Meta-World: reset seeds per evaluation seed (trials <= 500), see run_seed_for


@dataclasses.dataclass(frozen=True)
class EpisodeJob:
    """One evaluation episode, fully determined by its fields.

    Attributes:
        task: task id (LIBERO int, Meta-World env name). task_index: position in the
            benchmark's full task list (seeds are derived from it).
        trial: trial number within (task, seed). seed: the evaluation seed.
        init_state_index: LIBERO official init state (None on Meta-World).
        reset_seed: Meta-World reset seed (None on LIBERO).
        policy_seed: seed of the policy's sampling noise for this episode.
        video: whether to record a video of this episode.
    """

    task: Any
    task_index: int
    trial: int
    seed: int
    init_state_index: int | None
    reset_seed: int | None
    policy_seed: int
    video: bool = False

    @property
    def key(self) -> str:
        return f"{self.task}|{self.seed}|{self.trial}"


def policy_seed_for(seed: int, task_index: int, trial: int) -> int:
    """Per-episode policy noise seed from ``(seed, task_index, trial)`` (SeedSequence hash)."""
    return int(np.random.SeedSequence([int(seed), int(task_index), int(trial), 0x57A2]).generate_state(1, np.uint64)[0] >> 1)


def episode_jobs(benchmark: str, tasks: list, trials: int, seeds: list[int], *, video_episodes: int = 0,
                 num_init_states: int | None = None, init_offset_per_seed: int = 0,
                 init_states: str = "eval") -> list[EpisodeJob]:
    """The ordered job list for a run (ordered by task, seed, trial so workers reuse envs).

    ``init_states="validation"`` draws seeded resets from the *post-training* seed range
    instead (:func:`validation_reset_seed`, on every benchmark, LIBERO included): the split on
    which Stage-2 settings are chosen, disjoint from the init states Stage 2 trains on and from
    every evaluation init state.

    Raises:
        World2ActError: ``trials < 1``, no seeds, a negative seed; on Meta-World more than
            :data:`MW_SEED_STRIDE` trials or two seeds that share reset seeds.
    """
    from world2act.envs import list_tasks, run_seed_for, runs_per_task
    from world2act.envs.registry import benchmark_spec

    bspec = benchmark_spec(benchmark)
    if num_init_states is None:
        num_init_states = bspec.num_init_states
    if trials < 1:
        raise World2ActError(f"--trials must be at least 1, got {trials}")
    if not seeds:
        raise World2ActError("--seeds: give at least one seed (e.g. 0 or 0,1,2,3,4)")
    if min(int(s) for s in seeds) < 0:
        raise World2ActError(f"--seeds {list(seeds)}: seeds must be non-negative integers")
    if init_states not in ("eval", "validation"):
        raise World2ActError(f"--init-states {init_states!r}: must be 'eval' or 'validation'")
    if not bspec.has_official_init_states or init_states == "validation":
        if trials > MW_SEED_STRIDE:
            raise World2ActError(f"Meta-World evaluation supports at most {MW_SEED_STRIDE} trials per seed, got {trials}")
        R = runs_per_task("eval", MW_SEED_STRIDE)
        same = {}
        for s in seeds:
            if int(s) % R in same and same[int(s) % R] != int(s):
                raise World2ActError(f"--seeds: {same[int(s) % R]} and {s} give the same Meta-World reset seeds "
                                     f"(seeds equal modulo {R} share them); pick seeds that differ modulo {R}")
            same[int(s) % R] = int(s)
    all_ids = [t.task_id for t in list_tasks(benchmark)]
    libero = bspec.has_official_init_states  # LIBERO: official init states; Meta-World: seeded resets
    jobs = []
    for task in tasks:
        ti = all_ids.index(task)
        for si, s in enumerate(seeds):
            for i in range(trials):
                if init_states == "validation":
                    init, reset_seed = None, validation_reset_seed(ti, int(s), i)
                elif libero:
                    init = (i + init_offset_per_seed * si) % num_init_states
                    reset_seed = None
                else:
                    init, reset_seed = None, run_seed_for("eval", ti, int(s), i, block=MW_SEED_STRIDE)
                jobs.append(EpisodeJob(task, ti, i, int(s), init, reset_seed, policy_seed_for(s, ti, i)))
    # videos: first seed, lowest trials first, one per task in turn
    order = sorted((j for j in jobs if j.seed == seeds[0]), key=lambda j: (j.trial, tasks.index(j.task)))
    chosen = {j.key for j in order[:max(0, video_episodes)]}
    return [dataclasses.replace(j, video=j.key in chosen) for j in jobs]


VALIDATION_RUN_OFFSET = 100  # validation blocks start 100 blocks (50 000 seeds) into a task's post-train slot


def validation_reset_seed(task_index: int, seed: int, trial: int) -> int:
    """Reset seed of validation trial ``trial`` (< 500) of seed ``seed`` for task ``task_index``.

    ``run_seed_for("posttrain", task_index, 100 + seed, trial, block=500)``: inside the
    post-training seed range, 50 000 seeds past the first post-training init states
    (``posttrain_seeds`` uses indices ``0 .. init_states_per_task − 1``), so validation never
    shares an init state with Stage 2's training rollouts (while ``init_states_per_task`` <
    50 000) nor with evaluation (a different range).
    """
    from world2act.envs import run_seed_for

    return run_seed_for("posttrain", task_index, VALIDATION_RUN_OFFSET + int(seed), int(trial), block=MW_SEED_STRIDE)


# ---------------------------------------------------------------------------- worker side
@dataclasses.dataclass
class WorkerSpec:
    """What a worker process needs to build its policy and environments (picklable)."""

    policy: Any  # folder / "expert" / picklable zero-arg factory returning a Policy
    benchmark: str
    image_size: tuple[int, int] | None = None
    device: str = "cpu"
    env_factory: Callable | None = None  # (benchmark, task, camera_size, cameras) -> ManipulationEnv
    video_dir: str | None = None
    video_camera: str | None = None
    video_size: tuple[int, int] = (128, 128)
    video_stride: int = 2
    threads: int = 1


class _WorkerState:
    def __init__(self, spec: WorkerSpec):
        import torch

        torch.set_num_threads(max(1, int(spec.threads)))
        self.spec = spec
        if isinstance(spec.policy, (str, os.PathLike)):
            from world2act.policies.io import load_policy

            self.policy = load_policy(spec.policy, benchmark=spec.benchmark, device=spec.device)
        else:
            self.policy = spec.policy()
        self.image_size = tuple(spec.image_size or self.policy.image_size)
        self.env = None
        self.env_task = None

    def get_env(self, task):
        if self.env is not None and self.env_task == task:
            return self.env
        self.drop_env()
        if self.spec.env_factory is not None:
            env = self.spec.env_factory(self.spec.benchmark, task, self.image_size, None)
        else:
            from world2act.envs import make_env

            env = make_env(self.spec.benchmark, task, camera_size=self.image_size)
        self.env, self.env_task = env, task
        return env

    def drop_env(self) -> None:
        if self.env is not None:
            try:
                self.env.close()
            except Exception:  # noqa: BLE001 - closing a broken env must not mask the real error
                pass
        self.env, self.env_task = None, None


_STATE: _WorkerState | None = None


def _init_worker(spec: WorkerSpec) -> None:
    global _STATE
    os.environ.setdefault("MUJOCO_GL", "egl")
    os.environ.setdefault("PYOPENGL_PLATFORM", "egl")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    _STATE = _WorkerState(spec)


def _job_in_worker(job: EpisodeJob) -> dict:
    assert _STATE is not None, "worker not initialised"
    return run_episode(_STATE, job)


def run_episode(state: _WorkerState, job: EpisodeJob) -> dict:
    """Run one episode; never raises for simulator/policy failures (they go in ``error``).

    Returns:
        record dict: ``task``, ``task_index``, ``trial``, ``seed``, ``init_state_index``,
        ``reset_seed``, ``success``, ``steps``, ``error`` (None or ``"Type: message"``),
        ``error_source`` (``"env"`` or ``"policy"``, with an error), ``traceback``, ``wall_s``, ``policy_s``, ``obs_s`` (rendering + proprio), ``video``.
    """
    from world2act.policies.base import batch_observations

    rec: dict = {"task": job.task, "task_index": job.task_index, "trial": job.trial, "seed": job.seed,
                 "init_state_index": job.init_state_index, "reset_seed": job.reset_seed, "success": False,
                 "steps": 0, "error": None, "wall_s": 0.0, "policy_s": 0.0, "obs_s": 0.0, "video": None}
    t_start = time.perf_counter()
    policy = state.policy
    frames: list[np.ndarray] = []
    source = ["env"]  # which side is running: a crash in the env drops the cached env
    try:
        env = state.get_env(job.task)
        if job.init_state_index is not None:
            env.reset(init_state_index=job.init_state_index)
        else:
            env.reset(seed=job.reset_seed)
        source[0] = "policy"
        policy.reset()
        policy.seed(job.policy_seed)
        if policy.needs_env:
            policy.bind_env(env)
        source[0] = "env"
        vcam = state.spec.video_camera or env.cameras[0]
        stride = max(1, int(state.spec.video_stride))

        def grab() -> None:
            if job.video:
                frames.append(env.render((vcam,), tuple(state.spec.video_size))[vcam])

        grab()
        max_steps = int(env.max_steps)
        steps, success = 0, False
        cams = tuple(policy.cameras)
        while steps < max_steps and not success:
            t0 = time.perf_counter()
            obs = batch_observations([env.observe(cams, state.image_size)])
            t1 = time.perf_counter()
            source[0] = "policy"
            chunk = np.asarray(policy.predict_action_chunk(obs), dtype=np.float32)
            rec["obs_s"] += t1 - t0
            rec["policy_s"] += time.perf_counter() - t1
            if chunk.ndim != 3 or chunk.shape[0] != 1 or chunk.shape[2] != env.action_dim:
                raise World2ActError(f"policy returned actions of shape {chunk.shape}, expected [1, K, {env.action_dim}]")
            if not np.all(np.isfinite(chunk)):
                raise World2ActError("policy returned non-finite actions")
            source[0] = "env"
            for a in chunk[0]:
                env.step(a)
                steps += 1
                if steps % stride == 0:
                    grab()
                if env.is_success():
                    success = True
                    break
                if steps >= max_steps:
                    break
            rec["steps"] = steps
        rec["success"] = bool(success)
    except Exception as e:  # noqa: BLE001 - any episode failure is recorded, never dropped
        rec["error"] = f"{type(e).__name__}: {e}"
        rec["error_source"] = source[0]
        rec["traceback"] = traceback.format_exc(limit=6)
        rec["success"] = False
        if source[0] == "env":
            state.drop_env()  # a crashed simulator may be in a bad state: rebuild it for the next job
    if frames and state.spec.video_dir:
        _save_video(state, job, frames, rec)
    rec["wall_s"] = time.perf_counter() - t_start
    return rec


def _save_video(state: _WorkerState, job: EpisodeJob, frames: list[np.ndarray], rec: dict) -> None:
    """Write the episode's frames to ``video_dir`` and name the file in ``rec["video"]``; a failed
    video is logged and does not change the episode result."""
    stride = max(1, int(state.spec.video_stride))
    try:
        from world2act.data.video import write_video

        path = Path(state.spec.video_dir) / f"task{job.task}_seed{job.seed}_trial{job.trial}.mp4"
        write_video(path, np.stack(frames), fps=max(1.0, 20.0 / stride), pix_fmt="yuv420p")
        rec["video"] = str(path.name)
    except Exception as e:  # noqa: BLE001 - a failed video does not change the episode result
        log.warning("video for %s failed: %s", job.key, e)


# ---------------------------------------------------------------------------- driver
def _run_in_process(spec: WorkerSpec, jobs: list[EpisodeJob], on_done: Callable[[dict], None]) -> None:
    import torch

    prev = torch.get_num_threads()
    state = _WorkerState(spec)
    try:
        for job in jobs:
            on_done(run_episode(state, job))
    finally:
        state.drop_env()
        torch.set_num_threads(prev)


def _error_record(job: EpisodeJob, msg: str) -> dict:
    return {"task": job.task, "task_index": job.task_index, "trial": job.trial, "seed": job.seed,
            "init_state_index": job.init_state_index, "reset_seed": job.reset_seed, "success": False, "steps": 0,
            "error": msg, "error_source": "worker", "wall_s": 0.0, "policy_s": 0.0, "obs_s": 0.0, "video": None}


def _next_job(pending: list[EpisodeJob], last_task: Any, busy_tasks: list) -> EpisodeJob:
    """Pick the next job for a free worker: same task as its loaded simulator if any is left
    (no rebuild), else a task no other worker is on, else the first pending job. Only the
    assignment changes with this choice, never an episode's outcome."""
    for pred in (lambda j: j.task == last_task, lambda j: j.task not in busy_tasks, lambda j: True):
        for i, j in enumerate(pending):
            if pred(j):
                return pending.pop(i)
    raise IndexError("no pending job")


def _run_pool(spec: WorkerSpec, jobs: list[EpisodeJob], workers: int, on_done: Callable[[dict], None]) -> None:
    """Run ``jobs`` on ``workers`` spawned worker processes, one episode in flight per worker.

    Each worker is its own single-process executor so that the driver chooses which worker
    runs which job: a worker keeps the task whose simulator it has built (building a LIBERO
    scene costs several seconds), and workers start on different tasks.
    A worker that dies (BrokenProcessPool) fails only its in-flight job: the job is retried once
    in a fresh worker, then recorded as an error.
    Workers die with this process if it is killed (:mod:`world2act.utils.procs`).
    """
    from world2act.utils.procs import WorkerContext

    ctxs: dict[cf.ProcessPoolExecutor, WorkerContext] = {}

    def new_executor() -> cf.ProcessPoolExecutor:
        ctx = WorkerContext()  # one per executor: terminating a worker touches no other
        ex = cf.ProcessPoolExecutor(max_workers=1, mp_context=ctx, initializer=_init_worker, initargs=(spec,))
        ctxs[ex] = ctx
        return ex

    pending = list(jobs)
    retried: set[str] = set()
    execs = [new_executor() for _ in range(workers)]
    last_task: list[Any] = [None] * workers
    inflight: dict[cf.Future, tuple[int, EpisodeJob]] = {}
    try:
        while pending or inflight:
            busy = {w for w, _ in inflight.values()}
            for w in range(workers):
                if w not in busy and pending:
                    job = _next_job(pending, last_task[w], [j.task for _, j in inflight.values()])
                    last_task[w] = job.task
                    inflight[execs[w].submit(_job_in_worker, job)] = (w, job)
            done, _ = cf.wait(inflight, return_when=cf.FIRST_COMPLETED)
            for fut in done:
                w, job = inflight.pop(fut)
                try:
                    rec = fut.result()
                except cf.process.BrokenProcessPool:
                    execs[w].shutdown(wait=False, cancel_futures=True)
                    ctxs.pop(execs[w]).terminate()
                    execs[w] = new_executor()
                    last_task[w] = None
                    if job.key in retried:
                        rec = _error_record(job, "WorkerDied: the worker process running this episode exited "
                                                 "(crash or out of memory) twice")
                    else:
                        log.warning("worker %d died during %s; retrying it in a fresh worker", w, job.key)
                        retried.add(job.key)
                        pending.insert(0, job)
                        continue
                on_done(rec)
    except BaseException:
        for ex in execs:
            ex.shutdown(wait=False, cancel_futures=True)
        for ex in execs:
            ctxs[ex].terminate()
        raise
    for ex in execs:
        ex.shutdown(wait=True)


def _check_policy(policy_spec: Any, benchmark: str, tasks: list, device: str):
    """Load the policy in the parent (cheap for small policies) to fail fast on bad input."""
    from world2act.policies.io import load_policy

    if isinstance(policy_spec, (str, os.PathLike)):
        policy = load_policy(policy_spec, benchmark=benchmark, device=device)
    else:
        policy = policy_spec()
        policy.check_compatible(benchmark)
    if getattr(policy, "name", "") == "expert":
        from world2act.experts import supported_tasks

        try:
            ok = list(supported_tasks(benchmark))
        except Exception:  # noqa: BLE001 - expert registry unavailable: the episodes will tell
            ok = None
        if ok is not None:
            bad = [t for t in tasks if t not in ok]
            if bad:
                raise World2ActError(f"--policy expert: no scripted expert for {benchmark} task(s) {bad}; supported: {ok}")
    return policy


def _sigterm_as_interrupt() -> Callable[[], None]:
    """Treat SIGTERM (job schedulers, ``kill``) like Ctrl-C while episodes run, so the summary
    of the finished episodes is written; returns a function restoring the previous handler."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        return lambda: None

    def handler(signum, frame):  # noqa: ARG001
        raise KeyboardInterrupt(f"signal {signum}")

    prev = signal.signal(signal.SIGTERM, handler)
    return lambda: signal.signal(signal.SIGTERM, prev)


def evaluate(policy_spec: Any, benchmark: str, tasks: Any, trials: int, seeds: list[int] | str, out_dir: str | Path, *,
             workers: int = 2, video_episodes: int = 2, image_size: tuple[int, int] | int | None = None,
             device: str = "cpu", resume: bool = False, overwrite: bool = False, latency: bool = True,
             init_offset_per_seed: int = 0, env_factory: Callable | None = None, progress: bool = True,
             init_states: str = "eval") -> dict:
    """Evaluate a policy under the standard protocol and write the report.

    Phases: :func:`_check_eval_args` (benchmark, tasks, seeds), the policy check and
    :func:`episode_jobs`, :func:`_open_eval_out` (``eval_config.json``, ``--resume`` check),
    :func:`_finished_episodes`, :func:`_run_episodes` (workers; records stream to
    ``episodes.jsonl``) and :func:`_write_eval` (``eval.json``, report, latency, manifest —
    also after an interrupt).

    Args:
        policy_spec: policy folder, ``"expert"``, or (tests) a picklable zero-arg factory.
        benchmark: one of ``world2act.envs.BENCHMARKS``.
        tasks: ``"all"``, ``"0,1"`` or a list of task ids / Meta-World names.
        trials: trials per task and seed (paper: 50). seeds: list or ``"0,1,2"`` (paper: 5 seeds).
        out_dir: receives ``eval.json``, ``eval.md``, ``success.png``, ``episodes.jsonl``,
            ``videos/``, ``manifest.json``.
        workers: worker processes (0 = run in this process).
        video_episodes: how many episodes to record (first seed, one per task in turn).
        image_size: render size for the policy's cameras (default: the policy's own).
        resume: keep finished episodes from ``episodes.jsonl`` and run only the rest.
        latency: also time the policy at batch 1 (Table S5 analogue), after the episodes.
        init_offset_per_seed: LIBERO init-state offset per seed position (default 0: official).
        init_states: ``eval`` (the protocol above) or ``validation`` (seeded resets from the
            post-training range, for choosing Stage-2 settings; :func:`episode_jobs`).
        env_factory: (tests) picklable ``(benchmark, task, camera_size, cameras) -> env``.

    Returns:
        the ``eval.json`` content (see docs/evaluation.md).

    Raises:
        World2ActError: bad benchmark/tasks/trials/seeds, a policy folder with missing or
            mismatched files, or a policy that does not fit the benchmark — all before any
            simulator starts.
        KeyboardInterrupt: after writing the summary of the finished episodes.
    """
    from world2act.envs.registry import benchmark_spec

    started = time.time()
    task_ids, seeds, image_size = _check_eval_args(benchmark, tasks, seeds, workers, image_size)
    policy = _check_policy(policy_spec, benchmark, task_ids, device)
    jobs = episode_jobs(benchmark, task_ids, int(trials), seeds, video_episodes=video_episodes,
                        init_offset_per_seed=init_offset_per_seed, init_states=init_states)
    bspec = benchmark_spec(benchmark)
    if bspec.has_official_init_states and trials > bspec.num_init_states and init_states == "eval":
        log.warning("--trials %d > %d official init states: init states repeat (trial i uses state i %% %d)",
                    trials, bspec.num_init_states, bspec.num_init_states)
    config = {"policy": str(policy_spec) if isinstance(policy_spec, (str, os.PathLike)) else repr(policy_spec),
              "benchmark": benchmark, "tasks": task_ids, "trials": int(trials), "seeds": seeds,
              "image_size": list(image_size or policy.image_size), "init_offset_per_seed": init_offset_per_seed,
              "video_episodes": video_episodes}
    if init_states != "eval":  # recorded only when used, so earlier runs' --resume hashes still match
        config["init_states"] = init_states
    out = _open_eval_out(Path(out_dir), config, resume, overwrite)
    records = _finished_episodes(out, resume)
    todo = [j for j in jobs if j.key not in records]
    if records:
        log.info("resume: %d finished episodes kept, %d to run", len(jobs) - len(todo), len(todo))
    spec = WorkerSpec(policy=policy_spec, benchmark=benchmark, image_size=tuple(image_size) if image_size else None,
                      device=device, env_factory=env_factory, video_dir=str(out / "videos"), threads=1)
    t_run = time.time()
    complete = False
    try:
        _run_episodes(spec, todo, len(jobs), workers, records, out / EPISODES_FILE, progress)
        complete = True
    finally:
        result = _write_eval(out, records, jobs, todo, policy, config, task_ids, seeds, int(trials), workers,
                             time.time() - t_run, complete, latency, started)
    return result


def _check_eval_args(benchmark: str, tasks, seeds, workers: int, image_size):
    """Validate the benchmark, tasks, seeds and workers; returns ``(task ids, seeds as ints,
    image size as (H, W) or None)``.

    Raises:
        World2ActError: an unknown benchmark or task, malformed or duplicate seeds, ``workers < 0``.
    """
    from world2act.envs import BENCHMARKS, resolve_tasks

    if benchmark not in BENCHMARKS:
        raise World2ActError(f"--benchmark {benchmark!r}: unknown; valid: {', '.join(BENCHMARKS)}")
    task_ids = resolve_tasks(benchmark, tasks)
    if isinstance(seeds, str):
        try:
            seeds = [int(s) for s in seeds.split(",") if s.strip()]
        except ValueError:
            raise World2ActError(f"--seeds {seeds!r}: expected comma-separated integers, e.g. 0,1,2") from None
    seeds = [int(s) for s in seeds]
    if len(set(seeds)) != len(seeds):
        raise World2ActError(f"--seeds {seeds}: duplicate seeds")
    if workers < 0:
        raise World2ActError(f"--workers must be >= 0, got {workers}")
    if isinstance(image_size, int):
        image_size = (image_size, image_size)
    return task_ids, seeds, image_size


def _open_eval_out(out: Path, config: dict, resume: bool, overwrite: bool) -> Path:
    """Prepare ``out`` and write ``eval_config.json``.

    Raises:
        World2ActError: ``--resume`` with settings that differ from the finished run's.
    """
    from world2act.utils.io import prepare_out_dir, write_json
    from world2act.utils.manifest import config_hash

    out = prepare_out_dir(out, resume=resume, overwrite=overwrite)
    cfg_path = out / "eval_config.json"
    if resume and cfg_path.is_file():
        old = json.loads(cfg_path.read_text())
        if config_hash(old) != config_hash(config):
            raise World2ActError(f"{out}: --resume with different settings than the finished run ({cfg_path}); "
                                 f"use a new --out or --overwrite")
    write_json(cfg_path, config)
    return out


def _finished_episodes(out: Path, resume: bool) -> dict[str, dict]:
    """Episode records kept from ``episodes.jsonl`` on ``--resume`` (key ``task|seed|trial``;
    a line cut by a crash is skipped)."""
    records: dict[str, dict] = {}
    ep_path = out / EPISODES_FILE
    if resume and ep_path.is_file():
        for line in ep_path.read_text().splitlines():
            try:
                r = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut by a crash
            records[f"{r['task']}|{r['seed']}|{r['trial']}"] = r
    return records


def _run_episodes(spec: WorkerSpec, todo: list, n_jobs: int, workers: int, records: dict, ep_path: Path,
                  progress: bool) -> None:
    """Run the ``todo`` episodes (in process or on ``workers`` processes); each finished record
    goes into ``records`` and is appended to ``ep_path`` at once. SIGTERM acts as Ctrl-C."""
    from world2act.utils.progress import progress_bar

    bar = progress_bar(total=n_jobs, initial=n_jobs - len(todo), desc=f"eval {spec.benchmark}", unit="ep",
                       disable=not progress)
    n_ok = [sum(1 for r in records.values() if r.get("success"))]

    def on_done(rec: dict) -> None:
        key = f"{rec['task']}|{rec['seed']}|{rec['trial']}"
        records[key] = rec
        with open(ep_path, "a") as f:
            f.write(json.dumps(rec, default=str) + "\n")
            f.flush()
        n_ok[0] += bool(rec.get("success"))
        bar.update(1)
        bar.set_postfix(success=f"{n_ok[0]}/{len(records)}", errors=sum(1 for r in records.values() if r.get("error")))
        if rec.get("error"):
            log.warning("episode %s failed: %s", key, rec["error"])

    restore = _sigterm_as_interrupt()
    try:
        if todo:
            if workers == 0:
                _run_in_process(spec, todo, on_done)
            else:
                _run_pool(spec, todo, min(workers, len(todo)), on_done)
    finally:
        restore()
        bar.close()


def _write_eval(out: Path, records: dict, jobs: list, todo: list, policy, config: dict, task_ids: list,
                seeds: list[int], trials: int, workers: int, run_wall: float, complete: bool, latency: bool,
                started: float) -> dict:
    """Build and write ``eval.json``, the report and the manifest from the finished records
    (with the batch-1 latency when the run completed); returns the result."""
    from world2act.envs import list_tasks, step_budget
    from world2act.evaluation.report import write_report
    from world2act.utils.io import write_json
    from world2act.utils.manifest import write_manifest

    benchmark = config["benchmark"]
    task_meta = {t.task_id: t for t in list_tasks(benchmark)}
    ordered = [records[j.key] for j in jobs if j.key in records]
    result = build_result(ordered, benchmark=benchmark, tasks=task_ids, seeds=seeds, trials=trials,
                          task_meta=task_meta, config=config, policy_info=policy.describe(),
                          step_budget=step_budget(benchmark), workers=workers, run_wall_s=run_wall,
                          episodes_run=len(todo), complete=complete and len(ordered) == len(jobs))
    if complete and latency and getattr(policy, "name", "") != "expert":
        from world2act.evaluation.latency import measure_latency, synthetic_observation

        try:
            instr = task_meta[task_ids[0]].instruction
            result["latency"] = measure_latency(policy, synthetic_observation(policy, instr), n=30)
        except Exception as e:  # noqa: BLE001 - latency is informational
            result["latency"] = {"error": f"{type(e).__name__}: {e}"}
    write_json(out / "eval.json", result)
    write_report(out, result)
    write_manifest(out, stage="eval", config=config, inputs={"policy": config["policy"]},
                   metrics={"success_rate": result["overall"]["success_rate"],
                            "n_errors": result["overall"]["n_errors"]}, complete=result["complete"], started=started)
    return result


def build_result(records: list[dict], *, benchmark: str, tasks: list, seeds: list[int], trials: int, task_meta: dict,
                 config: dict, policy_info: dict, step_budget: int, workers: int, run_wall_s: float,
                 episodes_run: int, complete: bool) -> dict:
    """Assemble the ``eval.json`` content from episode records (see docs/evaluation.md)."""
    from world2act.envs.registry import benchmark_spec
    from world2act.evaluation.stats import summarize_group, summarize_overall

    bspec = benchmark_spec(benchmark)

    per_task = {}
    for t in tasks:
        info = task_meta.get(t)
        s = summarize_group([r for r in records if r["task"] == t], seeds)
        s.update({"task_id": t, "name": getattr(info, "name", str(t)), "instruction": getattr(info, "instruction", "")})
        per_task[str(t)] = s
    overall = summarize_overall(per_task, seeds)
    sim_eps = [r for r in records if r.get("wall_s")]
    total_ep_s = sum(r["wall_s"] for r in sim_eps)
    return {
        "benchmark": benchmark,
        "policy": config["policy"],
        "policy_info": policy_info,
        "complete": complete,
        "protocol": {
            "trials": trials, "seeds": seeds, "tasks": tasks, "step_budget": step_budget,
            "init_states": ("VALIDATION split: seeded resets validation_reset_seed(task_index, s, i) from the "
                            "post-training seed range (for choosing settings; not an evaluation result)")
            if config.get("init_states") == "validation" else
            ("LIBERO official init states: trial i of seed s uses init state "
                            f"(i + {config['init_offset_per_seed']}*position(s)) % {bspec.num_init_states}")
            if bspec.has_official_init_states else
            f"Meta-World seeded resets: run_seed_for('eval', task_index, s, i, block={MW_SEED_STRIDE}) (evaluation "
            f"seed range; equals seed_for('eval', task_index, {MW_SEED_STRIDE}*s + i) for s < 200)",
            "counting": "errors count as trials and as failures; success_rate_excl_errors excludes them",
            "image_size": config["image_size"],
        },
        "per_task": per_task,
        "overall": overall,
        "timing": {
            "workers": workers, "wall_s": round(run_wall_s, 2), "episodes_run": episodes_run,
            "episodes_per_min": round(60 * episodes_run / run_wall_s, 2) if run_wall_s > 0 and episodes_run else None,
            "mean_episode_s": round(total_ep_s / len(sim_eps), 3) if sim_eps else None,
            "mean_policy_s_per_episode": round(sum(r.get("policy_s", 0) for r in sim_eps) / len(sim_eps), 3) if sim_eps else None,
            "mean_obs_s_per_episode": round(sum(r.get("obs_s", 0) for r in sim_eps) / len(sim_eps), 3) if sim_eps else None,
        },
        "videos": [r["video"] for r in records if r.get("video")],
        "episodes": [{k: v for k, v in r.items() if k != "traceback"} for r in records],
        "errors": [{"task": r["task"], "seed": r["seed"], "trial": r["trial"], "error": r["error"],
                    "traceback": r.get("traceback")} for r in records if r.get("error")],
    }
