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
