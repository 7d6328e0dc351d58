"""The policy contract every policy in world2act follows (base, residual, expert, external).

Observations are dicts in LeRobot naming, batched along the first axis:

* ``observation.images.<camera>``: uint8 ``[B, H, W, 3]`` (upright, RGB),
* ``observation.state``: float32 ``[B, S]`` proprioception,
* ``task``: ``list[str]`` of length ``B`` (the language instruction).

Actions come out in the environment's own units (LIBERO: 7-D OSC_POSE deltas in [-1, 1];
Meta-World: 4-D), as action chunks ``[B, K, A]`` executed open loop. Normalisation is not part
of any model: a fitted :class:`world2act.policies.normalizer.Normalizer` is saved next to the
weights and applied by the policy wrapper.

The paper (Sec. 4, Sec. 5.1) post-trains a frozen base VLA that emits action chunks (GR00T-N1.6,
Cosmos Policy); this module is the interface the harness, Stage 2 and the CLI program against.
"""
from __future__ import annotations

import abc
from collections import deque
from typing import Any

import numpy as np
import torch

from world2act import World2ActError
from world2act.envs.registry import LIBERO_SUITES as LIBERO_BENCHMARKS  # noqa: F401 - re-exported
from world2act.envs.registry import benchmark_spec


def benchmark_family(benchmark: str | None) -> str | None:
    """``"libero"`` for every LIBERO suite (they share robot, cameras and action space),
    ``"metaworld"`` for Meta-World, None for None."""
    if benchmark is None:
        return None
    try:
        return benchmark_spec(str(benchmark)).family
    except World2ActError:  # not a registered benchmark: keep the old prefix rule
        return "libero" if str(benchmark).startswith("libero") else str(benchmark)


def env_info(env_or_info: Any) -> dict:
    """Normalise what :meth:`Policy.check_compatible` accepts into a dict.

    Accepts a :class:`world2act.envs.base.ManipulationEnv` (or anything with the attributes
    ``benchmark``, ``action_dim``, ``state_dim``, ``cameras``), a dict with those keys, or a
    benchmark name (looked up in :data:`world2act.envs.BENCHMARKS` when available).

    Returns:
        dict with keys ``benchmark``, ``action_dim``, ``state_dim``, ``cameras`` (missing -> None).
    """
    keys = ("benchmark", "action_dim", "state_dim", "cameras")
    if isinstance(env_or_info, str):
        return benchmark_info(env_or_info)
    if isinstance(env_or_info, dict):
        return {k: env_or_info.get(k) for k in keys}
    return {k: getattr(env_or_info, k, None) for k in keys}


def benchmark_info(benchmark: str) -> dict:
    """``dict(benchmark, action_dim, state_dim, cameras)`` of a benchmark without building an env,
    from :func:`world2act.envs.registry.benchmark_spec` (LIBERO A=7, S=8, cameras
    agentview/wrist; Meta-World A=4, S=4, cameras corner2/gripperPOV).

    Raises:
        World2ActError: unknown benchmark name (the message lists the valid ones).
    """
    spec = benchmark_spec(benchmark)
    return {"benchmark": benchmark, "action_dim": spec.action_dim, "state_dim": spec.state_dim,
            "cameras": spec.default_cameras}


class Policy(abc.ABC):
    """Abstract policy: action chunks from batched LeRobot observations.

    Attributes (set by subclasses):
        action_dim: ``A``. state_dim: ``S`` (None if the policy ignores proprioception).
        chunk_size: ``K`` actions per chunk, executed open loop by :meth:`select_action` and the
            evaluation harness (the built-in base policy uses K = 8).
        cameras: camera names the policy reads (``()`` for a policy that needs no images, such
            as the privileged-state expert: the harness then renders nothing).
        image_size: ``(H, W)`` the policy expects its images at.
        benchmark: the benchmark the policy was trained for (None = any).
        needs_env: True for policies that read privileged simulator state (the expert); the
            harness then calls :meth:`bind_env` with the live environment before each episode.
    """

    action_dim: int
    state_dim: int | None = None
    chunk_size: int = 1
    cameras: tuple[str, ...] = ()
    image_size: tuple[int, int] = (64, 64)
    benchmark: str | None = None
    needs_env: bool = False
    name: str = "policy"

    def __init__(self) -> None:
        self._queue: deque[np.ndarray] = deque()
        self._generator: torch.Generator | None = None

    # ------------------------------------------------------------------ contract
    def reset(self) -> None:
        """Forget queued actions (call at the start of every episode)."""
        self._queue.clear()

    def seed(self, seed: int) -> None:
        """Seed the policy's own sampling noise (flow-matching noise); the harness calls this
        once per episode with a seed derived from (evaluation seed, task, trial)."""
        self._generator = torch.Generator().manual_seed(int(seed) % (2**63))

    @abc.abstractmethod
    def predict_action_chunk(self, obs: dict) -> torch.Tensor:
        """Action chunk ``[B, K, A]`` float32 (CPU) in environment units for batched ``obs``."""

    def select_action(self, obs: dict) -> torch.Tensor:
        """One action ``[B, A]``: serves the queued chunk and predicts a new one when empty.

        The whole batch shares one queue (all rows advance together), as in LeRobot.
        """
        if not self._queue:
            chunk = self.predict_action_chunk(obs)  # [B, K, A]
            self._queue.extend(chunk.transpose(0, 1).unbind(0))  # K x [B, A]
        return self._queue.popleft()

    def bind_env(self, env: Any) -> None:
        """Attach a live environment (only policies with ``needs_env``)."""

    # ------------------------------------------------------------------ checks
    def describe(self) -> dict:
        """The contract fields as a dict (for manifests and reports)."""
        return {"name": self.name, "benchmark": self.benchmark, "action_dim": self.action_dim,
                "state_dim": self.state_dim, "chunk_size": self.chunk_size, "cameras": list(self.cameras),
                "image_size": list(self.image_size)}

    def check_compatible(self, env_or_info: Any, *, where: str | None = None) -> None:
        """Check that this policy can drive ``env_or_info`` (env, info dict or benchmark name).

        Raises:
            World2ActError: action or state dimension, cameras, or benchmark family disagree; the
                message names both sides, e.g. ``policy runs/base action_dim 4 != benchmark
                libero_object action_dim 7``.
        """
        info = env_info(env_or_info)
        left = f"policy {where or self.name}"
        right = f"benchmark {info.get('benchmark')}"
        for key in ("action_dim", "state_dim"):
            mine, theirs = getattr(self, key, None), info.get(key)
            if mine is not None and theirs is not None and int(mine) != int(theirs):
                raise World2ActError(f"mismatched policy and benchmark: {left} {key} {mine} != {right} {key} {theirs}")
        if self.benchmark and info.get("benchmark"):
            if benchmark_family(self.benchmark) != benchmark_family(info["benchmark"]):
                raise World2ActError(f"mismatched policy and benchmark: {left} was trained for {self.benchmark}, "
                                     f"not {info['benchmark']}")
        avail = info.get("cameras")
        if avail is not None:
            missing = [c for c in self.cameras if c not in tuple(avail)]
            if missing:
                raise World2ActError(f"mismatched policy and benchmark: {left} reads cameras {list(self.cameras)}, "
                                     f"{right} offers {list(avail)} (missing {missing})")


def check_obs(obs: dict, *, cameras: tuple[str, ...], state_dim: int | None, where: str = "observation") -> int:
    """Validate a batched observation dict; return the batch size ``B``.

    Raises:
        World2ActError: a missing key, a wrong rank/dtype, or inconsistent batch sizes.
    """
    if "task" not in obs:
        raise World2ActError(f"{where}: missing 'task' (list of instruction strings)")
    tasks = obs["task"]
    if isinstance(tasks, str):
        raise World2ActError(f"{where}: 'task' must be a list of strings (batched), got a single string")
    B = len(tasks)
    for cam in cameras:
        key = f"observation.images.{cam}"
        if key not in obs:
            have = sorted(k for k in obs if k.startswith("observation.images."))
            raise World2ActError(f"{where}: missing {key}; has {have}")
        img = obs[key]
        if tuple(img.shape[:1]) != (B,) or img.ndim != 4 or img.shape[-1] != 3:
            raise World2ActError(f"{where}: {key} must be uint8 [B={B}, H, W, 3], got {tuple(img.shape)}")
    if state_dim is not None:
        if "observation.state" not in obs:
            raise World2ActError(f"{where}: missing observation.state")
        st = obs["observation.state"]
        if tuple(st.shape) != (B, state_dim):
            raise World2ActError(f"{where}: observation.state must be [B={B}, S={state_dim}], got {tuple(st.shape)}")
    return B


def batch_observations(obs_list: list[dict]) -> dict:
    """Stack unbatched observations (as :meth:`ManipulationEnv.observe` returns) into one batch:
    arrays gain a leading ``B`` axis, ``task`` becomes a list of strings."""
    out: dict = {}
    for k in obs_list[0]:
        vals = [o[k] for o in obs_list]
        out[k] = list(vals) if k == "task" else np.stack([np.asarray(v) for v in vals])
    return out
