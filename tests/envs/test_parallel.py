"""run_jobs (order, error records, worker-count invariance) and VectorEnv on Meta-World."""
import math

import numpy as np
import pytest

from world2act.envs.parallel import JobError, VectorEnv, is_error, run_jobs


def test_run_jobs_order_errors_and_workers_invariance():
    jobs = [16, -1, 9, 2.25, 0, -4]
    seen = []
    r2 = run_jobs(math.sqrt, jobs, workers=2, on_result=lambda i, r: seen.append(i))
    assert seen == list(range(len(jobs)))  # streamed in job order
    assert [x for x in r2 if not is_error(x)] == [4.0, 3.0, 1.5, 0.0]
    errs = [x for x in r2 if is_error(x)]
    assert [e.index for e in errs] == [1, 5] and all(isinstance(e, JobError) and "ValueError" in e.error for e in errs)
    r0 = run_jobs(math.sqrt, jobs, workers=0)
    r1 = run_jobs(math.sqrt, jobs, workers=1)
    strip = lambda rs: [(x.index, x.error) if is_error(x) else x for x in rs]  # noqa: E731
    assert strip(r0) == strip(r1) == strip(r2)
    assert run_jobs(math.sqrt, [], workers=2) == []


@pytest.mark.sim
def test_vector_env_step_chunk_metaworld():
    with VectorEnv("metaworld", ["pick-place-v3", "door-open-v3"], workers=2, camera_size=(24, 24)) as venv:
        assert all(r["error"] is None for r in venv.reset([dict(seed=1), dict(seed=2)]))
        obs = venv.observe()
        assert len(obs) == 2 and obs[0]["observation.images.corner2"].shape == (24, 24, 3)
        assert obs[1]["task"] == "open the door"
        acts = np.zeros((2, 5, 4), np.float32)
        acts[:, :, 2] = 1.0  # move up
        res = venv.step_chunk(acts, cameras=("gripperPOV",))
        for r, o in zip(res, obs):
            assert r["error"] is None and r["steps"] == 5 and r["success"] is False
            assert set(k for k in r["obs"] if k.startswith("observation.images")) == {"observation.images.gripperPOV"}
            assert r["obs"]["observation.state"][2] > o["observation.state"][2]  # the hand went up
        bad = acts.copy()
        bad[1, 0, 0] = np.nan
        res = venv.step_chunk(bad)
        assert res[0]["error"] is None and "NaN" in res[1]["error"]  # reported per env, not raised
        with pytest.raises(ValueError):
            venv.step_chunk(np.zeros((3, 2, 4)))


@pytest.mark.sim
@pytest.mark.parametrize("workers", [0, 2])
def test_vector_env_set_tasks_switches_in_place(workers):
    from world2act import World2ActError

    with VectorEnv("metaworld", ["door-open-v3", "door-open-v3"], workers=workers, camera_size=(16, 16)) as venv:
        pids = [p.pid for p in venv._procs]
        assert [r["error"] for r in venv.set_tasks(["door-open-v3", "pick-place-v3"])] == [None, None]
        assert venv.task_ids == ["door-open-v3", "pick-place-v3"]
        assert [p.pid for p in venv._procs] == pids  # same worker processes, only the simulator was rebuilt
        assert all(r["error"] is None for r in venv.reset([dict(seed=1), dict(seed=2)]))
        assert [o["task"] for o in venv.observe()] == ["open the door", "pick up the puck and place it at the goal"]
        with pytest.raises(ValueError):
            venv.set_tasks(["door-open-v3"])
        with pytest.raises(World2ActError):
            venv.set_tasks(["door-open-v3", "no-such-task"])
