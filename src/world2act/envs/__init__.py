"""Environment registry: one entry point over LIBERO and Meta-World.

Everything here validates its input *before* a simulator starts, so a typo in ``--tasks`` or
``--cameras`` fails in milliseconds with a one-line :class:`world2act.World2ActError` that lists
the valid choices.

Seeds (one place for the whole project): random resets used for demonstrations, Stage-2
post-training and evaluation are drawn from disjoint ranges, see :data:`SEED_RANGES`,
:func:`seed_for` and :func:`run_seed_for` (any user ``--seed`` maps into its range). LIBERO's
50 official init states are reserved for evaluation; demonstrations and post-training use seeded
random resets only.
"""
from __future__ import annotations

import os

# Offscreen MuJoCo rendering must be chosen before mujoco is first imported (also in workers).
os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.setdefault("PYOPENGL_PLATFORM", "egl")

from world2act import World2ActError  # noqa: E402
from world2act.envs.base import ManipulationEnv, TaskInfo  # noqa: E402
from world2act.envs.registry import BENCHMARK_NAMES, BenchmarkSpec, benchmark_spec  # noqa: E402

BENCHMARKS: tuple[str, ...] = BENCHMARK_NAMES
"""Benchmark names accepted by every command (``--benchmark``); facts per benchmark in
:func:`world2act.envs.registry.benchmark_spec`."""

LIBERO_CAMERAS: tuple[str, ...] = benchmark_spec("libero_object").camera_names
METAWORLD_CAMERAS: tuple[str, ...] = benchmark_spec("metaworld").camera_names
"""Meta-World cameras that :meth:`MetaWorldEnv.render` accepts (first two are the defaults)."""

SEED_RANGES: dict[str, range] = {
    "demos": range(0, 100_000_000),
    "posttrain": range(100_000_000, 200_000_000),
    "eval": range(200_000_000, 300_000_000),
}
"""Disjoint reset-seed ranges: ``demos`` (``world2act collect``), ``posttrain`` (Stage 2 initial
states) and ``eval`` (Meta-World evaluation; LIBERO evaluation uses the official init states).
Use :func:`seed_for` rather than raw numbers."""

_SEEDS_PER_TASK = 100_000
MAX_TASKS = 100
"""Task indices a benchmark may use (the largest, ``libero_90``, has 90 tasks). Each purpose's
range is cut into ``len(range) // 100_000 = 1000`` *slots* of 100 000 seeds; slot ``k`` belongs
to task ``k % MAX_TASKS``, so every task owns 10 slots and tasks never share a seed."""


def seed_for(purpose: str, task_index: int, i: int) -> int:
    """The ``i``-th reset seed for the ``task_index``-th task of a run, for ``purpose``.

    ``seed = SEED_RANGES[purpose].start + 100_000 * task_index + i`` (the task's first slot):
    tasks never share seeds and the purposes never overlap. For seeds that depend on a user's
    ``--seed`` use :func:`run_seed_for`.

    Raises:
        World2ActError: unknown purpose, or ``i`` / ``task_index`` out of range.
    """
    if not 0 <= int(task_index) < MAX_TASKS:
        raise World2ActError(f"task index {task_index} out of range [0, {MAX_TASKS}) for the {purpose} seeds")
    return _slot_seed(purpose, int(task_index), i)


def _slot_seed(purpose: str, slot: int, i: int) -> int:
    if purpose not in SEED_RANGES:
        raise World2ActError(f"unknown seed purpose {purpose!r}; valid: {', '.join(SEED_RANGES)}")
    if not 0 <= i < _SEEDS_PER_TASK:
        raise World2ActError(f"seed index {i} out of range [0, {_SEEDS_PER_TASK}) for {purpose}")
    s = SEED_RANGES[purpose].start + _SEEDS_PER_TASK * int(slot) + int(i)
    if s not in SEED_RANGES[purpose]:
        raise World2ActError(f"task index {slot} too large for the {purpose} seed range")
    return s


def runs_per_task(purpose: str, block: int) -> int:
    """How many runs of ``block`` reset seeds each fit, disjointly, into one task's share of
    ``SEED_RANGES[purpose]`` (demos with 10 000 attempts per run: 100; Meta-World evaluation
    with 500 trials per seed: 2000). See :func:`run_seed_for`."""
    if purpose not in SEED_RANGES:
        raise World2ActError(f"unknown seed purpose {purpose!r}; valid: {', '.join(SEED_RANGES)}")
    if not 0 < int(block) <= _SEEDS_PER_TASK or _SEEDS_PER_TASK % int(block):
        raise World2ActError(f"seed block {block} must divide {_SEEDS_PER_TASK}")
    slots = len(SEED_RANGES[purpose]) // _SEEDS_PER_TASK // MAX_TASKS
    return (_SEEDS_PER_TASK // int(block)) * slots


def run_seed_for(purpose: str, task_index: int, run_seed: int, i: int, *, block: int) -> int:
    """The ``i``-th reset seed of task ``task_index`` in a run started with ``--seed run_seed``.

    Any non-negative ``run_seed`` is accepted. A run owns one *block* of ``block`` consecutive
    seeds (``0 <= i < block``). With ``R = runs_per_task(purpose, block)``, ``P = 100_000 //
    block`` blocks per slot and ``r = run_seed % R``, the block lies in the task's slot
    ``task_index + MAX_TASKS * (r // P)`` at offset ``block * (r % P)``::

        seed = start + 100_000 * (task_index + 100 * (r // P)) + block * (r % P) + i

    Guarantees, by construction:

    * every seed lies in ``SEED_RANGES[purpose]`` (so demos, post-training and evaluation never
      share a seed) and two tasks never share a seed;
    * two runs of the same task share no seed unless ``run_seed ≡ run_seed' (mod R)``: any ``R``
      consecutive values (e.g. ``0..R-1``) are pairwise disjoint;
    * ``run_seed < P`` gives ``seed_for(purpose, task_index, block * run_seed + i)``, the rule
      used before large seeds were accepted, so existing datasets and results reproduce.

    Raises:
        World2ActError: negative ``run_seed``, ``i`` outside ``[0, block)``, a bad purpose,
            block or task index.
    """
    R = runs_per_task(purpose, block)
    if int(run_seed) < 0:
        raise World2ActError(f"seed {run_seed}: must be a non-negative integer")
    if not 0 <= int(i) < int(block):
        raise World2ActError(f"seed index {i} out of range [0, {block}) for one {purpose} run")
    if not 0 <= int(task_index) < MAX_TASKS:
        raise World2ActError(f"task index {task_index} out of range [0, {MAX_TASKS}) for the {purpose} seeds")
    P = _SEEDS_PER_TASK // int(block)
    r = int(run_seed) % R
    return _slot_seed(purpose, int(task_index) + MAX_TASKS * (r // P), int(block) * (r % P) + int(i))


def _check_benchmark(benchmark: str) -> BenchmarkSpec:
    return benchmark_spec(benchmark)


def available_cameras(benchmark: str) -> tuple[str, ...]:
    """All camera names ``benchmark`` can render.

    Raises:
        World2ActError: unknown benchmark.
    """
    return _check_benchmark(benchmark).camera_names


def default_cameras(benchmark: str) -> tuple[str, ...]:
    """The two default cameras: third-person view first, wrist / gripper view second.

    LIBERO: ``("agentview", "wrist")``; Meta-World: ``("corner2", "gripperPOV")``.
    """
    return _check_benchmark(benchmark).default_cameras


def check_cameras(benchmark: str, cameras) -> tuple[str, ...]:
    """Validate camera names (a list or a comma-separated string); None → defaults.

    Raises:
        World2ActError: an unknown camera (lists valid ones) or an empty list.
    """
    valid = available_cameras(benchmark)
    if cameras is None:
        return default_cameras(benchmark)
    if isinstance(cameras, str):
        cameras = [c.strip() for c in cameras.split(",") if c.strip()]
    cameras = tuple(cameras)
    if not cameras:
        raise World2ActError(f"--cameras: no camera given; valid for {benchmark}: {', '.join(valid)}")
    bad = [c for c in cameras if c not in valid]
    if bad:
        raise World2ActError(f"--cameras: unknown camera {bad[0]!r} for {benchmark}; valid: {', '.join(valid)}")
    return cameras


def list_tasks(benchmark: str) -> list[TaskInfo]:
    """Every task of ``benchmark`` (no simulator is started).

    LIBERO: task ids ``0..n-1`` of the suite with their BDDL language; Meta-World: the 50 v3 env
    names (sorted) with instructions from :mod:`world2act.envs.metaworld_instructions`.

    Raises:
        World2ActError: unknown benchmark.
    """
    if _check_benchmark(benchmark).is_metaworld:
        from world2act.envs.metaworld_instructions import INSTRUCTIONS

        return [TaskInfo("metaworld", name, name, INSTRUCTIONS[name]) for name in sorted(INSTRUCTIONS)]
    from world2act.envs.libero import libero_tasks

    out = []
    for t in libero_tasks(benchmark):
        if isinstance(t, TaskInfo):
            out.append(t)
        elif isinstance(t, dict):
            out.append(TaskInfo(benchmark, t["task_id"], t["name"], t["instruction"]))
        else:  # (task_id, name, instruction)
            out.append(TaskInfo(benchmark, *t))
    return out


def resolve_tasks(benchmark: str, spec) -> list:
    """Parse a task selection into task ids.

    Args:
        benchmark: one of :data:`BENCHMARKS`.
        spec: ``"all"``; a comma-separated string (``"0,1"`` for LIBERO ids, ``"pick-place-v3,
            door-open-v3"`` for Meta-World); or a list of ids / names.

    Returns:
        LIBERO: list of int task ids; Meta-World: list of env names. Order kept, duplicates removed.

    Raises:
        World2ActError: unknown benchmark, empty selection, or an unknown task (lists valid ones).
    """
    tasks = list_tasks(benchmark)
    ids = [t.task_id for t in tasks]
    if isinstance(spec, str):
        if spec.strip() == "all":
            return ids
        items = [s.strip() for s in spec.split(",") if s.strip()]
    else:
        items = list(spec)
    if not items:
        raise World2ActError(f"--tasks: no task given for {benchmark}")
    out = []
    mw = benchmark_spec(benchmark).is_metaworld
    for item in items:
        if mw:
            key = str(item)
            if key not in ids and f"{key}-v3" in ids:
                key = f"{key}-v3"
            if key not in ids:
                raise World2ActError(f"--tasks: unknown Meta-World task {item!r}; valid: {', '.join(ids)}")
        else:
            try:
                key = int(item)
            except (TypeError, ValueError):
                key = None
            if key not in ids:
                raise World2ActError(f"--tasks: unknown {benchmark} task {item!r}; valid ids: 0..{len(ids) - 1} or 'all'")
        if key not in out:
            out.append(key)
    return out


def task_info(benchmark: str, task_id) -> TaskInfo:
    """The :class:`TaskInfo` of one task (validated as in :func:`resolve_tasks`)."""
    tid = resolve_tasks(benchmark, [task_id])[0]
    return next(t for t in list_tasks(benchmark) if t.task_id == tid)


def step_budget(benchmark: str, task_id=None) -> int:
    """Control steps allowed per episode: LIBERO suite budget (spatial 220, object 280, goal 300,
    libero_10 520, libero_90 400), Meta-World 500 (``benchmark_spec(benchmark).step_budget``)."""
    return _check_benchmark(benchmark).step_budget


def make_env(benchmark: str, task_id, *, camera_size: tuple[int, int] = (64, 64), cameras=None) -> ManipulationEnv:
    """Build one environment (starts the simulator).

    Args:
        benchmark: one of :data:`BENCHMARKS`.
        task_id: LIBERO task id (int or digit string) or Meta-World env name.
        camera_size: default render size ``(H, W)``.
        cameras: cameras to render by default (None → :func:`default_cameras`).

    Raises:
        World2ActError: unknown benchmark, task or camera — before the simulator starts.
    """
    cams = check_cameras(benchmark, cameras)
    tid = resolve_tasks(benchmark, [task_id])[0]
    size = tuple(int(x) for x in camera_size)
    if len(size) != 2 or min(size) <= 0:
        raise World2ActError(f"camera size must be (H, W) > 0, got {camera_size}")
    if benchmark_spec(benchmark).is_metaworld:
        from world2act.envs.metaworld import MetaWorldEnv

        return MetaWorldEnv(tid, camera_size=size, cameras=cams)
    from world2act.envs.libero import LiberoEnv

    return LiberoEnv(benchmark, tid, camera_size=size, cameras=cams)


__all__ = [
    "BENCHMARKS", "SEED_RANGES", "BenchmarkSpec", "ManipulationEnv", "TaskInfo", "available_cameras", "benchmark_spec",
    "check_cameras",
    "default_cameras", "list_tasks", "make_env", "resolve_tasks", "run_seed_for", "runs_per_task", "seed_for",
    "step_budget", "task_info",
]
