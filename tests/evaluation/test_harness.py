"""The evaluation harness on a pure-numpy fake simulator: determinism across worker counts,
error counting, reports, resume, and bad input failing before any simulator starts."""
from __future__ import annotations

import json

import pytest

from eval_fakes import (fake_env_factory, make_crashing_policy, make_noisy_reacher,  # noqa: E402
                        make_wrong_dim_policy)
from world2act import World2ActError
from world2act.evaluation import episode_jobs, evaluate, wilson_interval

torch = pytest.importorskip("torch")
torch.set_num_threads(1)


def _run(tmp_path, name, workers, policy=make_noisy_reacher, **kw):
    return evaluate(policy, "libero_object", [0, 1], 6, [0, 1], tmp_path / name, workers=workers,
                    video_episodes=kw.pop("video_episodes", 0), env_factory=fake_env_factory, progress=False,
                    latency=False, **kw)


def _outcomes(res):
    return [(e["task"], e["seed"], e["trial"], e["init_state_index"], e["success"], e["steps"], bool(e["error"]))
            for e in res["episodes"]]


def test_results_identical_across_worker_counts(tmp_path):
    r0 = _run(tmp_path, "w0", 0)
    r1 = _run(tmp_path, "w1", 1)
    r2 = _run(tmp_path, "w2", 2)
    assert len(r0["episodes"]) == 2 * 2 * 6
    assert _outcomes(r0) == _outcomes(r1) == _outcomes(r2)
    assert r0["per_task"] == r2["per_task"] and r0["overall"] == r2["overall"]
    # the noisy policy is neither always right nor always wrong: the comparison is informative
    assert 0 < r0["overall"]["n_success"] < r0["overall"]["n_trials"]
    # different seeds → different policy noise on the same init states
    s0 = [e["success"] for e in r0["episodes"] if e["seed"] == 0 and not e["error"]]
    s1 = [e["success"] for e in r0["episodes"] if e["seed"] == 1 and not e["error"]]
    assert s0 != s1 or [e["steps"] for e in r0["episodes"] if e["seed"] == 0] != [e["steps"] for e in r0["episodes"] if e["seed"] == 1]


def test_crashing_episode_is_an_error_not_a_drop(tmp_path):
    res = _run(tmp_path, "crash", 0)
    t1 = res["per_task"]["1"]
    # FakeEnv raises in task 1, init state 3: once per seed
    assert t1["n_errors"] == 2 and t1["n_trials"] == 12
    assert res["per_task"]["0"]["n_errors"] == 0
    errs = [e for e in res["episodes"] if e["error"]]
    assert {(e["task"], e["init_state_index"]) for e in errs} == {(1, 3)}
    assert all(not e["success"] for e in errs)
    assert "simulated physics blow-up" in errs[0]["error"]
    assert t1["success_rate"] == t1["n_success"] / 12
    assert t1["success_rate_excl_errors"] == t1["n_success"] / 10
    assert len(res["errors"]) == 2 and res["errors"][0]["traceback"]
    assert res["complete"]


def test_policy_crash_recorded_and_run_continues(tmp_path):
    res = _run(tmp_path, "pcrash", 2, policy=make_crashing_policy)
    errs = [e for e in res["episodes"] if e["error"]]
    assert errs and all("policy exploded" in e["error"] for e in errs if "blow-up" not in e["error"])
    assert len(res["episodes"]) == 24  # nothing dropped
    assert res["overall"]["n_errors"] == len(errs)


def test_outputs_and_resume(tmp_path):
    res = _run(tmp_path, "out", 0, video_episodes=1)
    out = tmp_path / "out"
    for f in ("eval.json", "eval.md", "success.png", "episodes.jsonl", "manifest.json"):
        assert (out / f).is_file(), f
    data = json.loads((out / "eval.json").read_text())
    assert set(data["per_task"]) == {"0", "1"}
    for t in data["per_task"].values():
        assert {"success_rate", "n_trials", "n_errors", "ci95", "per_seed", "seed_std"} <= set(t)
    assert "| **mean** |" in (out / "eval.md").read_text()
    assert len(res["videos"]) == 1 and (out / "videos" / res["videos"][0]).stat().st_size > 0
    # resume: drop half the finished episodes, re-run, same result
    lines = (out / "episodes.jsonl").read_text().splitlines()
    (out / "episodes.jsonl").write_text("\n".join(lines[:10]) + "\n{broken")
    again = evaluate(make_noisy_reacher, "libero_object", [0, 1], 6, [0, 1], out, workers=0, video_episodes=1,
                     env_factory=fake_env_factory, progress=False, latency=False, resume=True)
    assert again["timing"]["episodes_run"] == 14
    assert _outcomes(again) == _outcomes(res)
    with pytest.raises(World2ActError, match="different settings"):
        evaluate(make_noisy_reacher, "libero_object", [0, 1], 7, [0, 1], out, workers=0, env_factory=fake_env_factory,
                 progress=False, latency=False, resume=True)
    with pytest.raises(World2ActError, match="not empty"):
        _run(tmp_path, "out", 0)


def test_bad_input_fails_before_simulation(tmp_path):
    with pytest.raises(World2ActError, match="action_dim 4 != benchmark libero_object action_dim 7"):
        _run(tmp_path, "bad", 0, policy=make_wrong_dim_policy)
    assert not (tmp_path / "bad").exists()
    with pytest.raises(World2ActError, match="missing config.json"):
        (tmp_path / "empty_policy").mkdir()
        _run(tmp_path, "bad2", 0, policy=str(tmp_path / "empty_policy"))
    with pytest.raises(World2ActError, match="unknown"):
        evaluate(make_noisy_reacher, "libero_objekt", [0], 1, [0], tmp_path / "bad3", workers=0)
    with pytest.raises(World2ActError, match="--tasks"):
        evaluate(make_noisy_reacher, "libero_object", "0,99", 1, [0], tmp_path / "bad4", workers=0)
    with pytest.raises(World2ActError, match="--trials"):
        evaluate(make_noisy_reacher, "libero_object", "0", 0, [0], tmp_path / "bad5", workers=0)


def test_job_mapping_is_documented_protocol():
    jobs = episode_jobs("libero_object", [0, 3], 50, [0, 1, 2, 3, 4], video_episodes=2)
    assert len(jobs) == 2 * 5 * 50
    assert [j.init_state_index for j in jobs if j.task == 3 and j.seed == 2] == list(range(50))
    assert len({j.policy_seed for j in jobs}) == len(jobs)
    assert [(j.task, j.trial, j.seed) for j in jobs if j.video] == [(0, 0, 0), (3, 0, 0)]
    off = episode_jobs("libero_object", [0], 10, [0, 1], init_offset_per_seed=10)
    assert [j.init_state_index for j in off if j.seed == 1] == list(range(10, 20))
    mw = episode_jobs("metaworld", ["reach-v3"], 3, [0, 1])
    from world2act.envs import SEED_RANGES

    assert all(j.reset_seed in SEED_RANGES["eval"] for j in mw)
    assert len({j.reset_seed for j in mw}) == 6


def test_metaworld_any_seed_keeps_eval_range_and_old_resets():
    from world2act.envs import SEED_RANGES, list_tasks, seed_for

    ti = [t.task_id for t in list_tasks("metaworld")].index("reach-v3")
    jobs = episode_jobs("metaworld", ["reach-v3"], 4, [0, 19, 4242])
    by_seed = {s: [j.reset_seed for j in jobs if j.seed == s] for s in (0, 19, 4242)}
    assert by_seed[0] == [seed_for("eval", ti, i) for i in range(4)]  # seeds 0..19 as before
    assert by_seed[19] == [seed_for("eval", ti, 500 * 19 + i) for i in range(4)]
    assert all(r in SEED_RANGES["eval"] for r in by_seed[4242])
    assert len({r for v in by_seed.values() for r in v}) == 12
    with pytest.raises(World2ActError, match="modulo 2000"):
        episode_jobs("metaworld", ["reach-v3"], 2, [5, 2005])
    with pytest.raises(World2ActError, match="at most 500 trials"):
        episode_jobs("metaworld", ["reach-v3"], 501, [0])
    with pytest.raises(World2ActError, match="non-negative"):
        episode_jobs("libero_object", [0], 2, [-1])


def test_wilson_interval():
    lo, hi = wilson_interval(47, 50)
    assert 0.83 < lo < 0.85 and 0.97 < hi < 0.99
    assert wilson_interval(0, 10)[0] == 0.0 and wilson_interval(10, 10)[1] == 1.0


def test_error_source_is_recorded(tmp_path):
    res = _run(tmp_path, "src", 0, policy=make_crashing_policy)
    srcs = {("blow-up" in e["error"], e["error_source"]) for e in res["episodes"] if e["error"]}
    assert (True, "env") in srcs and (False, "policy") in srcs


@pytest.mark.parametrize("sig", ["SIGINT", "SIGTERM"])
def test_ctrl_c_keeps_finished_results(tmp_path, sig):
    import os
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    out = tmp_path / "int"
    here = Path(__file__).parent
    # a shell that starts a job in the background without job control (CI runners, `cmd &` in a
    # script) passes SIGINT on as ignored; restore the terminal default, as under a real Ctrl-C
    code = ("import signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler)\n"
            "sys.path.insert(0, %r)\n"
            "from eval_fakes import slow_env_factory, make_noisy_reacher\n"
            "from world2act.evaluation import evaluate\n"
            "evaluate(make_noisy_reacher, 'libero_object', [0, 1], 20, [0], %r, workers=2, video_episodes=0,"
            " env_factory=slow_env_factory, progress=False, latency=False)\n") % (str(here), str(out))
    proc = subprocess.Popen([sys.executable, "-c", code], start_new_session=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    ep = out / "episodes.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and not (ep.is_file() and len(ep.read_text().splitlines()) >= 3):
        time.sleep(0.2)
    if sig == "SIGINT":
        os.killpg(proc.pid, signal.SIGINT)  # like Ctrl-C in a terminal: the whole process group
    else:
        os.kill(proc.pid, signal.SIGTERM)  # like a job scheduler: the driver only
    proc.wait(timeout=60)
    assert proc.returncode != 0
    res = json.loads((out / "eval.json").read_text())
    assert res["complete"] is False
    finished = len(ep.read_text().splitlines())
    assert 3 <= len(res["episodes"]) == finished < 40
    assert "Incomplete run" in (out / "eval.md").read_text()


def test_dead_worker_is_retried_then_recorded(tmp_path):
    from eval_fakes import dying_env_factory

    res = evaluate(make_noisy_reacher, "libero_object", [0, 1], 4, [0], tmp_path / "die", workers=2, video_episodes=0,
                   env_factory=dying_env_factory, progress=False, latency=False)
    assert len(res["episodes"]) == 8
    dead = [e for e in res["episodes"] if e["error"]]
    assert [(e["task"], e["init_state_index"]) for e in dead] == [(1, 2)]
    assert "WorkerDied" in dead[0]["error"]
    ok = _run(tmp_path, "ref", 0)  # the other episodes are unaffected by the crash
    ref = {(e["task"], e["seed"], e["trial"]): e["success"] for e in ok["episodes"] if not e["error"]}
    both = [e for e in res["episodes"] if not e["error"] and (e["task"], e["seed"], e["trial"]) in ref]
    assert len(both) == 6 and all(ref[(e["task"], e["seed"], e["trial"])] == e["success"] for e in both)


def test_validation_init_states_lie_in_the_posttrain_range_disjoint_from_training_and_eval():
    from world2act.envs import SEED_RANGES
    from world2act.evaluation.harness import episode_jobs
    from world2act.posttrain.loop import posttrain_seeds

    val = episode_jobs("metaworld", ["pick-place-v3", "assembly-v3"], 50, [0, 1], init_states="validation")
    ev = episode_jobs("metaworld", ["pick-place-v3", "assembly-v3"], 50, [0, 1])
    vs = {j.reset_seed for j in val}
    assert len(vs) == 200 and all(s in SEED_RANGES["posttrain"] for s in vs)
    assert not vs & {j.reset_seed for j in ev}
    train = set(posttrain_seeds("metaworld", "pick-place-v3", 1000)) | set(posttrain_seeds("metaworld", "assembly-v3", 1000))
    assert not vs & train
    lib = episode_jobs("libero_object", [0], 3, [0], init_states="validation")
    assert all(j.init_state_index is None and j.reset_seed in SEED_RANGES["posttrain"] for j in lib)
    with pytest.raises(World2ActError, match="init-states"):
        episode_jobs("metaworld", ["pick-place-v3"], 2, [0], init_states="test")
