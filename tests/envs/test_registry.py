"""Registry: input errors are one-line World2ActErrors raised before any simulator starts."""
import types

import numpy as np

import pytest

from world2act import World2ActError
from world2act import envs as E


@pytest.fixture
def no_sim(monkeypatch):
    """Make any simulator start fail loudly, so errors must come from validation."""
    import world2act.envs.metaworld as mw

    def boom(*a, **k):
        raise AssertionError("simulator started")

    monkeypatch.setattr(mw.MetaWorldEnv, "__init__", boom)
    try:
        import world2act.envs.libero as lb

        monkeypatch.setattr(lb.LiberoEnv, "__init__", boom)
    except ImportError:
        pass


def test_unknown_benchmark_lists_choices(no_sim):
    with pytest.raises(World2ActError) as e:
        E.make_env("robocasa", 0)
    msg = str(e.value)
    assert "\n" not in msg and "metaworld" in msg and "libero_object" in msg


def test_unknown_metaworld_task_and_camera(no_sim):
    with pytest.raises(World2ActError, match="pick-place-v3"):
        E.make_env("metaworld", "pick-plaice-v3")
    with pytest.raises(World2ActError, match="corner2"):
        E.make_env("metaworld", "pick-place-v3", cameras=["agentview"])
    with pytest.raises(World2ActError, match="gripperPOV"):
        E.check_cameras("metaworld", "corner2,nope")


def test_unknown_libero_task_and_camera(no_sim):
    with pytest.raises(World2ActError, match="0..9"):
        E.resolve_tasks("libero_object", "0,12")
    with pytest.raises(World2ActError, match="agentview"):
        E.make_env("libero_object", 0, cameras=("corner2",))
    with pytest.raises(World2ActError):
        E.resolve_tasks("libero_object", "one")


def test_resolve_tasks():
    assert len(E.resolve_tasks("metaworld", "all")) == 50
    assert E.resolve_tasks("metaworld", "door-open-v3,pick-place,door-open-v3") == ["door-open-v3", "pick-place-v3"]
    assert E.resolve_tasks("libero_object", "3, 1") == [3, 1]
    assert E.resolve_tasks("libero_object", "all") == list(range(10))
    with pytest.raises(World2ActError):
        E.resolve_tasks("metaworld", "")


def test_defaults_and_budgets():
    assert E.default_cameras("metaworld") == ("corner2", "gripperPOV")
    assert E.default_cameras("libero_10") == ("agentview", "wrist")
    assert E.step_budget("metaworld") == 500
    assert E.step_budget("libero_object") == 280


def test_seed_ranges_disjoint():
    r = E.SEED_RANGES
    names = list(r)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            assert r[a].stop <= r[b].start or r[b].stop <= r[a].start, (a, b)
    assert E.seed_for("demos", 0, 0) in r["demos"] and E.seed_for("eval", 89, 99_999) in r["eval"]
    assert E.seed_for("demos", 1, 0) != E.seed_for("demos", 0, 1)
    with pytest.raises(World2ActError):
        E.seed_for("train", 0, 0)
    with pytest.raises(World2ActError):
        E.seed_for("demos", 0, 100_000)


def test_run_seed_for_any_seed_keeps_ranges_disjointness_and_legacy_seeds():
    from world2act.data.collect import SEED_BLOCK
    from world2act.evaluation.harness import MW_SEED_STRIDE

    for purpose, block, legacy in [("demos", SEED_BLOCK, 10), ("eval", MW_SEED_STRIDE, 200)]:
        R = E.runs_per_task(purpose, block)
        assert R == 10 * 100_000 // block
        # seeds accepted before keep exactly their old reset seeds
        for s in range(legacy):
            for i in (0, 1, block - 1):
                for t in (0, 49, 89):
                    assert E.run_seed_for(purpose, t, s, i, block=block) == E.seed_for(purpose, t, block * s + i)

        def blocks(t, seeds):
            return {E.run_seed_for(purpose, t, s, 0, block=block) for s in seeds}

        # every run seed 0..R-1 gets its own block, for every task, and no two tasks share one
        per_task = [blocks(t, range(R)) for t in range(E.MAX_TASKS)]
        assert all(len(b) == R for b in per_task)
        assert len(set().union(*per_task)) == R * E.MAX_TASKS
        # ... and every seed of every block stays inside the purpose's range
        lo = min(min(b) for b in per_task)
        hi = max(max(b) for b in per_task) + block - 1
        assert lo in E.SEED_RANGES[purpose] and hi in E.SEED_RANGES[purpose]
        # large seeds work, stay in range, differ from their neighbours; seeds equal modulo R coincide
        for s in (4242, 10**12 + 7):
            assert E.run_seed_for(purpose, 89, s, block - 1, block=block) in E.SEED_RANGES[purpose]
        a = {E.run_seed_for(purpose, 3, 4242, i, block=block) for i in range(block)}
        b = {E.run_seed_for(purpose, 3, 4243, i, block=block) for i in range(block)}
        c = {E.run_seed_for(purpose, 3, 0, i, block=block) for i in range(block)}
        assert len(a) == block and not a & b and not a & c
        assert E.run_seed_for(purpose, 3, 4242 + R, 7, block=block) == E.run_seed_for(purpose, 3, 4242, 7, block=block)
    with pytest.raises(World2ActError, match="non-negative"):
        E.run_seed_for("demos", 0, -1, 0, block=SEED_BLOCK)
    with pytest.raises(World2ActError, match="out of range"):
        E.run_seed_for("demos", 0, 1, SEED_BLOCK, block=SEED_BLOCK)
    with pytest.raises(World2ActError, match="task index"):
        E.seed_for("demos", E.MAX_TASKS, 0)  # slots above MAX_TASKS belong to run blocks
    assert max(len(E.list_tasks(b)) for b in E.BENCHMARKS) <= E.MAX_TASKS


def test_instructions_cover_all_metaworld_tasks():
    from metaworld.policies import ENV_POLICY_MAP

    from world2act.envs.metaworld_instructions import INSTRUCTIONS

    assert set(INSTRUCTIONS) == set(ENV_POLICY_MAP)
    assert all(s and s == s.strip() and s[0].islower() for s in INSTRUCTIONS.values())
    infos = E.list_tasks("metaworld")
    assert infos[0].instruction == INSTRUCTIONS[infos[0].task_id]


def test_make_expert_unsupported_task():
    from world2act.experts import make_expert

    fake = types.SimpleNamespace(benchmark="libero_10", task_id=7, task_name="x")
    with pytest.raises(World2ActError, match="supported"):
        make_expert(fake)


# ----------------------------------------------------------------------------- benchmark registry
from world2act.envs import registry as R  # noqa: E402


def test_every_benchmark_has_a_complete_spec():
    import dataclasses

    assert tuple(R.SPECS) == E.BENCHMARKS
    for name in E.BENCHMARKS:
        s = R.benchmark_spec(name)
        assert s.name == name and s.family in ("libero", "metaworld")
        for f in dataclasses.fields(s):
            v = getattr(s, f.name)
            assert v is not None and (v != () or f.name == "settle_action" and s.settle_steps == 0), (name, f.name)
        assert s.action_dim == len(s.action_names) and s.state_dim == len(s.state_names)
        assert len(set(s.action_names)) == s.action_dim
        assert s.default_cameras == s.camera_names[:2] and s.default_camera == s.default_cameras[0]
        assert {c.role for c in s.cameras if c.name in s.default_cameras} == {"third_person", "wrist"}
        assert all(c.flip in (R.FLIP_NONE, R.FLIP_BOTH) for c in s.cameras)
        assert s.step_budget > 0 and s.fps > 0 and s.num_tasks == len(E.list_tasks(name))
        assert len(s.settle_action) == (s.action_dim if s.settle_steps else 0)
        assert (s.init_states == "official") == (s.num_init_states > 0) and s.init_states in ("official", "seeded")
        assert s.action_names[s.gripper_action_dim] == "gripper" and s.gripper_action_close_sign in (1, -1)
        assert all(0 <= d < s.state_dim for d in s.gripper_state_dims) and s.gripper_state_closed in ("low", "high")
        assert 0 < s.gripper_tau < 1 and s.gripper_open_width > 0
        # the other modules' views agree with the registry
        assert E.step_budget(name) == s.step_budget and E.default_cameras(name) == s.default_cameras
        assert E.available_cameras(name) == s.camera_names
        from world2act.policies.base import benchmark_info

        assert benchmark_info(name) == {"benchmark": name, "action_dim": s.action_dim, "state_dim": s.state_dim,
                                        "cameras": s.default_cameras}


def test_registry_facts_match_the_old_hard_coded_values():
    lib = {"libero_spatial": 220, "libero_object": 280, "libero_goal": 300, "libero_10": 520, "libero_90": 400}
    for name, budget in lib.items():
        s = R.benchmark_spec(name)
        assert (s.step_budget, s.action_dim, s.state_dim, s.settle_steps, s.num_init_states, s.fps) == (budget, 7, 8, 10, 50, 20.0)
        assert s.default_cameras == ("agentview", "wrist") and s.robot == "panda"
        assert s.settle_action == (0, 0, 0, 0, 0, 0, -1) and s.gripper_action_dim == 6
    mw = R.benchmark_spec("metaworld")
    assert (mw.step_budget, mw.action_dim, mw.state_dim, mw.settle_steps, mw.num_init_states, mw.fps) == (500, 4, 4, 0, 0, 80.0)
    assert mw.default_cameras == ("corner2", "gripperPOV") and mw.robot == "sawyer" and mw.gripper_action_dim == 3
    from world2act.skills.contacts import BENCHMARK_DEFAULTS

    assert BENCHMARK_DEFAULTS == {"libero": {"w_open": 0.080, "tau": 0.10}, "metaworld": {"w_open": 1.0, "tau": 0.30}}


def test_scripted_expert_flag_matches_the_experts():
    from world2act.experts import supported_tasks

    for name in E.BENCHMARKS:
        if name != "metaworld":
            assert R.benchmark_spec(name).scripted_expert == bool(supported_tasks(name)), name
    assert R.benchmark_spec("metaworld").scripted_expert


def test_unknown_benchmark_spec_errors():
    for bad in ("robocasa", "LIBERO_OBJECT", "", None, "libero"):
        with pytest.raises(World2ActError) as e:
            R.benchmark_spec(bad)
        assert "\n" not in str(e.value) and "metaworld" in str(e.value)
    with pytest.raises(World2ActError, match="gripperPOV"):
        R.benchmark_spec("metaworld").camera("gripper")
    assert R.family_spec("libero").action_dim == 7 and R.family_of("libero_object") == "libero"
    assert R.family_of("robocasa") is None and R.family_of("meta-world") == "metaworld"
    with pytest.raises(World2ActError):
        R.family_spec("robocasa")


def test_metaworld_spec_agrees_with_the_simulator():
    import mujoco
    from metaworld.env_dict import ALL_V3_ENVIRONMENTS

    from world2act.envs.metaworld import MetaWorldEnv

    s = R.benchmark_spec("metaworld")
    raw = ALL_V3_ENVIRONMENTS["pick-place-v3"]()
    m = raw.model
    sim_cams = {mujoco.mj_id2name(m, mujoco.mjtObj.mjOBJ_CAMERA, i) for i in range(m.ncam)}
    assert {c.sim_name for c in s.cameras} == sim_cams  # the wrist camera is "gripperPOV", not "gripper"
    assert raw.action_space.shape == (s.action_dim,) and float(raw.metadata["render_fps"]) == s.fps
    env = MetaWorldEnv("pick-place-v3", camera_size=(16, 16))
    try:
        assert (env.action_dim, env.state_dim, env.max_steps, env.settle_steps, env.num_init_states) == (
            s.action_dim, s.state_dim, s.step_budget, s.settle_steps, s.num_init_states)
        assert env.cameras == s.default_cameras and env.control_hz == s.fps
        env.reset(seed=0)
        assert env.proprio().shape == (s.state_dim,)
        g = s.gripper_state_dims[0]
        open_w = float(env.proprio()[g])
        close = np.zeros(s.action_dim, np.float32)
        close[s.gripper_action_dim] = s.gripper_action_close_sign
        for _ in range(15):
            env.step(close)
        closed_w = float(env.proprio()[g])
        assert closed_w < open_w if s.gripper_state_closed == "low" else closed_w > open_w
        # corner2 is rendered upside down by MuJoCo: the env flips it (FLIP_BOTH), gripperPOV not
        flips = {c.name: c.flip for c in s.cameras}
        from world2act.envs.metaworld import _UPSIDE_DOWN

        assert _UPSIDE_DOWN == {n for n, f in flips.items() if f == R.FLIP_BOTH}
        assert {c.name: c.role for c in s.cameras}["gripperPOV"] == "wrist"
    finally:
        env.close()


def test_libero_object_spec_agrees_with_the_simulator():
    pytest.importorskip("libero")
    from world2act.envs.libero import LiberoEnv

    s = R.benchmark_spec("libero_object")
    env = LiberoEnv("libero_object", 0, camera_size=(16, 16))
    try:
        sim_cams = {env.sim.model.camera_id2name(i) for i in range(env.sim.model.ncam)}
        assert {c.sim_name for c in s.cameras} <= sim_cams
        assert env.env.env.action_dim == s.action_dim and float(env.env.env.control_freq) == s.fps
        assert (env.action_dim, env.state_dim, env.max_steps, env.settle_steps) == (
            s.action_dim, s.state_dim, s.step_budget, s.settle_steps)
        assert env.cameras == s.camera_names and len(env.init_states) == s.num_init_states
        env.reset(init_state_index=0)
        assert env.proprio().shape == (s.state_dim,)
        open_w = env.gripper_width()
        close = np.zeros(s.action_dim)
        close[s.gripper_action_dim] = s.gripper_action_close_sign
        for _ in range(10):
            env.step(close)
        assert env.gripper_width() < open_w  # "low" = closed
        q = env.proprio()[list(s.gripper_state_dims)]
        assert abs(float(q[0] - q[1]) - env.gripper_width()) < 1e-5  # width = left - right finger
    finally:
        env.close()
