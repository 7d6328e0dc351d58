"""Paired comparison of two evaluations: the exact McNemar test, episode pairing, and the
`world2act eval-compare` command (issue 15)."""
from __future__ import annotations

import json
import math

import pytest

from world2act.cli import main as cli_main
from world2act.evaluation.stats import mcnemar_exact, paired_comparison, paired_verdict


# ---------------------------------------------------------------------------- McNemar
@pytest.mark.parametrize("b, c, p", [
    (0, 10, 2 / 1024),          # all ten discordant pairs one way: 2 · 0.5^10
    (3, 12, 0.03515625),        # 2 · (1 + 15 + 105 + 455) / 2^15 = 1152 / 32768
    (0, 1, 1.0),                # 2 · 0.5 = 1
    (1, 5, 0.21875),            # 2 · (1 + 6) / 64
    (7, 2, 0.1796875),          # 2 · (1 + 9 + 36) / 512
    (0, 5, 0.0625),             # 2 / 32: five of five is not significant at 0.05
    (0, 6, 0.03125),            # 2 / 64: six of six is
])
def test_mcnemar_exact_known_values(b, c, p):
    assert mcnemar_exact(b, c) == pytest.approx(p, rel=1e-12, abs=0)
    assert mcnemar_exact(c, b) == mcnemar_exact(b, c)  # symmetric


def test_mcnemar_exact_edges():
    assert mcnemar_exact(0, 0) == 1.0  # no discordant pair: no evidence
    for k in (1, 4, 25, 300):
        assert mcnemar_exact(k, k) == 1.0  # b == c: the tail doubled exceeds 1, clipped
    # large counts stay exact (integer arithmetic, no underflow): 0 vs 2000 is 2^-1999
    assert mcnemar_exact(0, 2000) == pytest.approx(2.0 ** -1999, rel=1e-12)
    assert mcnemar_exact(4000, 4200) == pytest.approx(0.02797242357132438, rel=1e-9)
    with pytest.raises(ValueError):
        mcnemar_exact(-1, 3)
    with pytest.raises(ValueError):
        mcnemar_exact(1.5, 3)


# ---------------------------------------------------------------------------- pairing
def _ep(task, seed, trial, success, error=None):
    return {"task": task, "seed": seed, "trial": trial, "init_state_index": trial, "success": success, "error": error}


def test_paired_comparison_on_hand_made_records():
    base = [_ep(0, 0, 0, False), _ep(0, 0, 1, False), _ep(0, 0, 2, True), _ep(0, 0, 3, True),
            _ep(1, 0, 0, False), _ep(1, 0, 1, True),
            _ep(1, 0, 9, True)]                       # no partner in post: ignored
    post = [_ep(0, 0, 0, True), _ep(0, 0, 1, False), _ep(0, 0, 2, True), _ep(0, 0, 3, True),
            _ep(1, 0, 0, True), _ep(1, 0, 1, True, error="RuntimeError: sim crashed"),  # error = failure
            _ep(0, 1, 0, True), _ep(2, 0, 0, True)]   # other seed / other task: ignored
    pc = paired_comparison(base, post)
    assert pc["n"] == 6
    assert (pc["unpaired_base"], pc["unpaired_post"]) == (1, 2)
    assert pc["base_sr"] == pytest.approx(3 / 6) and pc["post_sr"] == pytest.approx(4 / 6)
    # differences post − base: +1, 0, 0, 0, +1, −1
    assert (pc["improved"], pc["regressed"]) == (2, 1)
    assert pc["diff"] == pytest.approx(1 / 6)
    d = [1, 0, 0, 0, 1, -1]
    sd = math.sqrt(sum((x - 1 / 6) ** 2 for x in d) / 5)
    assert pc["ci95"] == pytest.approx([1 / 6 - 1.96 * sd / math.sqrt(6), 1 / 6 + 1.96 * sd / math.sqrt(6)])
    assert pc["mcnemar_p"] == pytest.approx(1.0)  # 2 · P[X ≤ 1], X ~ Bin(3, 1/2) = 2 · 4/8
    assert list(pc["per_task"]) == ["0", "1"]
    assert pc["per_task"]["0"] == {"n": 4, "diff": pytest.approx(0.25), "base_sr": 0.5, "post_sr": 0.75,
                                   "fixed": 1, "broken": 0, "mcnemar_p": 1.0}
    assert pc["per_task"]["1"] == {"n": 2, "diff": 0.0, "base_sr": 0.5, "post_sr": 0.5,
                                   "fixed": 1, "broken": 1, "mcnemar_p": 1.0}


def test_paired_comparison_with_no_shared_episode():
    pc = paired_comparison([_ep(0, 0, 0, True)], [_ep(0, 1, 0, True)])
    assert pc == {"n": 0, "unpaired_base": 1, "unpaired_post": 1, "per_task": {}}
    assert paired_verdict(pc) == "not distinguishable from"


def test_verdict_needs_both_the_interval_and_mcnemar():
    # 5 of 5 fixed: the normal interval is degenerate at +1 (excludes 0) but p = 0.0625 ≥ 0.05
    five = paired_comparison([_ep(0, 0, i, False) for i in range(5)], [_ep(0, 0, i, True) for i in range(5)])
    assert five["ci95"][0] > 0 and five["mcnemar_p"] == pytest.approx(0.0625)
    assert paired_verdict(five) == "not distinguishable from"
    # 10 fixed, none broken, 10 unchanged successes: CI above 0 and p = 2/1024
    base = [_ep(0, 0, i, i >= 10) for i in range(20)]
    post = [_ep(0, 0, i, True) for i in range(20)]
    better = paired_comparison(base, post)
    assert better["mcnemar_p"] == pytest.approx(2 / 1024) and better["ci95"][0] > 0
    assert paired_verdict(better) == "better than"
    assert paired_verdict(paired_comparison(post, base)) == "worse than"


# ---------------------------------------------------------------------------- eval-compare
def _write_eval(folder, episodes, benchmark="libero_object", policy="p"):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "eval.json").write_text(json.dumps({
        "benchmark": benchmark, "policy": policy, "complete": True, "episodes": episodes,
        "per_task": {"0": {"instruction": "pick up the alphabet soup"}}}))


def test_eval_compare_writes_paired_json_and_md(tmp_path, capsys):
    base = [_ep(0, 0, i, i >= 10) for i in range(20)] + [_ep(1, 0, 0, False)]
    post = [_ep(0, 0, i, True) for i in range(20)] + [_ep(1, 0, 0, True, error="ValueError: x")]
    _write_eval(tmp_path / "a", base, policy="base-policy")
    _write_eval(tmp_path / "b", post, policy="post-policy")
    out = tmp_path / "cmp"
    rc = cli_main(["eval-compare", "--base", str(tmp_path / "a"), "--post", str(tmp_path / "b"), "--out", str(out)])
    assert rc == 0
    res = json.loads((out / "paired.json").read_text())
    assert res["n"] == 21 and res["improved"] == 10 and res["regressed"] == 0
    assert res["mcnemar_p"] == pytest.approx(2 / 1024)
    assert res["verdict"] == "better than"
    assert res["base"]["policy"] == "base-policy" and res["post"]["eval"] == str(tmp_path / "b" / "eval.json")
    assert res["per_task"]["1"] == {"n": 1, "diff": 0.0, "base_sr": 0.0, "post_sr": 0.0,
                                    "fixed": 0, "broken": 0, "mcnemar_p": 1.0}
    md = (out / "paired.md").read_text()
    assert "McNemar exact p = 0.00195" in md and "post is better than base" in md
    assert "| pick up the alphabet soup | 20 | 0.500 | 1.000 | +0.500 | 10 | 0 | 0.00195 |" in md
    assert "| 1 | 1 | 0.000 | 0.000 | +0.000 | 0 | 0 | 1 |" in md
    assert "paired.md" in capsys.readouterr().out
    assert not list(out.glob(".*.tmp*"))  # atomic writes leave no temporary files


def test_eval_compare_fails_clearly_on_missing_or_unpairable_input(tmp_path, capsys):
    _write_eval(tmp_path / "a", [_ep(0, 0, 0, True)])
    out = tmp_path / "cmp"
    rc = cli_main(["eval-compare", "--base", str(tmp_path / "a"), "--post", str(tmp_path / "nope"), "--out", str(out)])
    err = capsys.readouterr().err
    assert rc == 2 and err == f"error: {tmp_path / 'nope' / 'eval.json'}: file not found\n"
    assert not out.exists()

    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "eval.json").write_text("{not json")
    rc = cli_main(["eval-compare", "--base", str(tmp_path / "bad"), "--post", str(tmp_path / "a"), "--out", str(out)])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith(f"error: {tmp_path / 'bad' / 'eval.json'}: not valid JSON") and err.count("\n") == 1

    _write_eval(tmp_path / "c", [_ep(0, 1, 0, True)])  # another seed: nothing to pair
    rc = cli_main(["eval-compare", "--base", str(tmp_path / "a"), "--post", str(tmp_path / "c"), "--out", str(out)])
    err = capsys.readouterr().err
    assert rc == 2 and "share no episode" in err and str(tmp_path / "c" / "eval.json") in err and err.count("\n") == 1
    assert not out.exists()
