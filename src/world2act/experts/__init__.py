"""Scripted demonstrators (privileged simulator state) for LIBERO and Meta-World.

``make_expert(env)`` picks the right one; every expert follows :class:`Expert`.
"""
from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np

from world2act import World2ActError
from world2act.envs.registry import SPECS


def is_metaworld(benchmark) -> bool:
    """Meta-World (per the benchmark registry); unknown names count as LIBERO, as before."""
    return benchmark in SPECS and SPECS[benchmark].is_metaworld


@runtime_checkable
class Expert(Protocol):
    """A scripted policy bound to one environment.

    ``reset()`` is called after ``env.reset(...)``; ``act()`` returns the next action ``[A]``
    float32 in [-1, 1] from the env's current privileged state.
    """

    def reset(self) -> None: ...

    def act(self) -> np.ndarray: ...


def supported_tasks(benchmark: str) -> list:
    """Task ids of ``benchmark`` that have a scripted expert."""
    if is_metaworld(benchmark):
        from world2act.experts.metaworld_expert import supported_metaworld_tasks

        return supported_metaworld_tasks()
    return _libero_supported(benchmark)


def _libero_supported(benchmark: str) -> list:
    from world2act.envs.libero_robustness import base_suite
    from world2act.experts.libero_expert import supported_libero_tasks

    table = supported_libero_tasks()  # suite -> task ids; a robustness suite uses its base suite's
    return list(table.get(base_suite(benchmark), [])) if isinstance(table, dict) else list(table)


def make_expert(env, seed: int = 0) -> Expert:
    """The scripted expert for ``env`` (a :class:`~world2act.envs.base.ManipulationEnv`).

    Raises:
        World2ActError: no expert exists for the env's task (the message lists supported tasks).
    """
    if is_metaworld(env.benchmark):
        from world2act.experts.metaworld_expert import MetaWorldExpert

        return MetaWorldExpert(env, seed=seed)
    from world2act.experts.libero_expert import LiberoExpert

    supported = _libero_supported(env.benchmark)
    if env.task_id not in supported:
        raise World2ActError(f"no scripted expert for {env.benchmark} task {env.task_id} ({env.task_name}); "
                             f"supported task ids: {supported}")
    return LiberoExpert(env, seed=seed)


def run_expert(env, seed: int, max_steps: int | None = None, before_step=None) -> tuple[list[np.ndarray], bool]:
    """Reset ``env`` with ``seed`` and roll its scripted expert out until success or ``max_steps``
    (default ``env.max_steps``): the one expert episode loop of ``collect`` and Stage 2's
    demonstration targets.

    Args:
        before_step: called as ``before_step(step)`` before each action is chosen (record the
            state, a frame, the gripper width...).

    Returns:
        ``(actions, success)``: the executed actions (each ``[A]`` float32, the env's action
        space) and whether the task was solved.

    Raises:
        World2ActError: no scripted expert for the env's task.
    """
    env.reset(seed=seed)
    expert = make_expert(env, seed=seed)
    expert.reset()
    actions: list[np.ndarray] = []
    for step in range(int(max_steps or env.max_steps)):
        if before_step is not None:
            before_step(step)
        a = np.asarray(expert.act(), dtype=np.float32)
        actions.append(a)
        env.step(a)
        if env.is_success():
            return actions, True
    return actions, False


__all__ = ["Expert", "make_expert", "run_expert", "supported_tasks"]
