"""Parallel simulation on CPU cores: a job pool and a lockstep vector of environments.

Both use the ``spawn`` start method: fork after MuJoCo / EGL has been initialised in the
parent is fragile. Workers ignore SIGINT; the parent terminates them on Ctrl-C, and they die
with the parent when it is killed (:mod:`world2act.utils.procs`).

- :func:`run_jobs` maps a picklable function over self-contained, seeded jobs (one rollout
  each), in worker processes, with a progress bar. Results come back in job order and do not
  depend on the number of workers; an exception in a job becomes a :class:`JobError` record
  in its slot and the run goes on.
- :class:`VectorEnv` keeps ``N`` environments alive in worker processes for on-policy
  rollouts driven by a batched policy (evaluation, Stage-2 post-training): each
  :meth:`VectorEnv.step_chunk` executes an action chunk open loop in every env and renders
  only at the chunk boundary.
"""
from __future__ import annotations

import concurrent.futures as cf
import dataclasses
import logging
import os
import signal
import traceback
from typing import Any, Callable

import numpy as np

log = logging.getLogger(__name__)


def _ctx():
    """A fresh spawn context whose workers die with this process (one per pool)."""
    from world2act.utils.procs import WorkerContext

    return WorkerContext()


def _ignore_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    os.environ.setdefault("MUJOCO_GL", "egl")
    os.environ.setdefault("PYOPENGL_PLATFORM", "egl")


@dataclasses.dataclass
class JobError:
    """The record left in a job's result slot when the job raised.

    Attributes: index (position in the job list), job (the job itself), error (``"Type:
    message"``), traceback (formatted, from the worker).
    """

    index: int
    job: Any
    error: str
    traceback: str = ""

    def __bool__(self) -> bool:  # so ``if result:`` skips errors
        return False


def is_error(result: Any) -> bool:
    """True when ``result`` is a :class:`JobError`."""
    return isinstance(result, JobError)


def _call(fn: Callable, index: int, job: Any):
    try:
        return fn(job)
    except Exception as e:  # noqa: BLE001 - recorded, not dropped
        return JobError(index, job, f"{type(e).__name__}: {e}", traceback.format_exc())


def default_workers() -> int:
    """Worker processes to use by default: the CPU cores available to this process."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - non-Linux
        return max(1, os.cpu_count() or 1)


def run_jobs(fn: Callable[[Any], Any], jobs: list, workers: int, desc: str | None = None,
             on_result: Callable[[int, Any], None] | None = None) -> list:
    """Run ``fn(job)`` for every job; results in job order.

    Args:
        fn: a module-level (picklable) function of one job. Each job must be self-contained and
            seeded, so results are identical whatever ``workers`` is.
        jobs: picklable job descriptions.
        workers: worker processes (``spawn``); ``<= 0`` runs in this process (debugging).
            A worker is reused for several jobs, so ``fn`` may cache expensive state (an env).
        desc: progress-bar label (tqdm); None hides the bar.
        on_result: called as ``on_result(index, result)`` in job order as soon as every earlier
            job has finished (stream results to disk so a kill keeps finished work).

    Returns:
        ``[result_0, ..., result_{n-1}]``; a job that raised leaves a :class:`JobError` (never a
        silent drop). A worker that dies (e.g. a segfault) is replaced and its jobs retried
        once, then recorded as errors.

    Raises:
        KeyboardInterrupt: after terminating the workers (finished results were already
            passed to ``on_result``).
    """
    from world2act.utils.progress import progress_bar

    n = len(jobs)
    results: list = [None] * n
    done = [False] * n
    next_emit = 0
    bar = progress_bar(total=n, desc=desc, disable=desc is None, dynamic_ncols=True)

    def finish(i: int, r: Any) -> None:
        nonlocal next_emit
        results[i] = r
        done[i] = True
        bar.update(1)
        if is_error(r):
            log.warning("job %d failed: %s", i, r.error)
        while next_emit < n and done[next_emit]:
            if on_result is not None:
                on_result(next_emit, results[next_emit])
            next_emit += 1

    try:
        if workers <= 0 or n == 0:
            for i, job in enumerate(jobs):
                finish(i, _call(fn, i, job))
            return results
        tries = [0] * n
        pending = list(range(n))
        while pending:
            ctx = _ctx()
            ex = cf.ProcessPoolExecutor(max_workers=min(workers, len(pending)), mp_context=ctx,
                                        initializer=_ignore_sigint)
            try:
                futs = {ex.submit(_call, fn, i, jobs[i]): i for i in pending}
                retry = []
                for fut in cf.as_completed(futs):
                    i = futs[fut]
                    try:
                        finish(i, fut.result())
                    except cf.process.BrokenProcessPool as e:
                        tries[i] += 1
                        if tries[i] >= 2:
                            finish(i, JobError(i, jobs[i], f"worker process died: {e}"))
                        else:
                            retry.append(i)
                    except Exception as e:  # noqa: BLE001 - e.g. unpicklable result
                        finish(i, JobError(i, jobs[i], f"{type(e).__name__}: {e}", traceback.format_exc()))
                pending = sorted(retry)
                if pending:
                    log.warning("a worker process died; retrying %d job(s) in a fresh pool", len(pending))
            except BaseException:
                _terminate_pool(ex, ctx)
                raise
            else:
                ex.shutdown(wait=True)
        return results
    finally:
        bar.close()


def _terminate_pool(ex: cf.ProcessPoolExecutor, ctx) -> None:
    """Cancel what has not started and terminate the workers ``ctx`` started for ``ex``."""
    ex.shutdown(wait=False, cancel_futures=True)
    ctx.terminate(timeout=5)


# ============================================================================ VectorEnv
def run_chunk(env, actions, cameras, size, stop_on_success: bool) -> dict:
    """Execute one action chunk ``[K, A]`` open loop in ``env``, then observe once.

    Stops early on success when ``stop_on_success``; renders ``cameras`` only at the chunk
    boundary. Returns ``dict(steps, success, obs, error=None)``.
    """
    steps, success = 0, False
    for a in actions:
        env.step(a)
        steps += 1
        success = success or env.is_success()
        if stop_on_success and success:
            break
    return {"steps": steps, "success": bool(success), "obs": env.observe(cameras, size), "error": None}


def _build_env(spec: dict):
    """The env a VectorEnv spec describes (``benchmark``, ``task_id``, ``camera_size``, ``cameras``)."""
    from world2act.envs import make_env

    return make_env(spec["benchmark"], spec["task_id"], camera_size=spec["camera_size"], cameras=spec["cameras"])


def _vec_worker(conn, specs: list[dict]) -> None:
    """Worker loop hosting several envs; every reply is a list with one entry per hosted env."""
    _ignore_sigint()

    envs: list = [None] * len(specs)
    errors: list = [None] * len(specs)

    def build(k: int) -> None:
        try:
            envs[k] = _build_env(specs[k])
            errors[k] = None
        except Exception as e:  # noqa: BLE001
            envs[k] = None
            errors[k] = f"{type(e).__name__}: {e}"

    for k in range(len(specs)):
        build(k)

    def guard(k: int, f: Callable[[], dict]) -> dict:
        if envs[k] is None:
            return {"error": f"env could not be built: {errors[k]}"}
        try:
            return f()
        except Exception as e:  # noqa: BLE001 - reported per env
            return {"error": f"{type(e).__name__}: {e}"}

    try:
        while True:
            try:
                msg = conn.recv()
            except EOFError:
                break
            cmd = msg[0]
            if cmd == "close":
                break
            if cmd == "reset":
                kw = msg[1]
                reply = [guard(k, lambda k=k: (envs[k].reset(**kw[k]), {"error": None})[1]) for k in range(len(envs))]
            elif cmd == "observe":
                cams, size = msg[1], msg[2]
                reply = [guard(k, lambda k=k: {"obs": envs[k].observe(cams or envs[k].cameras, size), "error": None})
                         for k in range(len(envs))]
            elif cmd == "step_chunk":
                acts, cams, size, stop = msg[1], msg[2], msg[3], msg[4]

                def run(k):
                    env = envs[k]
                    return run_chunk(env, acts[k], cams or env.cameras, size, stop)

                reply = [guard(k, lambda k=k: run(k)) for k in range(len(envs))]
            elif cmd == "set_tasks":
                for k, task in enumerate(msg[1]):
                    if task != specs[k]["task_id"] or envs[k] is None:
                        if envs[k] is not None:
                            envs[k].close()
                        specs[k] = dict(specs[k], task_id=task)
                        build(k)
                reply = [guard(k, lambda: {"error": None}) for k in range(len(envs))]
            elif cmd == "call":
                name, args = msg[1], msg[2]
                reply = [guard(k, lambda k=k: {"value": getattr(envs[k], name)(*args), "error": None})
                         for k in range(len(envs))]
            else:
                reply = [{"error": f"unknown command {cmd!r}"} for _ in envs]
            conn.send(reply)
    finally:
        for e in envs:
            if e is not None:
                try:
                    e.close()
                except Exception:  # noqa: BLE001
                    pass
        conn.close()


class VectorEnv:
    """``N`` environments stepped in lockstep, hosted by worker processes.

    Args:
        benchmark: one of :data:`world2act.envs.BENCHMARKS`.
        task_ids: one task id per env (``N`` entries; repeat a task for several rollouts of it).
        workers: worker processes (default: ``min(N, CPU cores)``); a worker hosts
            ``ceil(N / workers)`` envs when ``N > workers``. ``0`` hosts every env in this
            process (no parallelism; for debugging and tests).
        camera_size: render size ``(H, W)`` of observations.
        cameras: cameras rendered by default (None → the benchmark's defaults).

    Errors inside a worker (a failed build, a simulator exception, a dead worker) are reported in
    the ``error`` field of that env's result; they are never raised from the batch call.

    Raises:
        World2ActError: unknown benchmark, task or camera (checked before any worker starts).
    """

    def __init__(self, benchmark: str, task_ids: list, workers: int | None = None,
                 camera_size: tuple[int, int] = (64, 64), cameras=None) -> None:
        from world2act.envs import check_cameras, resolve_tasks

        self.benchmark = benchmark
        self.cameras = check_cameras(benchmark, cameras)
        resolved = [resolve_tasks(benchmark, [t])[0] for t in task_ids]
        if not resolved:
            from world2act import World2ActError

            raise World2ActError("VectorEnv needs at least one task id")
        self.task_ids = resolved
        self.num_envs = N = len(resolved)
        self.camera_size = (int(camera_size[0]), int(camera_size[1]))
        workers = min(N, default_workers()) if workers is None else min(int(workers), N)
        self.workers = max(0, workers)
        specs = [dict(benchmark=benchmark, task_id=t, camera_size=self.camera_size, cameras=self.cameras) for t in resolved]
        self._local = None
        self._procs: list = []
        self._conns: list = []
        self._slots: list[list[int]] = []  # worker -> env indices
        self._dead: list[str | None] = []
        self._specs = specs
        if self.workers == 0:
            self._local = [_build_env(s) for s in specs]
            return
        ctx = _ctx()
        per = -(-N // self.workers)
        for w in range(self.workers):
            idx = list(range(w * per, min(N, (w + 1) * per)))
            if not idx:
                continue
            parent, child = ctx.Pipe()
            p = ctx.Process(target=_vec_worker, args=(child, [specs[i] for i in idx]), daemon=True)
            p.start()
            child.close()
            self._procs.append(p)
            self._conns.append(parent)
            self._slots.append(idx)
            self._dead.append(None)

    # ---------------------------------------------------------------- plumbing
    def _broadcast(self, make_msg: Callable[[list[int]], tuple]) -> list[dict]:
        out: list[dict] = [{} for _ in range(self.num_envs)]
        for w, conn in enumerate(self._conns):
            if self._dead[w] is None:
                try:
                    conn.send(make_msg(self._slots[w]))
                except (BrokenPipeError, OSError) as e:
                    self._dead[w] = f"worker process died ({e})"
        for w, conn in enumerate(self._conns):
            if self._dead[w] is None:
                try:
                    reply = conn.recv()
                    for i, r in zip(self._slots[w], reply):
                        out[i] = r
                    continue
                except (EOFError, OSError) as e:
                    code = self._procs[w].exitcode
                    self._dead[w] = f"worker process died (exit code {code}; {type(e).__name__})"
            for i in self._slots[w]:
                out[i] = {"error": self._dead[w]}
        return out

    def _local_call(self, f: Callable[[Any, int], dict]) -> list[dict]:
        out = []
        for i, env in enumerate(self._local):
            try:
                out.append(f(env, i))
            except Exception as e:  # noqa: BLE001
                out.append({"error": f"{type(e).__name__}: {e}"})
        return out

    # ---------------------------------------------------------------- API
    def reset(self, init: list[dict]) -> list[dict]:
        """Reset every env: ``init[i]`` is ``dict(seed=s)`` or ``dict(init_state_index=j)``.

        Returns: ``[dict(error=str|None)]`` per env.

        Raises:
            ValueError: ``len(init) != N``.
        """
        if len(init) != self.num_envs:
            raise ValueError(f"reset: got {len(init)} init dicts for {self.num_envs} envs")
        init = [dict(d) for d in init]
        if self._local is not None:
            return self._local_call(lambda env, i: (env.reset(**init[i]), {"error": None})[1])
        return self._broadcast(lambda idx: ("reset", [init[i] for i in idx]))

    def observe(self, cameras=None) -> list[dict]:
        """LeRobot-named observation of every env (see :meth:`ManipulationEnv.observe`):
        ``observation.state`` ``[S]``, ``observation.gripper_width``, ``observation.images.<cam>``
        uint8 ``[H, W, 3]``, ``task``. An env in error gives ``{"error": ...}`` instead."""
        cams = None if cameras is None else tuple(cameras)
        if self._local is not None:
            return [r.get("obs", r) for r in self._local_call(
                lambda env, i: {"obs": env.observe(cams or self.cameras, self.camera_size)})]
        res = self._broadcast(lambda idx: ("observe", cams or self.cameras, self.camera_size))
        return [r["obs"] if r.get("error") is None and "obs" in r else {"error": r.get("error")} for r in res]

    def step_chunk(self, actions: np.ndarray, cameras=None, stop_on_success: bool = True) -> list[dict]:
        """Execute each env's action chunk open loop, then observe.

        Args:
            actions: ``[N, K, A]`` environment actions (env ``i`` runs ``actions[i, 0..K-1]``).
            cameras: cameras to render at the chunk boundary (None → the VectorEnv's cameras).
            stop_on_success: stop an env's chunk at the first step where it succeeds.

        Returns:
            per env ``dict(steps=int, success=bool, obs=dict, error=str|None)``: steps executed,
            whether the task was solved during the chunk, the observation after it. On error
            ``obs`` is absent and ``error`` says why (that env should be dropped).

        Raises:
            ValueError: ``actions`` is not ``[N, K, A]``.
        """
        actions = np.asarray(actions, dtype=np.float32)
        if actions.ndim != 3 or actions.shape[0] != self.num_envs:
            raise ValueError(f"step_chunk: actions must be [N={self.num_envs}, K, A], got {actions.shape}")
        cams = tuple(cameras) if cameras is not None else self.cameras
        if self._local is not None:
            def run(env, i):
                return run_chunk(env, actions[i], cams, self.camera_size, stop_on_success)

            res = self._local_call(run)
        else:
            res = self._broadcast(lambda idx: ("step_chunk", [actions[i] for i in idx], cams, self.camera_size, stop_on_success))
        for r in res:
            r.setdefault("steps", 0)
            r.setdefault("success", False)
            r.setdefault("error", None)
        return res

    def set_tasks(self, task_ids: list) -> list[dict]:
        """Switch env ``i`` to task ``task_ids[i]`` inside the running workers.

        Only envs whose task changes are rebuilt, in the process that already hosts them, so
        a task switch costs one simulator build (≈ 2 s for LIBERO) instead of new worker
        processes (≈ 8 s with two workers: spawn, imports, build, close). Reset the envs
        afterwards.

        Returns: ``[dict(error=str|None)]`` per env (an env that could not be built).

        Raises:
            World2ActError: unknown task id.
            ValueError: ``len(task_ids) != N``.
        """
        from world2act.envs import resolve_tasks

        if len(task_ids) != self.num_envs:
            raise ValueError(f"set_tasks: got {len(task_ids)} task ids for {self.num_envs} envs")
        resolved = [resolve_tasks(self.benchmark, [t])[0] for t in task_ids]
        self._specs = [dict(s, task_id=t) for s, t in zip(self._specs, resolved)]
        if self._local is not None:
            def switch(env, i):
                if resolved[i] != self.task_ids[i]:
                    env.close()
                    self._local[i] = _build_env(self._specs[i])
                return {"error": None}

            res = self._local_call(switch)
        else:
            res = self._broadcast(lambda idx: ("set_tasks", [resolved[i] for i in idx]))
        self.task_ids = resolved
        return res

    def call(self, method: str, *args) -> list[dict]:
        """Call ``env.<method>(*args)`` in every env; ``[dict(value=..., error=str|None)]``."""
        if self._local is not None:
            return self._local_call(lambda env, i: {"value": getattr(env, method)(*args), "error": None})
        return self._broadcast(lambda idx: ("call", method, args))

    def close(self) -> None:
        """Stop the workers and release the simulators (idempotent)."""
        if self._local is not None:
            for env in self._local:
                env.close()
            self._local = []
            return
        for w, conn in enumerate(self._conns):
            try:
                if self._dead[w] is None:
                    conn.send(("close",))
            except (BrokenPipeError, OSError):
                pass
        for p in self._procs:
            p.join(timeout=10)
            if p.is_alive():
                p.terminate()
                p.join(timeout=5)
        for conn in self._conns:
            conn.close()
        self._procs, self._conns, self._slots, self._dead = [], [], [], []

    def __enter__(self) -> "VectorEnv":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # noqa: BLE001
            pass
