"""How far a fitted residual's chunks are from the expert's on a given set of rollouts (issue 15).

    python scripts/dagger_own_error.py --align runs/mw/align POLICY DATA [POLICY DATA ...]

POLICY is a residual policy folder (``scripts/dagger_oracle.py fit``), DATA a rollout file of
``scripts/dagger_oracle.py collect`` (e.g. the policy's *own* rollouts, to measure how well its
correction holds on the states it visits). Prints one JSON line per pair: mean |·| per element
(normalised action units, executed action space) of base − expert and corrected − expert, the
same for the gripper dimension, and the cosine between the correction Δa and expert − base.
"""
from __future__ import annotations

import argparse
import json

import torch
from safetensors.torch import load_file


def main() -> None:
    from world2act.align import AlignmentBundle
    from world2act.policies.residual import ResidualPolicy
    from world2act.posttrain.loop import executed_action_space

    from dagger_oracle import chunk_errors  # this folder's script

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--align", required=True, help="Stage 1 folder (its action normaliser)")
    ap.add_argument("--benchmark", default="metaworld")
    ap.add_argument("pairs", nargs="+", metavar="POLICY DATA")
    a = ap.parse_args()
    if len(a.pairs) % 2:
        ap.error("give POLICY DATA pairs")
    torch.set_num_threads(1)
    space = executed_action_space(AlignmentBundle.load(a.align))
    for pol_dir, data in zip(a.pairs[::2], a.pairs[1::2]):
        pol = ResidualPolicy.load(pol_dir, benchmark=a.benchmark)
        net, (m, s) = pol.residual.eval(), pol.state_norm()
        d = load_file(data)
        idx = d["valid"].bool().nonzero()
        parts: dict[str, list] = {}
        with torch.no_grad():
            for i in range(0, len(idx), 512):
                n, t = idx[i:i + 512, 0], idx[i:i + 512, 1]
                b, e = d["base_chunks"][n, t], d["relabels"][n, t]
                delta = net(d["images"][n, t].float() / 255, (d["states"][n, t] - m) / s, b)
                for k, v in chunk_errors(space, b, delta, e).items():
                    parts.setdefault(k, []).append(v)
        print(json.dumps({"policy": pol_dir, "data": data, "chunks": len(idx)}
                         | {k: round(float(torch.cat(v).nan_to_num().mean()), 3) for k, v in parts.items()}))


if __name__ == "__main__":
    main()
