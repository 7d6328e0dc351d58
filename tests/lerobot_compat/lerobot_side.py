"""The LeRobot side of the round-trip tests: run with a Python that has ``lerobot-dataset``.

    PYTHONPATH=tests/lerobot_compat/standin HF_HUB_OFFLINE=1 \
        /tmp/lrvenv/bin/python tests/lerobot_compat/lerobot_side.py load DIR OUT.json
    ... lerobot_side.py append DIR OUT.json        # LeRobot's writer appends one episode
    ... lerobot_side.py create DIR OUT.npz CODEC   # a dataset written by LeRobot itself

``ledataset`` (LeRobot's ``LeRobotDataset`` as a standalone package) cannot be installed in
the project's environment (it pins av<16, huggingface-hub<0.36, numpy, packaging), so the
tests run this script in a separate interpreter (``WORLD2ACT_LEROBOT_PYTHON``). It never
imports world2act. ``standin/`` provides the few torchvision names ``ledataset`` imports.
"""
from __future__ import annotations

import json
import os
import sys
import tempfile

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_CACHE", tempfile.mkdtemp(prefix="w2a-hf-"))

import numpy as np  # noqa: E402

FPS = 20
PNP = "pick up the alphabet soup and place it in the basket"
PNP2 = "pick up the cream cheese and place it in the basket"


def _open(root):
    from ledataset.datasets.lerobot_dataset import LeRobotDataset

    return LeRobotDataset(repo_id="local/x", root=root, video_backend="pyav")


def _arr(x):
    return np.asarray(x.numpy() if hasattr(x, "numpy") else x)


def load(root: str, out: str) -> None:
    """Open ``root`` with LeRobot's reader; report shapes, values and a 16-step action chunk."""
    from ledataset.datasets.compute_stats import aggregate_stats
    from ledataset.datasets.lerobot_dataset import LeRobotDataset

    ds = _open(root)
    meta = ds.meta
    rep: dict = {"num_episodes": ds.num_episodes, "num_frames": ds.num_frames, "fps": ds.fps,
                 "features": {k: list(v["shape"]) for k, v in ds.features.items()},
                 "names": {k: v.get("names") for k, v in ds.features.items()},
                 "video_keys": list(meta.video_keys), "tasks": list(meta.tasks.index)}
    rep["stats_shapes"] = {k: {s: list(np.asarray(v).shape) for s, v in d.items()} for k, d in meta.stats.items()}
    # LeRobot's own stats aggregation (what its writer runs when appending) accepts our stats
    agg = aggregate_stats([meta.stats, meta.stats])
    rep["aggregate_ok"] = sorted(agg) == sorted(meta.stats)
    eps = []
    for e in range(ds.num_episodes):
        ep = meta.episodes[e]
        lo, hi = int(ep["dataset_from_index"]), int(ep["dataset_to_index"])
        first, last = ds[lo], ds[hi - 1]
        rec = {"from": lo, "to": hi, "task": first["task"],
               "action_first": _arr(first["action"]).tolist(), "action_last": _arr(last["action"]).tolist(),
               "timestamp_last": float(_arr(last["timestamp"])), "frame_index_last": int(_arr(last["frame_index"]))}
        for k in meta.video_keys:  # decoded through the stand-in (PyAV), float CHW in [0, 1]
            rec[f"{k}/first_mean"] = (_arr(first[k]).mean(axis=(1, 2)) * 255).tolist()
            rec[f"{k}/last_mean"] = (_arr(last[k]).mean(axis=(1, 2)) * 255).tolist()
            rec[f"{k}/shape"] = list(_arr(first[k]).shape)
        eps.append(rec)
    rep["episodes"] = eps
    chunked = LeRobotDataset(repo_id="local/x", root=root, video_backend="pyav",
                             delta_timestamps={"action": [k / ds.fps for k in range(16)]})
    item = chunked[0]
    rep["chunk_shape"] = list(_arr(item["action"]).shape)
    rep["chunk_pad"] = _arr(item["action_is_pad"]).astype(int).tolist()
    with open(out, "w") as f:
        json.dump(rep, f)


def _frame_image(t: int, cam: int, H: int, W: int) -> np.ndarray:
    """A smooth test image whose colour encodes the frame number (survives lossy codecs)."""
    yy, xx = np.mgrid[:H, :W].astype(np.float32)
    img = np.stack([np.full((H, W), 20 + 13 * (t % 16), np.float32), 60 + 80 * yy / H + 40 * cam,
                    np.full((H, W), 90.0, np.float32) + 60 * xx / W], -1)
    return np.clip(img, 0, 255).astype(np.uint8)


def append(root: str, out: str) -> None:
    """Append one episode to ``root`` with LeRobot's writer (add_frame / save_episode)."""
    ds = _open(root)
    feats = ds.features
    n0 = ds.num_episodes
    T = 7
    rng = np.random.default_rng(0)
    actions = rng.uniform(-1, 1, (T, feats["action"]["shape"][0])).astype(np.float32)
    for t in range(T):
        frame = {"task": "appended by lerobot", "action": actions[t]}
        for k, f in feats.items():
            if k in ("action", "timestamp", "frame_index", "episode_index", "index", "task_index"):
                continue
            if f["dtype"] in ("video", "image"):
                H, W = f["shape"][0], f["shape"][1]
                frame[k] = _frame_image(t, 0, H, W)
            else:
                frame[k] = np.zeros(tuple(f["shape"]), dtype=f["dtype"])
        ds.add_frame(frame)
    ds.save_episode()
    ds.finalize()
    again = _open(root)
    with open(out, "w") as f:
        json.dump({"before": n0, "after": again.num_episodes, "frames": again.num_frames,
                   "actions": actions.tolist()}, f)


def create(root: str, out: str, codec: str) -> None:
    """A LIBERO-like dataset written by LeRobot: no gripper-width feature, gripper command in
    ``action[6]`` (+1 close), several episodes per data and video file, tasks as the index."""
    from ledataset.datasets.lerobot_dataset import LeRobotDataset

    H = W = 32
    features = {
        "action": {"dtype": "float32", "shape": (7,), "names": ["x", "y", "z", "roll", "pitch", "yaw", "gripper"]},
        "observation.state": {"dtype": "float32", "shape": (8,),
                              "names": {"motors": ["x", "y", "z", "rx", "ry", "rz", "finger_left", "finger_right"]}},
        "observation.images.image": {"dtype": "video", "shape": (H, W, 3), "names": ["height", "width", "channels"]},
        "observation.images.wrist_image": {"dtype": "video", "shape": (H, W, 3),
                                           "names": ["height", "width", "channels"]},
    }
    ds = LeRobotDataset.create(repo_id="local/y", fps=FPS, features=features, root=root, robot_type="panda",
                               use_videos=True, vcodec=codec)
    rng = np.random.default_rng(1)
    saved: dict[str, np.ndarray] = {}
    lengths = [40, 46, 52]
    for e, T in enumerate(lengths):
        task = PNP if e != 1 else PNP2
        close, open_ = 12 + e, 28 + e
        grip = np.where((np.arange(T) >= close) & (np.arange(T) < open_), 1.0, -1.0).astype(np.float32)
        actions = rng.uniform(-1, 1, (T, 7)).astype(np.float32)
        actions[:, 6] = grip
        # finger positions follow the command with a 2-frame lag (open 0.04, closed 0.01)
        finger = np.full(T, 0.04, np.float32)
        for t in range(T):
            finger[t] = 0.01 if grip[max(0, t - 2)] > 0 else 0.04
        states = rng.normal(size=(T, 8)).astype(np.float32)
        states[:, 6], states[:, 7] = finger, -finger
        for t in range(T):
            ds.add_frame({"task": task, "action": actions[t], "observation.state": states[t],
                          "observation.images.image": _frame_image(t, 0, H, W),
                          "observation.images.wrist_image": _frame_image(t, 1, H, W)})
        ds.save_episode(parallel_encoding=False)
        saved[f"actions_{e}"], saved[f"states_{e}"] = actions, states
    ds.finalize()
    saved["lengths"] = np.array(lengths)
    np.savez(out, **saved)


if __name__ == "__main__":
    cmd, args = sys.argv[1], sys.argv[2:]
    {"load": load, "append": append, "create": create}[cmd](*args)
