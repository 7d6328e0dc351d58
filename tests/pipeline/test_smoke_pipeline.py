"""End to end: `world2act pipeline --preset smoke` runs every stage and writes the report.

Issue 7: CI runs the smoke pipeline end to end (≤ 8 min on 2 cores). This also checks the
artifacts each later stage depends on and that a re-run skips every finished stage.
"""
import json
import os
import shutil
import subprocess
import sys

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.sim]


def test_smoke_pipeline_end_to_end(tmp_path):
    out = tmp_path / "smoke"
    env = dict(os.environ, MUJOCO_GL="egl", PYOPENGL_PLATFORM="egl", HF_HUB_OFFLINE="1")
    cmd = [sys.executable, "-m", "world2act", "pipeline", "--preset", "smoke", "--out", str(out)]
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=1500)
    assert r.returncode == 0, r.stderr[-2000:]
    for stage in ("demos", "skills", "wm", "base", "align", "posttrain", "eval-base", "eval-posttrained"):
        assert (out / stage / "pipeline_stage.json").is_file(), stage
    summary = json.loads((out / "summary.json").read_text())
    pd = summary["success"]["paired_difference"]
    assert pd["n"] == 2  # 1 task x 2 trials x 1 seed, paired between base and post-trained
    assert 0.0 <= pd["base_sr"] <= 1.0 and 0.0 <= pd["post_sr"] <= 1.0
    assert summary["skills"]["sync_rate"] > 0
    report = (out / "report.md").read_text()
    assert "Success rate: base vs base + World2Act" in report and "Wall time per stage" in report

    from world2act.policies.io import load_policy
    from world2act.policies.residual import ResidualPolicy

    post = load_policy(out / "posttrain" / "policy", benchmark="libero_object")
    assert isinstance(post, ResidualPolicy) and post.chunk_size == 16
    curves = (out / "posttrain" / "curves.jsonl").read_text().splitlines()
    assert len(curves) == 2 and all("pos_cos" in json.loads(c) for c in curves)

    r2 = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)  # everything up to date
    assert r2.returncode == 0 and r2.stderr.count("up to date, skipped") == 8, r2.stderr[-1000:]

    # Stage 2 over two tasks: the same workers switch simulators between iterations (VectorEnv.set_tasks)
    two = tmp_path / "posttrain-2tasks"
    shutil.copytree(out / "posttrain" / "imagined", two / "imagined")  # task 0's imagined targets are reused
    cmd2 = [sys.executable, "-m", "world2act", "post-train", "--policy", str(out / "base"), "--wm", str(out / "wm"),
            "--align", str(out / "align"), "--benchmark", "libero_object", "--tasks", "0,1", "--iterations", "3",
            "--num-envs", "2", "--init-states", "2", "--out", str(two), "--resume", "max_chunks=1",
            "updates_per_round=3", "replay=8", "head=latent"]
    r3 = subprocess.run(cmd2, capture_output=True, text=True, env=env, timeout=600)
    assert r3.returncode == 0, r3.stderr[-2000:]
    rows = [json.loads(c) for c in (two / "curves.jsonl").read_text().splitlines()]
    assert [(c["task"], c["errors"]) for c in rows] == [("0", 0), ("1", 0), ("0", 0)]
    assert [c["optimizer_steps"] for c in rows] == [3, 3, 3]  # updates_per_round, drawn from the replay
    assert json.loads((two / "policy" / "config.json").read_text())["residual"]["head"] == "latent"
