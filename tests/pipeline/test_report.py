"""The pipeline report: paired base vs World2Act comparison first, one figure per stage, raw
metrics in an appendix, interleaved latency; missing stages never crash it (issues 7 and 18)."""
import json
import re

import pytest

from world2act.pipeline import measure_paired_latency
from world2act.report import SECTIONS, paired_difference, write_report


def _eval(successes, errors=0, videos=()):
    eps = [{"task": 0, "seed": 0, "trial": i, "success": s} for i, s in enumerate(successes)]
    sr = sum(successes) / len(successes)
    return {"per_task": {"0": {"success_rate": sr, "ci95": [0.1, 0.9], "n_trials": len(successes), "n_errors": errors,
                               "instruction": "pick up the soup"}},
            "overall": {"success_rate": sr, "ci95": [0.1, 0.9], "seed_std": 0.0},
            "episodes": eps, "latency": {"ms_per_chunk": 10.0, "ms_per_action": 0.625, "hz": 1600.0},
            "videos": list(videos)}


def _write_evals(out, base, post, videos=()):
    for name, s in (("eval-base", base), ("eval-posttrained", post)):
        (out / name / "videos").mkdir(parents=True)
        (out / name / "eval.json").write_text(json.dumps(_eval(s, videos=videos)))
        for v in videos:
            (out / name / "videos" / v).write_bytes(b"\x00")


PAIRED_LATENCY = {"reference": "base", "n": 4, "warmup": 1, "batch": 1, "threads": 1, "order": "interleaved, alternating",
                  "other_load_cores": 0.0, "ratio": 1.05, "ratio_ci95": [1.02, 1.09],
                  "ratios": {"base + World2Act": {"median": 1.05, "ci95": [1.02, 1.09], "overhead": 0.05}},
                  "policies": {"base": {"ms_per_chunk": 20.0, "ms_per_chunk_p10": 19.0, "ms_per_chunk_p90": 22.0,
                                        "ms_per_action": 1.25, "hz": 800.0, "chunk_size": 16,
                                        "times_ms": [20.0, 19.0, 21.0, 22.0]},
                               "base + World2Act": {"ms_per_chunk": 21.0, "ms_per_chunk_p10": 20.0,
                                                    "ms_per_chunk_p90": 23.0, "ms_per_action": 1.3125, "hz": 761.9,
                                                    "chunk_size": 16, "times_ms": [21.0, 20.0, 22.0, 23.0]}}}


def _full_run(out):
    """Every stage's artifacts, faked: eval results with videos, skills, wm, align, posttrain, latency."""
    _write_evals(out, [0, 1, 0, 0], [1, 1, 0, 1], videos=["task0_seed0_trial0.mp4"])
    (out / "skills" / "meta").mkdir(parents=True)
    (out / "skills" / "meta" / "skill_stats.json").write_text(json.dumps(
        {"episodes_in": 4, "episodes_synced": 4, "sync_rate": 1.0, "clips_out": 8, "discard_reasons": {},
         "lengths": {"unit": "frames", "before": {"median": 90.0, "cv": 0.3}, "after": {"median": 45.0, "cv": 0.38}}}))
    (out / "skills" / "meta" / "skill_lengths.png").write_bytes(b"png")
    (out / "skills" / "videos" / "observation.images.agentview" / "chunk-000").mkdir(parents=True)
    (out / "skills" / "videos" / "observation.images.agentview" / "chunk-000" / "file-000.mp4").write_bytes(b"\x00")
    (out / "wm" / "strips").mkdir(parents=True)
    (out / "wm" / "strips" / "episode_000001.png").write_bytes(b"png")
    (out / "wm" / "metrics.json").write_text(json.dumps(
        {"model": "tiny", "steps": 20, "n_train_clips": 6, "val_loss_start": {"mean": 2.0}, "val_loss_end": {"mean": 0.6},
         "heldout_generation": {"n_clips": 1, "psnr": 18.4, "ssim": 0.55, "baseline_repeat_first_psnr": 17.7,
                                "baseline_repeat_first_ssim": 0.68}}))
    (out / "align").mkdir()
    (out / "align" / "metrics.json").write_text(json.dumps(
        {"variant": "bi_infonce", "heldout": {"n": 14, "chance": 0.07, "top1_v2a": 0.93, "top1_a2v": 0.86, "pos_cos": 0.59,
                                               "hard_neg_cos": 0.11, "top1_v2a_same_skill": 0.9,
                                               "top1_a2v_same_skill": 0.85, "chance_same_skill": 0.36},
         "heldout_at_init": {"n": 14, "top1_v2a": 0.07, "top1_a2v": 0.07}}))
    (out / "align" / "loss_curves.png").write_bytes(b"png")
    (out / "posttrain" / "imagined").mkdir(parents=True)
    (out / "posttrain" / "metrics.json").write_text(json.dumps(
        {"iterations": 3, "pos_cos_first": 0.3, "pos_cos_last": 0.4, "rollout_success_rate_first": 0.25,
         "rollout_success_rate_last": 0.5, "warnings": []}))
    (out / "posttrain" / "curves.png").write_bytes(b"png")
    (out / "posttrain" / "imagined" / "0_7.mp4").write_bytes(b"\x00")
    (out / "latency_paired.json").write_text(json.dumps(PAIRED_LATENCY))


def _headings(text, level="## "):
    return [line[len(level):] for line in text.splitlines() if line.startswith(level)]


def test_paired_difference_counts_fixed_and_broken_episodes():
    d = paired_difference(_eval([0, 0, 1, 1]), _eval([1, 0, 1, 0]))
    assert d["n"] == 4 and d["diff"] == pytest.approx(0.0)
    assert (d["improved"], d["regressed"]) == (1, 1)
    assert d["mcnemar_p"] == 1.0 and d["per_task"]["0"]["fixed"] == 1
    d = paired_difference(_eval([0, 0, 0, 0]), _eval([1, 1, 1, 1]))
    assert d["diff"] == 1.0 and d["ci95"][0] == pytest.approx(1.0)
    assert d["mcnemar_p"] == pytest.approx(0.125)  # 4 of 4 fixed: 2 / 16, not significant


def test_report_section_order_decision_first_appendix_last(tmp_path):
    _full_run(tmp_path)
    summary = write_report(tmp_path, preset="t", preset_meta={"description": "a test run"},
                           timings={"demos": {"status": "ran", "wall_s": 1.5}})
    text = (tmp_path / "report.md").read_text()
    assert _headings(text) == list(SECTIONS)  # success/paired test first, appendix last, nothing after it
    assert _headings(text, "### ")[:1] == ["Paired difference (base + World2Act − base)"]
    assert _headings(text, "### ")[1:] == ["Demonstrations and skill dataset", "Skill-compositional world model",
                                          "Stage 1: video–action alignment", "Stage 2: latent action post-training"]
    # the paired test (difference, interval, McNemar p, verdict) comes before any figure or raw table
    i_paired = text.index("| 4 | **+0.500** | ")
    assert i_paired < text.index("![") < text.index("## Inference speed") < text.index("| metric | value |")
    assert text.index("<details>") > text.index("## Appendix: raw metrics")
    assert "**not distinguishable from** the base" in text
    assert text.index("**Verdict: World2Act is not distinguishable from the base") < text.index("## Success rate")
    # one figure per stage, relative paths; videos as playable mp4 links
    for fig in ("report_figures/success.png", "skills/meta/skill_lengths.png", "wm/strips/episode_000001.png",
                "report_figures/stage1_retrieval.png", "posttrain/curves.png", "report_figures/latency.png"):
        assert f"]({fig})" in text, fig
    assert (tmp_path / "report_figures" / "stage1_retrieval.png").stat().st_size > 1000
    for vid in ("eval-base/videos/task0_seed0_trial0.mp4", "eval-posttrained/videos/task0_seed0_trial0.mp4",
                "skills/videos/observation.images.agentview/chunk-000/file-000.mp4", "posttrain/imagined/0_7.mp4"):
        assert f"]({vid})" in text, vid
    assert not re.search(r"\]\(/", text)  # no absolute paths
    # raw dicts: in the appendix and in summary.json, not in the body
    assert text.index("| heldout.top1_v2a | 0.9300 |") > text.index("## Appendix")
    assert summary["align"]["heldout"]["top1_v2a"] == 0.93
    saved = json.loads((tmp_path / "summary.json").read_text())
    assert saved["wm"]["steps"] == 20 and saved["success"]["paired_difference"]["n"] == 4


def test_missing_stages_do_not_crash(tmp_path):
    summary = write_report(tmp_path, preset="t", preset_meta={}, timings={})  # nothing ran
    text = (tmp_path / "report.md").read_text()
    assert _headings(text) == list(SECTIONS)
    for note in ("*Not run: no `eval-base/eval.json`", "*Not run: no `wm/metrics.json`.*", "*Not run: no `align/metrics.json`.*",
                 "*Not run: no `posttrain/metrics.json`.*", "*Not measured: no `latency_paired.json`"):
        assert note in text, note
    assert summary["residual_latency_overhead"] is None and "headline" not in summary
    # only the base evaluation, unreadable wm metrics, malformed align metrics, an empty eval.json
    (tmp_path / "eval-base").mkdir()
    (tmp_path / "eval-base" / "eval.json").write_text(json.dumps(_eval([0, 1])))
    (tmp_path / "wm").mkdir()
    (tmp_path / "wm" / "metrics.json").write_text("{truncated")
    (tmp_path / "align").mkdir()
    (tmp_path / "align" / "metrics.json").write_text(json.dumps({"heldout": "oops"}))
    (tmp_path / "eval-posttrained").mkdir()
    (tmp_path / "eval-posttrained" / "eval.json").write_text("{}")
    (tmp_path / "latency_paired.json").write_text(json.dumps({"error": "RuntimeError: boom"}))
    write_report(tmp_path, preset="t", preset_meta={}, timings={})
    text = (tmp_path / "report.md").read_text()
    assert _headings(text) == list(SECTIONS)
    assert "*Only `eval-base` ran; no comparison.*" in text and "| pick up the soup | 0.500 |" in text
    assert "*Not run: no `wm/metrics.json`.*" in text
    assert "could not be read (AttributeError" in text  # the malformed align dict: one line, no crash
    assert "*Paired timing failed: RuntimeError: boom*" in text


def test_missing_policies_skip_the_paired_timing(tmp_path):
    (tmp_path / "latency_paired.json").write_text("{}")
    assert measure_paired_latency(tmp_path, key="x") is None
    assert not (tmp_path / "latency_paired.json").exists()  # a stale timing is not reported


def test_report_tables_and_paired_verdict(tmp_path):
    _write_evals(tmp_path, [0, 1, 0, 0], [1, 1, 0, 1])
    summary = write_report(tmp_path, preset="t", preset_meta={}, timings={"demos": {"status": "ran", "wall_s": 1.5}})
    text = (tmp_path / "report.md").read_text()
    assert "| pick up the soup | 0.250 | 0.100–0.900 | 0.750 |" in text
    assert summary["success"]["paired_difference"]["diff"] == pytest.approx(0.5)
    # 2 fixed, 0 broken: exact McNemar p = 2 · 0.5² = 0.5, so no claim even though the mean moved
    assert summary["success"]["paired_difference"]["mcnemar_p"] == pytest.approx(0.5)
    assert "McNemar exact p = 0.5 (2 episodes fixed, 0 broken)" in summary["headline"]
    assert "World2Act is not distinguishable from the base" in summary["headline"]
    assert "| pick up the soup | 4 | 0.250 | 0.750 | +0.500 | 2 | 0 | 0.5 |" in text  # per-task paired table
    # eval.json latencies (separate processes) are not compared: no overhead without a paired timing
    assert summary["residual_latency_overhead"] is None
    assert "not compared" in text and summary["latency_eval"]["base"]["ms_per_chunk"] == 10.0


def test_report_latency_comes_from_the_interleaved_timing(tmp_path):
    _write_evals(tmp_path, [0, 1], [1, 1])
    (tmp_path / "latency_paired.json").write_text(json.dumps(PAIRED_LATENCY))
    summary = write_report(tmp_path, preset="t", preset_meta={}, timings={})
    text = (tmp_path / "report.md").read_text()
    assert summary["residual_latency_overhead"] == pytest.approx(0.05)  # not 10 ms vs 10 ms from eval.json
    assert "**1.050** (95% CI 1.020 … 1.090)" in text and "**+5.0%**" in text
    assert "| base | 20.00 | 19.00–22.00 | 1.250 | 800.0 |" in text
    assert "times_ms" not in summary["latency"]["policies"]["base"]  # per-round times stay in latency_paired.json


def test_report_verdict_needs_ci_and_mcnemar(tmp_path):
    # 12 of 12 paired episodes fixed: CI above 0 and p = 2/4096 → "better than"
    _write_evals(tmp_path, [0] * 12, [1] * 12)
    summary = write_report(tmp_path, preset="t", preset_meta={}, timings={})
    assert summary["verdict"] == "better than"
    assert summary["success"]["paired_difference"]["mcnemar_p"] == pytest.approx(2 / 4096)
    assert "World2Act is better than the base at this budget" in summary["headline"]
    text = (tmp_path / "report.md").read_text()
    assert "p < 0.05" in text and "**better than** the base" in text


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
    assert "> **Warning:** the residual's mean |Δa| reached 2.00" in text
    assert text.index("> **Warning:**") < text.index("## Appendix") < text.index("| pos_cos_last | 0.1000 |")
