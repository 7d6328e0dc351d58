"""Policy inference speed apart from simulation (the analogue of the paper's Table S5).

The paper reports control rate in Hz per executed action (e.g. "above 250 Hz" for
GR00T-N1.6-ft + World2Act): a chunk of ``K`` actions costs one forward pass, so
``ms_per_action = ms_per_chunk / K`` and ``hz = 1000 / ms_per_action``.
"""
from __future__ import annotations

import os
import statistics
import time

import numpy as np
import torch


def synthetic_observation(policy, instruction: str = "pick up the object and place it in the basket",
                          batch: int = 1, seed: int = 0) -> dict:
    """A random batched observation with the shapes ``policy`` consumes: uint8 images
    ``[B, H, W, 3]`` per camera, ``observation.state`` ``[B, S]``, ``task``."""
    rng = np.random.default_rng(seed)
    H, W = policy.image_size
    obs: dict = {f"observation.images.{c}": rng.integers(0, 256, (batch, H, W, 3), dtype=np.uint8)
                 for c in policy.cameras}
    obs["observation.state"] = rng.standard_normal((batch, int(policy.state_dim or 1))).astype(np.float32)
    obs["task"] = [instruction] * batch
    return obs


def busy_cpu_seconds() -> float | None:
    """CPU seconds all processes on this machine have spent busy since boot (Linux ``/proc/stat``:
    every field but idle and iowait); None where that file does not exist."""
    try:
        with open("/proc/stat") as f:
            fields = [int(v) for v in f.readline().split()[1:9]]
    except (OSError, ValueError):
        return None
    return (sum(fields) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")


#: ``other_load_cores`` above this marks a timing as taken on a busy machine (reports flag it).
LOADED_CORES = 0.5


def load_clock() -> tuple[float | None, float, float]:
    """(machine busy CPU-s, this process's CPU-s, wall s) now; two of them give :func:`other_load`."""
    return busy_cpu_seconds(), time.process_time(), time.perf_counter()


def other_load(start: tuple[float | None, float, float], end: tuple[float | None, float, float]) -> float | None:
    """Cores kept busy by *other* processes between two :func:`load_clock` readings (None where
    the machine's busy time cannot be read)."""
    (busy0, cpu0, wall0), (busy1, cpu1, wall1) = start, end
    if busy0 is None or busy1 is None or wall1 <= wall0:
        return None
    return round(max(0.0, (busy1 - busy0) - (cpu1 - cpu0)) / (wall1 - wall0), 2)


def measure_latency(policy, obs: dict | None = None, n: int = 30, warmup: int = 3, threads: int | None = 1) -> dict:
    """Time ``policy.predict_action_chunk(obs)`` (batch 1 by default), no simulator involved.

    Args:
        policy: a :class:`world2act.policies.base.Policy`.
        obs: batched observation (default: :func:`synthetic_observation`).
        n: timed calls (median reported). warmup: untimed calls first (text-embedding cache,
            allocator). threads: torch intra-op threads during timing (restored after; None =
            leave as is).

    Returns:
        dict: ``ms_per_chunk`` (median), ``ms_per_chunk_p90``, ``ms_per_action`` (= chunk / K),
        ``hz`` (actions per second = 1000 / ms_per_action), ``chunk_hz``, ``chunk_size``,
        ``batch``, ``threads``, ``n``, and ``other_load_cores``: the mean number of CPU cores
        other processes kept busy while timing (None off Linux). Above :data:`LOADED_CORES` the
        figures are pessimistic; reports say so.
    """
    obs = obs if obs is not None else synthetic_observation(policy)
    prev = torch.get_num_threads()
    if threads:
        torch.set_num_threads(int(threads))
    try:
        policy.reset()
        policy.seed(0)
        for _ in range(max(0, warmup)):
            policy.predict_action_chunk(obs)
        times = []
        start = load_clock()
        for _ in range(max(1, n)):
            t = time.perf_counter()
            policy.predict_action_chunk(obs)
            times.append((time.perf_counter() - t) * 1000.0)
        other = other_load(start, load_clock())
    finally:
        torch.set_num_threads(prev)
    K = int(policy.chunk_size)
    ms = statistics.median(times)
    return {
        "ms_per_chunk": ms,
        "ms_per_chunk_p90": float(np.percentile(times, 90)),
        "ms_per_action": ms / K,
        "hz": 1000.0 * K / ms if ms > 0 else float("inf"),
        "chunk_hz": 1000.0 / ms if ms > 0 else float("inf"),
        "chunk_size": K,
        "batch": len(obs["task"]),
        "threads": int(threads or prev),
        "n": len(times),
        "other_load_cores": other,
    }


def load_note(lat: dict) -> str | None:
    """The warning a report prints under a latency table timed on a busy machine, else None."""
    other = (lat or {}).get("other_load_cores")
    if other is None or other <= LOADED_CORES:
        return None
    return (f"Timed while other processes kept {other:.1f} CPU core(s) busy: these figures are pessimistic; "
            "rerun on an idle machine for the real speed.")
