"""The scripted privileged-state expert behind the policy contract.

The expert reads simulator state (object poses, target sites), so it needs the live
environment: the harness calls :meth:`ExpertPolicy.bind_env` before each episode. It acts
closed loop (``chunk_size = 1``) and reads no cameras, so the harness renders nothing for it —
which makes it the cheap reference for validating the harness against the known collection
success rates (DESIGN.md: ≈94% on LIBERO-Object).
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch

from world2act import World2ActError
from world2act.policies.base import Policy, benchmark_info


class ExpertPolicy(Policy):
    """``world2act.experts`` demonstrator as a :class:`Policy` (batch size 1).

    Args:
        benchmark: benchmark name (sets ``action_dim`` / ``state_dim``).
    """

    needs_env = True

    def __init__(self, benchmark: str):
        super().__init__()
        info = benchmark_info(benchmark)
        self.benchmark = benchmark
        self.action_dim = int(info["action_dim"])
        self.state_dim = None
        self.chunk_size = 1
        self.cameras = ()
        self.name = "expert"
        self._env: Any = None
        self._expert: Any = None
        self._seed = 0

    def bind_env(self, env: Any) -> None:
        """Build a fresh scripted expert for ``env`` seeded with the episode seed (call after
        ``env.reset`` and :meth:`seed`), so an episode never depends on the previous one."""
        from world2act.experts import make_expert

        self._expert = make_expert(env, seed=self._seed)
        self._env = env
        self._expert.reset()

    def reset(self) -> None:
        super().reset()
        self._expert = None

    def seed(self, seed: int) -> None:
        super().seed(seed)
        self._seed = int(seed) % (2**32)

    def predict_action_chunk(self, obs: dict) -> torch.Tensor:
        """``[1, 1, A]``: the expert's next action (privileged state from the bound env).

        Raises:
            World2ActError: no environment bound, or a batch larger than 1.
        """
        if self._expert is None:
            raise World2ActError("expert policy: no environment bound (call bind_env(env) after env.reset)")
        tasks = obs.get("task", [None]) if isinstance(obs, dict) else [None]
        if len(tasks) != 1:
            raise World2ActError(f"expert policy acts on one environment at a time, got a batch of {len(tasks)}")
        a = np.asarray(self._expert.act(), dtype=np.float32).reshape(1, 1, -1)
        if a.shape[-1] != self.action_dim:
            raise World2ActError(f"expert returned action of size {a.shape[-1]}, expected {self.action_dim}")
        return torch.from_numpy(a)
