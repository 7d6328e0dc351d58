"""Stage 1's held-out summary: same-skill retrieval and the hard-negative cosine beside the
easy-negative-dominated retrieval over all windows."""
import json
import math

import numpy as np
import pytest
import torch

from world2act.align import AlignConfig, retrieval_metrics, synthetic_dataset
from world2act.align.metrics import heldout_summary
from world2act.align.train import run

torch.set_num_threads(1)
R = 1 / math.sqrt(2)


def _emb():
    """Items 0, 1 = skill 0 (demos 0, 1); items 2, 3 = skill 1 (demos 0, 1); one chunk each.

    Same-skill items are 45° apart, different skills orthogonal; video = action embeddings except
    item 1's video, which points at item 0's action (a same-skill confusion)."""
    e = torch.eye(4)
    a = torch.stack([e[0], (e[0] + e[1]) * R, e[2], (e[2] + e[3]) * R])
    v = a.clone()
    v[1] = e[0]
    return v[:, None], a[:, None]


def test_hard_negatives_and_same_skill_retrieval_by_hand():
    v, a = _emb()
    m = retrieval_metrics(v, a, skill_ids=[0, 0, 1, 1], demo_ids=[0, 1, 0, 1])
    # positives: 1, cos(e0, (e0+e1)/√2) = R, 1, 1
    assert m["pos_cos"] == pytest.approx((3 + R) / 4)
    # hard pairs (same skill, other demo): v0·a1 = R, v1·a0 = 1, v2·a3 = R, v3·a2 = R
    assert m["hard_neg_cos"] == pytest.approx((1 + 3 * R) / 4)
    assert m["easy_neg_cos"] == pytest.approx(0.0)
    assert m["hard_cos_gap"] == pytest.approx(m["pos_cos"] - m["hard_neg_cos"])
    # video 1 retrieves action 0 (cos 1 > R); everything else is right
    assert m["top1_v2a_same_skill"] == pytest.approx(0.75) and m["top1_v2a"] == pytest.approx(0.75)
    assert m["chance_same_skill"] == pytest.approx(0.5)
    s = heldout_summary(m)
    assert s["same_skill_top1_v2a"] == pytest.approx(0.75) and s["same_skill_top1_v2a_x_chance"] == pytest.approx(1.5)
    assert s["same_skill_chance"] == pytest.approx(0.5)
    assert s["hard_neg_cos"] == m["hard_neg_cos"] and s["hard_cos_gap"] == pytest.approx(m["hard_cos_gap"])
    assert s["top1_v2a_x_chance"] == pytest.approx(3.0)  # 0.75 × N = 4


def test_summary_without_labels_is_nan_not_an_error():
    v, a = _emb()
    s = heldout_summary(retrieval_metrics(v, a))
    assert math.isnan(s["hard_neg_cos"]) and math.isnan(s["same_skill_top1_a2v_x_chance"])
    assert s["pos_cos"] == pytest.approx((3 + R) / 4)


def test_align_metrics_json_carries_the_summary(tmp_path, capsys):
    d = synthetic_dataset(n_skills=3, n_demos=5, seed=1)
    cfg = AlignConfig(steps=4, batch_size=12, num_negatives=5, eval_every=4, log_every=2, checkpoint_every=4,
                      latent_dim=8, val_fraction=0.4)  # two held-out demos: hard negatives exist
    m = run(cfg, tmp_path / "align", data=d, progress=False)
    saved = json.loads((tmp_path / "align" / "metrics.json").read_text())
    s = saved["heldout_summary"]
    assert list(saved)[:2] == ["variant", "heldout_summary"]  # first in the file and in report.md's table
    assert s == pytest.approx(m["heldout_summary"], nan_ok=True)
    h = saved["heldout"]
    assert s["same_skill_top1_a2v"] == h["top1_a2v_same_skill"] and s["hard_neg_cos"] == h["hard_neg_cos"]
    assert s["hard_cos_gap"] == pytest.approx(h["pos_cos"] - h["hard_neg_cos"])
    assert np.isfinite([s["same_skill_chance"], s["hard_neg_cos"], s["easy_neg_cos"]]).all()


def test_align_command_prints_the_same_skill_line(tmp_path, capsys, monkeypatch):
    import argparse

    import world2act.align.train as train

    v, a = _emb()
    h = {**retrieval_metrics(v, a, skill_ids=[0, 0, 1, 1], demo_ids=[0, 1, 0, 1]), "rec_mse": 0.01}
    monkeypatch.setattr(train, "run", lambda cfg, out, **kw: {"heldout": h, "heldout_summary": heldout_summary(h)})
    monkeypatch.setenv("WORLD2ACT_THREADS", "1")  # main() sets the torch thread count
    args = argparse.Namespace(out=str(tmp_path / "o"), seed=0, device="cpu", resume=False, overwrite=False,
                              log_with="none")
    assert train.main(train.AlignConfig(skills="S", wm="W"), args) == 0
    out = capsys.readouterr().out
    assert "same skill only: top-1 v→a 0.750" in out and "(chance 0.500)" in out
    assert f"hard-negative cos {(1 + 3 * R) / 4:.3f}" in out
