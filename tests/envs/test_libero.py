"""LIBERO wrapper: seeded resets, official init states, on-demand upright rendering, errors."""
import numpy as np
import pytest

pytest.importorskip("libero")

from world2act import World2ActError  # noqa: E402
from world2act.envs.libero import LIBERO_SUITES, STEP_BUDGETS, LiberoEnv, libero_init_states, libero_tasks  # noqa: E402


@pytest.fixture(scope="module")
def env():
    e = LiberoEnv("libero_object", 0)
    yield e
    e.close()


def test_tasks_and_budgets():
    tasks = libero_tasks("libero_object")
    assert len(tasks) == 10 and tasks[0].task_id == 0 and tasks[0].benchmark == "libero_object"
    assert "alphabet soup" in tasks[0].instruction
    assert set(STEP_BUDGETS) == set(LIBERO_SUITES)


def test_unknown_suite_task_camera():
    with pytest.raises(World2ActError, match="libero_spatial"):
        libero_tasks("libero_nope")
    with pytest.raises(World2ActError, match="0..9"):
        LiberoEnv("libero_object", 10)
    with pytest.raises(World2ActError, match="agentview"):
        LiberoEnv("libero_object", 0, cameras=("front",))


def test_seed_reset_is_deterministic(env):
    env.reset(seed=7)
    a = env.get_sim_state()
    for _ in range(5):  # leave the gripper closed: hidden state must not leak into the next reset
        env.step(np.array([0.3, 0, 0, 0, 0, 0, 1.0]))
    env.reset(seed=8)
    b = env.get_sim_state()
    env.reset(seed=7)
    c = env.get_sim_state()
    np.testing.assert_array_equal(a, c)
    assert np.abs(a - b).max() > 1e-3  # a different seed gives a different layout
    p = env.proprio()
    assert p.shape == (8,) and p.dtype == np.float32
    assert 0.07 < env.gripper_width() < 0.085  # open after the settle steps


def test_init_state_index_loads_official_state(env):
    official = libero_init_states("libero_object", 0)
    assert official.shape[0] == 50
    env.reset(init_state_index=3)
    n0 = env.mujoco_state_dim
    # objects (free joints after the robot's 9 qpos: x, y, z, quat) drop a little while
    # settling but keep their official xy
    nq = env.sim.model.nq
    qpos_official = official[3][1 : 1 + nq]
    qpos_now = env.get_sim_state()[1 : 1 + nq]
    assert official.shape[1] == n0
    xy = np.array([[9 + 7 * k, 10 + 7 * k] for k in range((nq - 9) // 7)]).ravel()
    np.testing.assert_allclose(qpos_now[xy], qpos_official[xy], atol=0.01)
    env.reset(init_state_index=4)
    assert np.abs(env.get_sim_state()[1 + xy] - official[3][1 + xy]).max() > 0.01  # another state
    with pytest.raises(ValueError):
        env.reset(init_state_index=50)
    with pytest.raises(ValueError):
        env.reset()
    # set_sim_state round trip, including a bare official state
    env.set_sim_state(official[3])
    np.testing.assert_allclose(env.get_sim_state()[:n0], official[3], atol=1e-9)


def test_render_shapes_upright(env):
    env.reset(seed=0)
    ims = env.render(("agentview", "wrist"), (48, 64))
    assert set(ims) == {"agentview", "wrist"}
    for im in ims.values():
        assert im.shape == (48, 64, 3) and im.dtype == np.uint8 and im.std() > 5
    # upright agentview: the floor fills the bottom of the image, the robot/background the top;
    # the floor (light wood) is brighter than the top rows.
    av = ims["agentview"].astype(float)
    assert av[-8:].mean() > av[:8].mean()
    with pytest.raises(World2ActError, match="wrist"):
        env.render(("top",), (32, 32))
    obs = env.observe(("wrist",), (32, 32))
    assert obs["observation.images.wrist"].shape == (32, 32, 3)
    assert obs["observation.state"].shape == (8,)


def test_seeded_layout_on_fixture_is_valid_and_deterministic():
    # "bowl on the stove": objects placed on fixtures need a full model reload per reset;
    # a soft reset used to drop the bowl off the table.
    with LiberoEnv("libero_spatial", 7) as e:
        bowl = e.sim.model.body_name2id("akita_black_bowl_1_main")
        e.reset(seed=1000)
        a = e.get_sim_state()
        z = float(e.sim.data.body_xpos[bowl][2])
        stove = e.sim.data.get_site_xpos("flat_stove_1_cook_region")
        assert z > stove[2] and np.linalg.norm(e.sim.data.body_xpos[bowl][:2] - stove[:2]) < 0.05
        e.reset(seed=1000)
        np.testing.assert_array_equal(a, e.get_sim_state())
        assert e.render(("agentview",), (32, 32))["agentview"].shape == (32, 32, 3)  # new sim renders


def test_render_segmentation_marks_the_robot(env):
    import mujoco

    env.reset(seed=3)
    before = env.render(("agentview", "wrist"), (32, 32))
    masks = env.render_segmentation(("agentview", "wrist"), (32, 32))
    for cam, m in masks.items():
        assert m.dtype == bool and m.shape == (32, 32)
        assert 0 < m.sum() < 0.5 * m.size, (cam, m.mean())  # robot pixels exist and are a minority
    after = env.render(("agentview", "wrist"), (32, 32))
    assert all(np.array_equal(before[c], after[c]) for c in before)  # normal rendering is left as it was
    model = env.sim.model._model
    bodies = {mujoco.mj_id2name(model, mujoco.mjtObj.mjOBJ_BODY, int(model.geom_bodyid[g]))
              for g in np.flatnonzero(env.robot_geoms())}
    assert bodies and all(b.startswith(("robot0_", "gripper0_")) for b in bodies)
    assert "gripper0_right_gripper" in bodies


def test_expert_chunk_leaves_no_trace_and_matches_the_closed_loop_expert():
    """A look-ahead relabel query (Stage 2's DAgger oracle) restores everything the next steps
    depend on — the controller's goal, the gripper command, the observables' sampling clocks,
    not only the MuJoCo state — so a rollout with queries is bit-identical to one without, and
    the returned chunk, executed open loop, is what the expert does closed loop from there."""
    from world2act.envs import make_env
    from world2act.experts import make_expert

    env, ref = (make_env("libero_object", 0, camera_size=(32, 32), cameras=("agentview",)) for _ in range(2))
    try:
        for e in (env, ref):
            e.reset(seed=5)
        push = np.array([0.3, 0.1, -0.2, 0, 0, 0, -1.0], np.float32)
        for i in range(8):
            if i % 3 == 0:
                env.expert_chunk(8)
            env.step(push)
            ref.step(push)
        np.testing.assert_array_equal(env.get_sim_state(), ref.get_sim_state())
        np.testing.assert_array_equal(env.proprio(), ref.proprio())
        chunk = env.expert_chunk(8)
        assert chunk.shape == (8, 7) and np.abs(chunk).max() <= 1.0
        expert = make_expert(ref)
        expert.reset()  # as expert_chunk does (the jitter draw)
        for a in chunk:
            env.step(a)
            ref.step(np.asarray(expert.act(), np.float32))
        np.testing.assert_array_equal(env.get_sim_state(), ref.get_sim_state())
    finally:
        env.close()
        ref.close()


def test_closing_one_env_leaves_the_others_rendering():
    """``VectorEnv.set_tasks`` closes and rebuilds envs in a worker that hosts several: closing an
    env must free only its own GL objects. Before the fix, MuJoCo freed them in the context
    current at the time — the newest env's — which then rendered garbage (mean error 92/255)
    while its state was right."""
    from world2act.envs import make_env

    cams = ("agentview", "wrist")
    old = [make_env("libero_object", 0, camera_size=(32, 32), cameras=cams) for _ in range(2)]
    old[0].close()
    new = make_env("libero_object", 1, camera_size=(32, 32), cameras=cams)
    old[1].close()  # the set_tasks order: close 0, build 0', close 1, ...
    ref = make_env("libero_object", 1, camera_size=(32, 32), cameras=cams)
    try:
        for e in (new, ref):
            e.reset(seed=3)
        a, b = new.observe(cams, (32, 32)), ref.observe(cams, (32, 32))
        for c in cams:
            np.testing.assert_array_equal(a[f"observation.images.{c}"], b[f"observation.images.{c}"])
    finally:
        new.close()
        ref.close()
