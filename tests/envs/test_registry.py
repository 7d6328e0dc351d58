"""Registry: input errors are one-line World2ActErrors raised before any simulator starts."""
import types

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
