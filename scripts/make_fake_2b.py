#!/usr/bin/env python
"""Write a random-weight Cosmos-Predict2-2B-Video2World folder (the real diffusers layout and
configuration) for exercising ``--pretrained`` without the download or a GPU.

    python scripts/make_fake_2b.py --out /tmp/fake2b                 # full 28 layers, bf16, ~4.5 GB
    python scripts/make_fake_2b.py --out /tmp/fake2b-1 --num-layers 1  # real widths, 1 layer (smoke)
"""
import argparse
import json
import resource
import sys

from world2act import World2ActError
from world2act.worldmodel.fake2b import DTYPES, make_fake_checkpoint


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True)
    p.add_argument("--num-layers", type=int, default=None, help="transformer depth (default 28, the real one)")
    p.add_argument("--dtype", default="bfloat16", choices=list(DTYPES))
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()
    try:
        info = make_fake_checkpoint(a.out, num_layers=a.num_layers, dtype=a.dtype, seed=a.seed)
    except World2ActError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    info["peak_rss_gb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20, 2)
    print(json.dumps(info))
    return 0


if __name__ == "__main__":
    sys.exit(main())
