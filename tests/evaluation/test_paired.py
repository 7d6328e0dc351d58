"""Paired comparison of two evaluations: the exact McNemar test, episode pairing, and the
`world2act eval-compare` command (issue 15)."""
from __future__ import annotations

import math

import pytest

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
