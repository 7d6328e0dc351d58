"""`world2act collect` on Meta-World: dataset written and loadable, refusal, resume, determinism."""
import json

import numpy as np
import pytest

from world2act import World2ActError
from world2act.cli import main as cli_main
from world2act.data.collect import CollectConfig, run

pytestmark = pytest.mark.sim


def _cfg(n, **kw):
    return CollectConfig(benchmark="metaworld", tasks=["pick-place-v3"], episodes=n, image_size=16, workers=0, **kw)


def test_collect_resume_and_refusal(tmp_path):
    from world2act.data import LeRobotDataset

    out = tmp_path / "demos"
    stats = run(_cfg(2), out)
    assert stats["episodes_written"] == 2 and stats["per_task"]["pick-place-v3"]["successes"] == 2
    ds = LeRobotDataset(out)
    assert ds.num_episodes == 2
    ep = ds.load_episode(0)
    T = len(ep)
    assert 20 < T < 500 and ep.actions.shape == (T, 4) and ep.states.shape == (T, 4)
    assert ep.images["corner2"].shape == (T, 16, 16, 3) and ep.images["gripperPOV"].shape == (T, 16, 16, 3)
    assert ep.sim_states is not None and ep.sim_states.shape[0] == T
    assert ep.task == "pick up the puck and place it at the goal"
    m0, m1 = ds.episode_meta(0), ds.episode_meta(1)
    assert m0["benchmark"] == "metaworld" and m0["task_name"] == "pick-place-v3" and m0["seed"] != m1["seed"]
    assert json.loads((out / "meta" / "collect_stats.json").read_text())["complete"] is True
    assert (out / "manifest.json").is_file()

    with pytest.raises(World2ActError, match="--resume"):
        run(_cfg(2), out)  # non-empty out refused
    first = ep.actions.copy()
    stats = run(_cfg(3), out, resume=True)
    assert stats["new_episodes"] == 1
    ds = LeRobotDataset(out)
    assert ds.num_episodes == 3 and np.array_equal(ds.load_episode(0).actions, first)
    seeds = [ds.episode_meta(i)["seed"] for i in range(3)]
    assert len(set(seeds)) == 3

    # determinism: a fresh 3-episode run gives the same seeds and actions
    out2 = tmp_path / "again"
    run(_cfg(3), out2)
    ds2 = LeRobotDataset(out2)
    assert [ds2.episode_meta(i)["seed"] for i in range(3)] == seeds
    assert np.array_equal(ds2.load_episode(2, load_images=False).actions, ds.load_episode(2, load_images=False).actions)


def test_collect_any_seed(tmp_path, capsys):
    """--seed 4242 (once refused as outside 0..9) collects from its own block of demo seeds."""
    from world2act.data import LeRobotDataset
    from world2act.data.collect import SEED_BLOCK
    from world2act.envs import SEED_RANGES, list_tasks, run_seed_for

    out = tmp_path / "s4242"
    rc = cli_main(["collect", "--benchmark", "metaworld", "--tasks", "pick-place-v3", "--episodes", "1",
                   "--image-size", "16", "--workers", "0", "--seed", "4242", "--out", str(out)])
    assert rc == 0, capsys.readouterr().err
    m = LeRobotDataset(out).episode_meta(0)
    ti = [t.task_id for t in list_tasks("metaworld")].index("pick-place-v3")
    assert m["seed"] == run_seed_for("demos", ti, 4242, m["attempt"], block=SEED_BLOCK)
    assert m["seed"] in SEED_RANGES["demos"]
    seed0 = {run_seed_for("demos", ti, 0, a, block=SEED_BLOCK) for a in range(SEED_BLOCK)}
    assert m["seed"] not in seed0
    with pytest.raises(World2ActError, match="non-negative"):
        run(_cfg(1, seed=-1), tmp_path / "neg")
    with pytest.raises(World2ActError, match="at most 10000"):
        run(_cfg(1, max_attempts=SEED_BLOCK + 1), tmp_path / "cap")


def test_cli_bad_input_one_line_errors(tmp_path, capsys):
    out = tmp_path / "x"
    for argv, needle in [
        (["--benchmark", "metaworld", "--tasks", "pick-place-v3", "--cameras", "agentview"], "corner2"),
        (["--benchmark", "metaworlds", "--tasks", "0"], "libero_object"),
        (["--benchmark", "metaworld", "--tasks", "fly-v3"], "pick-place-v3"),
    ]:
        rc = cli_main(["collect", *argv, "--episodes", "1", "--out", str(out)])
        err = capsys.readouterr().err.strip()
        assert rc == 2 and err.startswith("error:") and needle in err and "\n" not in err
    assert not out.exists() or not any(out.iterdir())
