"""A parent process for ``tests/test_procs.py``: opens one worker-pool layer with a workload that
blocks forever; every worker writes ``<pid>.pid`` into the output folder once it is busy.

Usage: ``python orphan_parent.py {run_jobs,eval,vector,pipeline} OUT_DIR``
(``W2A_ORPHAN_OUT`` = OUT_DIR); ``pipeline`` runs one stage (this script's ``stage`` layer) that
records its own pid and starts one blocked worker. Run as a script: spawned
workers re-import this file as ``__mp_main__``, so the patch below reaches them too.
"""
import os
import sys
import time
from pathlib import Path

import world2act.envs.parallel as parallel

OUT = Path(os.environ.get("W2A_ORPHAN_OUT", "."))


def block(_=None):
    """Record this process's pid, then block (a long episode / rollout)."""
    (OUT / f"{os.getpid()}.pid").write_text(str(os.getpid()))
    time.sleep(600)


class BlockingEnv:
    """Just enough of an environment for the eval harness and VectorEnv: reset blocks."""

    cameras = ("agentview",)
    action_dim = 7
    max_steps = 10

    def reset(self, **kw):
        block()

    def close(self):
        pass


def env_factory(benchmark, task, camera_size, cameras):
    return BlockingEnv()


def make_policy():
    sys.path.insert(0, str(Path(__file__).parent / "evaluation"))
    from eval_fakes import NoisyReacher

    return NoisyReacher()


parallel._build_env = lambda spec: BlockingEnv()  # in the parent and (as __mp_main__) in every worker


if __name__ == "__main__":
    layer = sys.argv[1]
    if layer == "run_jobs":
        parallel.run_jobs(block, [0, 1], workers=2)
    elif layer == "eval":
        from world2act.evaluation import evaluate

        evaluate(make_policy, "libero_object", [0, 1], 2, [0], OUT / "eval", workers=2, video_episodes=0,
                 env_factory=env_factory, progress=False, latency=False)
    elif layer == "vector":
        with parallel.VectorEnv("metaworld", ["door-open-v3", "door-open-v3"], workers=2) as venv:
            venv.reset([dict(seed=0), dict(seed=1)])
    elif layer == "pipeline":  # pipeline -> a stage subprocess -> its run_jobs worker
        from world2act.pipeline import Stage, run_pipeline

        def preset():
            return [Stage("s", "stage", [], [], program=[sys.executable, __file__])], {"description": "orphans"}

        run_pipeline(preset, OUT / "pipe", max_parallel=1)
    elif layer == "stage":  # run by the pipeline layer: record this stage's pid, then one blocked worker
        (OUT / f"{os.getpid()}.pid").write_text(str(os.getpid()))
        parallel.run_jobs(block, [0], workers=1)
    else:
        raise SystemExit(f"unknown layer {layer}")
