"""Scripted Meta-World expert: the benchmark's own hand-written policies.

Wraps ``metaworld.policies.ENV_POLICY_MAP[task]().get_action(obs)``; they read the privileged
39-D observation (object and goal positions). Measured success on MT10 from demo seeds: see
``docs/envs.md``.
"""
from __future__ import annotations

import warnings

import numpy as np

from world2act import World2ActError


def supported_metaworld_tasks() -> list[str]:
    """Meta-World v3 env names that have a scripted expert (all 50)."""
    from metaworld.policies import ENV_POLICY_MAP

    return sorted(ENV_POLICY_MAP)


class MetaWorldExpert:
    """Meta-World's scripted policy for ``env.task_name``.

    Args:
        env: a :class:`world2act.envs.metaworld.MetaWorldEnv`.
        seed: unused (the policies are deterministic); kept for a uniform expert signature.

    Raises:
        World2ActError: no policy exists for the task.
    """

    def __init__(self, env, seed: int = 0) -> None:
        from metaworld.policies import ENV_POLICY_MAP

        if env.task_name not in ENV_POLICY_MAP:
            raise World2ActError(f"no Meta-World expert for {env.task_name!r}; supported: {', '.join(sorted(ENV_POLICY_MAP))}")
        self.env = env
        self.seed = seed
        self._policy = ENV_POLICY_MAP[env.task_name]()

    def reset(self) -> None:
        """Start a new episode (the policies are stateless)."""

    def act(self) -> np.ndarray:
        """The next action ``[4]`` float32 in [-1, 1] from the current privileged observation."""
        obs = self.env.privileged()["obs"]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            a = self._policy.get_action(obs)
        return np.clip(np.asarray(a, dtype=np.float32), -1.0, 1.0)
