"""A procedural stand-in for a LIBERO-Object skill dataset (used only when the real one is missing).

Writes a LeRobot v3 *skill* dataset: a 2-D table seen from above (``agentview``) and a crop
around the gripper (``wrist``), both ``S×S`` uint8. Each demonstration picks one of ``n_objects``
coloured objects and places it in a basket; it is cut into two skill clips, "pick up the <obj>"
(move to the object, close the gripper) and "place the <obj> in the basket" (carry, open).
Actions are 7-D like LIBERO's (dx, dy, dz, 0, 0, 0, grip ±1), rendered frame = state before the
action (LeRobot row convention). Object layouts and noise differ per demonstration, so clips of
one skill differ between demonstrations (hard negatives are meaningful).

Usage: .venv/bin/python benchmarks/align_proxy_skills.py OUT [--demos-per-object 8] [--objects 5]
"""
from __future__ import annotations

import argparse

import numpy as np

COLORS = [(230, 60, 60), (60, 200, 60), (60, 90, 230), (230, 200, 40), (200, 60, 200), (40, 200, 200)]
NAMES = ["alphabet soup", "cream cheese", "salad dressing", "bbq sauce", "ketchup", "tomato sauce"]


def render(pos, objs, held, basket, size):
    img = np.full((size, size, 3), 120, np.uint8)
    yy, xx = np.mgrid[0:size, 0:size] / size

    def disc(c, r, col):
        m = (xx - c[0]) ** 2 + (yy - c[1]) ** 2 < r ** 2
        img[m] = col

    bx, by = basket
    img[(abs(xx - bx) < 0.12) & (abs(yy - by) < 0.12)] = (140, 90, 40)
    for k, o in enumerate(objs):
        if held != k:
            disc(o, 0.06, COLORS[k])
    g = (40, 40, 40) if held is None else COLORS[held]
    disc(pos[:2], 0.04 + 0.03 * pos[2], g)  # higher gripper looks bigger
    return img


def wrist(img_full, pos, size):
    s = size
    pad = np.pad(img_full, ((s // 2, s // 2), (s // 2, s // 2), (0, 0)), constant_values=60)
    cx, cy = int(pos[0] * s) + s // 2, int(pos[1] * s) + s // 2
    crop = pad[cy - s // 4: cy + s // 4, cx - s // 4: cx + s // 4]
    return np.repeat(np.repeat(crop, 2, 0), 2, 1)[:s, :s]


def demo(rng, target, n_objects, size):
    objs = [rng.uniform(0.15, 0.85, 2) for _ in range(n_objects)]
    basket = rng.uniform([0.2, 0.2], [0.8, 0.8])
    pos = np.array([*rng.uniform(0.3, 0.7, 2), 1.0])
    held = None
    frames, acts, cut = [], [], None
    vmax = rng.uniform(0.005, 0.009)  # per-demo speed
    phases = [("reach", objs[target]), ("grasp", None), ("carry", basket), ("release", None)]
    for name, goal in phases:
        n = 0
        while True:
            a = np.zeros(7, np.float32)
            if name in ("reach", "carry"):
                d = goal - pos[:2]
                a[:2] = np.clip(d * 0.2, -vmax, vmax) + rng.normal(0, 0.001, 2)
                a[2] = -0.03 if name == "reach" else 0.03
                a[6] = -1.0 if name == "reach" else 1.0
                done = np.linalg.norm(d) < 0.015 or n > 150
            else:
                a[2] = 0.0
                a[6] = 1.0 if name == "grasp" else -1.0
                done = n >= 8
            full = render(pos, objs, held, basket, size)
            frames.append((full, wrist(full, pos, size)))
            acts.append(a)
            pos = pos + np.array([a[0], a[1], a[2]])
            pos[2] = np.clip(pos[2], 0.0, 1.0)
            n += 1
            if done:
                break
        if name == "grasp":
            held = target
            cut = len(acts)
        if name == "release":
            objs[target] = basket.copy()
            held = None
    return frames, np.stack(acts), cut


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("out")
    p.add_argument("--objects", type=int, default=5)
    p.add_argument("--demos-per-object", type=int, default=8)
    p.add_argument("--size", type=int, default=32)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    from world2act.data import DatasetSpec, Episode, LeRobotDatasetWriter

    rng = np.random.default_rng(args.seed)
    spec = DatasetSpec(fps=20, action_dim=7, state_dim=3, cameras=("agentview", "wrist"),
                       image_size=(args.size, args.size), benchmark="proxy_object")
    src = 0
    with LeRobotDatasetWriter(args.out, spec, overwrite=True) as w:
        for obj in range(args.objects):
            for _ in range(args.demos_per_object):
                frames, acts, cut = demo(rng, obj, args.objects, args.size)
                instr = f"pick up the {NAMES[obj]} and place it in the basket"
                for k, (lo, hi, prompt) in enumerate([(0, cut, f"pick up the {NAMES[obj]}"),
                                                      (cut, len(acts), f"place the {NAMES[obj]} in the basket")]):
                    T = hi - lo
                    imgs = {"agentview": np.stack([f[0] for f in frames[lo:hi]]),
                            "wrist": np.stack([f[1] for f in frames[lo:hi]])}
                    w.add_episode(Episode(task=prompt, actions=acts[lo:hi], states=np.zeros((T, 3), np.float32),
                                          gripper_width=np.zeros(T, np.float32), images=imgs,
                                          meta={"source_episode": src, "frame_from": lo, "frame_to": hi,
                                                "skill_index": k, "instruction": instr}))
                src += 1
    print(f"wrote {args.out}: {src} demonstrations, {2 * src} skill clips")


if __name__ == "__main__":
    main()
