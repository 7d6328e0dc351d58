"""Crash safety: a writer killed at any point leaves a valid dataset of its completed episodes."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from world2act import World2ActError
from world2act.data import LeRobotDataset, LeRobotDatasetWriter
from world2act.data import lerobot as lerobot_mod
from world2act.data.lerobot import DATA_PATH

from .helpers import make_episode, make_spec

WRITER = textwrap.dedent("""
    import sys
    sys.path.insert(0, {tests!r})
    from data.helpers import make_episode, make_spec
    from world2act.data import LeRobotDatasetWriter
    w = LeRobotDatasetWriter({root!r}, make_spec(), resume=True)
    for i in range(w.num_episodes, 10_000):
        w.add_episode(make_episode(i, T=30))
""")


def _check_valid(root: Path) -> int:
    ds = LeRobotDataset(root)
    assert ds.info["total_episodes"] in (ds.num_episodes, ds.num_episodes - 1)
    for i in range(ds.num_episodes):
        e = ds.load_episode(i)
        ref = make_episode(i, T=30)
        np.testing.assert_array_equal(e.actions, ref.actions)
        assert e.meta == ref.meta and e.images["wrist"].shape == (30, 64, 64, 3)
    return ds.num_episodes


def test_sigkill_mid_write_then_resume(tmp_path):
    root = tmp_path / "ds"
    tests_dir = str(Path(__file__).resolve().parent.parent)
    script = WRITER.format(tests=tests_dir, root=str(root))
    counts = []
    # kill at a few different moments; each run resumes the previous one
    for delay in (0.013, 0.051, 0.097):
        proc = subprocess.Popen([sys.executable, "-c", script], stderr=subprocess.PIPE)
        try:
            deadline = time.time() + 60
            start_n = counts[-1] if counts else 0
            while time.time() < deadline:
                info = root / "meta" / "info.json"
                if info.exists() and json.loads(info.read_text())["total_episodes"] >= start_n + 2:
                    break
                assert proc.poll() is None, proc.stderr.read().decode()
                time.sleep(0.01)
            time.sleep(delay)
        finally:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
        counts.append(_check_valid(root))
    assert counts[0] >= 2 and counts == sorted(counts)
    n = counts[-1]
    w = LeRobotDatasetWriter(root, make_spec(), resume=True)
    assert w.add_episode(make_episode(n, T=30)) == n
    w.finalize()
    assert _check_valid(root) == n + 1
    assert not [p for p in root.rglob(".*.tmp*")]  # leftovers of killed writes were cleaned


def test_exception_mid_episode_leaves_orphan_that_is_ignored(tmp_path, monkeypatch):
    root = tmp_path / "ds"
    w = LeRobotDatasetWriter(root, make_spec())
    w.add_episode(make_episode(0, T=30))

    def boom(*a, **k):
        raise World2ActError("disk full")

    monkeypatch.setattr(lerobot_mod, "write_video", boom)
    with pytest.raises(World2ActError, match="disk full"):
        w.add_episode(make_episode(1, T=30))
    assert (root / DATA_PATH.format(chunk_index=0, file_index=1)).exists()  # orphan data file
    assert w.num_episodes == 1 and _check_valid(root) == 1
    monkeypatch.undo()
    w2 = LeRobotDatasetWriter(root, make_spec(), resume=True)
    assert w2.add_episode(make_episode(1, T=30)) == 1
    assert _check_valid(root) == 2
