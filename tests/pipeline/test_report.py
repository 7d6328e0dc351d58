"""The pipeline report: paired base vs World2Act comparison from eval.json files."""
import json

import pytest

from world2act.report import paired_difference, write_report


def _eval(successes, errors=0):
    eps = [{"task": 0, "seed": 0, "trial": i, "success": s} for i, s in enumerate(successes)]
    sr = sum(successes) / len(successes)
    return {"per_task": {"0": {"success_rate": sr, "ci95": [0.1, 0.9], "n_trials": len(successes), "n_errors": errors,
                               "instruction": "pick up the soup"}},
            "overall": {"success_rate": sr, "ci95": [0.1, 0.9], "seed_std": 0.0},
            "episodes": eps, "latency": {"ms_per_chunk": 10.0, "ms_per_action": 0.625, "hz": 1600.0}}


def test_paired_difference_counts_fixed_and_broken_episodes():
    d = paired_difference(_eval([0, 0, 1, 1]), _eval([1, 0, 1, 0]))
    assert d["n"] == 4 and d["diff"] == pytest.approx(0.0)
    assert (d["improved"], d["regressed"]) == (1, 1)
    assert d["mcnemar_p"] == 1.0 and d["per_task"]["0"]["fixed"] == 1
    d = paired_difference(_eval([0, 0, 0, 0]), _eval([1, 1, 1, 1]))
    assert d["diff"] == 1.0 and d["ci95"][0] == pytest.approx(1.0)
    assert d["mcnemar_p"] == pytest.approx(0.125)  # 4 of 4 fixed: 2 / 16, not significant


def test_report_tables_and_missing_parts(tmp_path):
    for name, s in (("eval-base", [0, 1, 0, 0]), ("eval-posttrained", [1, 1, 0, 1])):
        (tmp_path / name).mkdir()
        (tmp_path / name / "eval.json").write_text(json.dumps(_eval(s)))
    summary = write_report(tmp_path, preset="t", preset_meta={}, timings={"demos": {"status": "ran", "wall_s": 1.5}})
    text = (tmp_path / "report.md").read_text()
    assert "| pick up the soup | 0.250 |" in text and "| 0.750 |" in text
    assert summary["success"]["paired_difference"]["diff"] == pytest.approx(0.5)
    assert "(metrics missing)" in text  # no wm/align/posttrain folders: reported, not invented
    assert summary["residual_latency_overhead"] == pytest.approx(0.0)
    # 2 fixed, 0 broken: exact McNemar p = 2 · 0.5² = 0.5, so no claim even though the mean moved
    assert summary["success"]["paired_difference"]["mcnemar_p"] == pytest.approx(0.5)
    assert "McNemar exact p = 0.5 (2 episodes fixed, 0 broken)" in summary["headline"]
    assert "World2Act is not distinguishable from the base" in summary["headline"]
    assert "| pick up the soup | 4 | 0.250 | 0.750 | +0.500 | 2 | 0 | 0.5 |" in text  # per-task paired table


def test_report_verdict_needs_ci_and_mcnemar(tmp_path):
    # 12 of 12 paired episodes fixed: CI above 0 and p = 2/4096 → "better than"
    for name, s in (("eval-base", [0] * 12), ("eval-posttrained", [1] * 12)):
        (tmp_path / name).mkdir()
        (tmp_path / name / "eval.json").write_text(json.dumps(_eval(s)))
    summary = write_report(tmp_path, preset="t", preset_meta={}, timings={})
    assert summary["verdict"] == "better than"
    assert summary["success"]["paired_difference"]["mcnemar_p"] == pytest.approx(2 / 4096)
    assert "World2Act is better than the base at this budget" in summary["headline"]
    assert "p < 0.05" in (tmp_path / "report.md").read_text()


def test_report_flags_latency_timed_on_a_busy_machine(tmp_path):
    for name, load in (("eval-base", 0.0), ("eval-posttrained", 1.4)):
        ev = _eval([0, 1])
        ev["latency"]["other_load_cores"] = load
        (tmp_path / name).mkdir()
        (tmp_path / name / "eval.json").write_text(json.dumps(ev))
    write_report(tmp_path, preset="t", preset_meta={}, timings={})
    text = (tmp_path / "report.md").read_text()
    assert "base + World2Act: Timed while other processes kept 1.4 CPU core(s) busy" in text
    assert "base: Timed" not in text


def test_report_shows_stage2_warnings(tmp_path):
    (tmp_path / "posttrain").mkdir()
    (tmp_path / "posttrain" / "metrics.json").write_text(json.dumps(
        {"iterations": 3, "pos_cos_last": 0.1, "warnings": ["the residual's mean |Δa| reached 2.00 normalised units"]}))
    write_report(tmp_path, preset="t", preset_meta={}, timings={})
    text = (tmp_path / "report.md").read_text()
    assert "> **Warning:** the residual's mean |Δa| reached 2.00" in text and "| pos_cos_last | 0.1000 |" in text
