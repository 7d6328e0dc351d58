"""Same base policy, same reset seeds: Stage 2's rollout() (VectorEnv) vs the evaluation harness (issue 15).

    python scripts/rollout_vs_eval.py   # needs runs/demo/{base,align} and runs/lib/val-base
                                        # (world2act eval ... --init-states validation --out runs/lib/val-base)

Found the LIBERO set_tasks rendering bug (docs/results.md): 20/32 in evaluation vs 9/32 in rollout() before the fix.
"""
import json
import time

from world2act.align import AlignmentBundle
from world2act.envs.parallel import VectorEnv
from world2act.policies.io import load_policy
from world2act.policies.residual import ResidualPolicy
from world2act.posttrain.loop import base_max_steps, rollout
from world2act.utils.seeding import torch_threads


def main():
    recs = [json.loads(l) for l in open("runs/lib/val-base/episodes.jsonl")]
    base = load_policy("runs/demo/base", benchmark="libero_object")
    bundle = AlignmentBundle.load("runs/demo/align")
    pol = ResidualPolicy.create(base, bundle, camera=base.cameras[0], align_dir="runs/demo/align")
    K, cams = int(base.chunk_size), tuple(base.cameras)
    out = []
    venv = None
    t0 = time.time()
    for task in ["0", "1", "2", "3"]:
        rs = [r for r in recs if str(r["task"]) == task][:8]
        T = -(-base_max_steps("libero_object", task) // K)  # ceil: the whole budget
        if venv is None:
            venv = VectorEnv("libero_object", [task] * len(rs), workers=2, camera_size=tuple(base.image_size), cameras=cams)
        else:
            venv.set_tasks([task] * len(rs))
        venv.reset([dict(seed=int(r["reset_seed"])) for r in rs])
        pol.reset(); pol.seed(0)
        with torch_threads(1):
            ro = rollout(venv, pol, T, base.cameras[0], cams)
        for r, s in zip(rs, ro["success"]):
            out.append((task, r["reset_seed"], bool(r["success"]), bool(s)))
        print(task, "eval", sum(r["success"] for r in rs), "rollout", int(ro["success"].sum()), f"{time.time()-t0:.0f}s", flush=True)
    venv.close()
    e = sum(o[2] for o in out); ro_ = sum(o[3] for o in out)
    print(json.dumps({"episodes": len(out), "eval_success": e, "rollout_success": ro_, "both": sum(o[2] and o[3] for o in out)}))


if __name__ == "__main__":
    main()
