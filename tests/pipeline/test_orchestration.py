"""Pipeline orchestration: skip up-to-date stages, resume interrupted ones, propagate changes."""
import sys
import time
from pathlib import Path

import pytest

from world2act import World2ActError
from world2act.pipeline import Stage, run_pipeline

FAKE = [sys.executable, str(Path(__file__).with_name("fake_stage.py"))]


def make_preset(tmp_path, b_arg="x"):
    flag = tmp_path / "crash-b"

    def preset():
        return [
            Stage("a", "a", [], [], program=FAKE),
            Stage("b", "b", ["--fail-if", str(flag), "--tag", b_arg], ["a"], program=FAKE),
            Stage("c", "c", [], ["b"], program=FAKE),
        ], {"description": "test"}

    return preset, flag


def calls(out):
    return (out / "calls.txt").read_text().split("\n")[:-1]


def test_crash_resume_skip_and_change(tmp_path):
    out = tmp_path / "run"
    preset, flag = make_preset(tmp_path)
    flag.write_text("1")
    with pytest.raises(World2ActError, match=r"stage b failed.*logs/b.log"):
        run_pipeline(preset, out)
    assert calls(out) == ["a fresh", "b fresh"]
    flag.unlink()
    run_pipeline(preset, out)  # a skipped, b resumed (partial output present), c fresh
    assert calls(out)[2:] == ["b resume", "c fresh"]
    run_pipeline(preset, out)  # everything up to date
    assert len(calls(out)) == 4
    assert (out / "report.md").is_file() and (out / "summary.json").is_file()
    preset2, _ = make_preset(tmp_path, b_arg="y")  # b's arguments change: b and c re-run from scratch
    run_pipeline(preset2, out)
    assert calls(out)[4:] == ["b fresh", "c fresh"]
    assert not (out / "b" / "partial.txt").exists()


def test_unknown_preset_lists_valid():
    with pytest.raises(World2ActError, match="valid: smoke, quick, paper"):
        run_pipeline("huge", "/tmp/never")


def test_independent_stages_run_concurrently(tmp_path):
    def preset():
        return [
            Stage("a", "a", [], [], program=FAKE),
            Stage("b", "b", ["--sleep", "2"], ["a"], program=FAKE),
            Stage("c", "c", ["--sleep", "2"], ["a"], program=FAKE),
            Stage("d", "d", [], ["b", "c"], program=FAKE),
        ], {}

    t = time.time()
    run_pipeline(preset, tmp_path / "p", max_parallel=2)
    parallel_wall = time.time() - t
    assert calls(tmp_path / "p")[0] == "a fresh" and calls(tmp_path / "p")[-1] == "d fresh"
    assert parallel_wall < 3.6  # b and c overlapped (sequentially ≥ 4 s)
    t = time.time()
    run_pipeline(preset, tmp_path / "s", max_parallel=1)
    assert time.time() - t >= 4.0
