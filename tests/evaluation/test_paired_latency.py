"""paired_latency: two policies timed interleaved in one process, with a paired ratio (issue 18)."""
from __future__ import annotations

import time

import numpy as np
import pytest
import torch

from world2act.evaluation.paired_latency import paired_latency
from world2act.policies.base import Policy

K, A, S = 4, 2, 3


class SleepPolicy(Policy):
    """Test policy: sleeps ``ms`` per chunk and logs its calls into a shared list."""

    def __init__(self, ms: float, name: str = "p", calls: list | None = None):
        super().__init__()
        self.ms, self.name, self.calls = ms, name, calls
        self.action_dim, self.state_dim, self.chunk_size, self.cameras = A, S, K, ()

    def predict_action_chunk(self, obs):
        if self.calls is not None:
            self.calls.append(self.name)
        time.sleep(self.ms / 1000.0)
        return torch.zeros(len(obs["task"]), K, A)


def _obs():
    return {"observation.state": np.zeros((1, S), np.float32), "task": ["t"]}


def test_identical_policies_give_a_ratio_near_one():
    res = paired_latency({"a": SleepPolicy(20), "b": SleepPolicy(20)}, _obs(), n=20, warmup=2)
    assert set(res["policies"]) == {"a", "b"} and res["reference"] == "a"
    for v in res["policies"].values():
        assert len(v["times_ms"]) == 20 and v["ms_per_chunk"] >= 19.0
        assert v["ms_per_action"] == pytest.approx(v["ms_per_chunk"] / K)
    assert 0.85 < res["ratio"] < 1.18
    lo, hi = res["ratio_ci95"]
    assert lo <= res["ratio"] <= hi and lo < 1.1 and hi > 0.9
    assert res["ratios"]["b"]["overhead"] == pytest.approx(res["ratio"] - 1)
    assert res["n"] == 20 and res["batch"] == 1


def test_a_policy_that_sleeps_extra_is_clearly_slower():
    res = paired_latency({"base": SleepPolicy(20), "post": SleepPolicy(40)}, _obs(), n=15, warmup=1)
    assert res["ratio"] > 1.6
    assert res["ratio_ci95"][0] > 1.3  # the interval excludes "no overhead"
    assert res["policies"]["post"]["ms_per_chunk"] > res["policies"]["base"]["ms_per_chunk"] + 10


def test_calls_are_interleaved_with_alternating_order_and_default_observation():
    calls: list[str] = []
    pa, pb = SleepPolicy(0, "a", calls), SleepPolicy(0, "b", calls)
    res = paired_latency({"a": pa, "b": pb}, n=3, warmup=1)  # default: synthetic observation of "a"
    # warm-up round (a, b), then timed rounds a b | b a | a b: neither always runs first
    assert calls == ["a", "b", "a", "b", "b", "a", "a", "b"]
    assert res["order"].startswith("interleaved") and res["ratio"] > 0


def test_needs_two_policies_and_restores_threads():
    with pytest.raises(ValueError, match="at least two"):
        paired_latency({"a": SleepPolicy(0)}, _obs(), n=2)
    before = torch.get_num_threads()
    paired_latency({"a": SleepPolicy(0), "b": SleepPolicy(0)}, _obs(), n=2, warmup=0, threads=1)
    assert torch.get_num_threads() == before
