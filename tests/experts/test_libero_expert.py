"""The LIBERO scripted expert solves a libero_object task from a fixed seed (no rendering)."""
import numpy as np
import pytest

pytest.importorskip("libero")

from world2act import World2ActError  # noqa: E402
from world2act.envs.libero import LiberoEnv  # noqa: E402
from world2act.experts.libero_expert import LiberoExpert, Phase, parse_goal, supported_libero_tasks  # noqa: E402


def test_expert_solves_object_task_with_one_closure():
    with LiberoEnv("libero_object", 5) as env:
        assert [(s.obj, s.target) for s in parse_goal(env)] == [("tomato_sauce_1", "basket_1_contain_region")]
        expert = LiberoExpert(env, seed=0)
        env.reset(seed=123)
        expert.reset()
        widths, success = [], False
        for _ in range(env.max_steps):
            a = expert.act()
            assert a.shape == (7,) and np.all(np.abs(a) <= 1)
            env.step(a)
            widths.append(env.gripper_width())
            if env.is_success():
                success = True
                break
        assert success
        assert expert.closures == 1
        assert min(widths) < 0.07  # the gripper visibly closed on the object
        # keep going: the expert releases (gripper opens) and finishes
        for _ in range(60):
            env.step(expert.act())
            if expert.done:
                break
        assert expert.phase in (Phase.RETREAT, Phase.DONE) and env.gripper_width() > 0.07


def test_unsupported_goal_is_a_clear_error():
    with LiberoEnv("libero_goal", 7) as env:  # "turn on the stove"
        with pytest.raises(World2ActError, match="turnon"):
            LiberoExpert(env)


def test_supported_tasks_listing():
    sup = supported_libero_tasks()
    assert sup["libero_object"] == list(range(10))
