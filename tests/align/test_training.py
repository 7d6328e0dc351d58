"""A few training steps on a synthetic related video/action set; the run() artifacts; resume."""
import json

import numpy as np
import pytest
import torch

from world2act import World2ActError
from world2act.align import AlignConfig, AlignData, AlignmentBundle, retrieval_metrics, split_by_demo, synthetic_dataset, train_adapters
from world2act.align.train import run

torch.set_num_threads(1)


def _cfg(**kw):
    base = dict(steps=60, batch_size=16, anchors_per_batch=8, num_negatives=7, eval_every=60, log_every=10, checkpoint_every=30,
                lr=1e-3, latent_dim=8)
    base.update(kw)
    return AlignConfig(**base)


def test_split_is_by_demonstration():
    d = synthetic_dataset(n_skills=3, n_demos=5)
    tr, va = split_by_demo(d, 0.4, seed=0)
    assert len(tr) + len(va) == len(d)
    assert not set(d.demo_ids[tr]) & set(d.demo_ids[va])
    assert set(d.skill_ids[va]) == set(range(3))


def test_training_reduces_loss_and_beats_chance():
    d = synthetic_dataset(n_skills=4, n_demos=6, seed=0)
    tr, va = split_by_demo(d, 0.34, seed=0)
    bundle, curves = train_adapters(d.subset(tr), d.subset(va), _cfg(steps=120), progress=False)
    train = [c for c in curves if c["kind"] == "train"]
    assert train[-1]["loss"] < 0.5 * train[0]["loss"]
    assert train[-1]["nce"] < train[0]["nce"] and train[-1]["rec"] < train[0]["rec"]
    ev = [c for c in curves if c["kind"] == "eval"]
    assert ev[0]["step"] == 0 and ev[-1]["step"] == 120
    assert ev[-1]["cos_gap"] > ev[0]["cos_gap"] + 0.2
    assert min(ev[-1]["top1_v2a"], ev[-1]["top1_a2v"]) > 2 * ev[-1]["chance"]


def test_retrieval_metrics_on_perfect_and_shuffled_embeddings():
    torch.manual_seed(0)
    v = torch.randn(10, 3, 6)
    m = retrieval_metrics(v, v.clone(), skill_ids=np.arange(10) % 2, demo_ids=np.arange(10))
    assert m["top1_v2a"] == 1.0 and m["top1_a2v"] == 1.0 and m["pos_cos"] == pytest.approx(1.0)
    assert m["chance"] == pytest.approx(0.1) and m["top1_v2a_x_chance"] == pytest.approx(10.0)
    m2 = retrieval_metrics(v, v[torch.roll(torch.arange(10), 1)])
    assert m2["top1_v2a"] == 0.0


def test_run_writes_artifacts_and_resumes(tmp_path):
    d = synthetic_dataset(n_skills=3, n_demos=5, seed=1)
    out = tmp_path / "align"
    m = run(_cfg(steps=30), out, data=d, progress=False)
    for f in ("config.json", "model.safetensors", "normalizer.safetensors", "metrics.json", "manifest.json",
              "loss_curves.png", "train/curves.jsonl", "train/checkpoint/state.safetensors"):
        assert (out / f).is_file(), f
    assert m["steps"] == 30 and "heldout" in m and m["split"]["heldout_demos"] >= 1
    b = AlignmentBundle.load(out)
    assert b.config.K == d.shape_info["K"] and b.config.C == d.shape_info["C"]
    with pytest.raises(World2ActError, match="not empty"):
        run(_cfg(steps=30), out, data=d, progress=False)
    # resume to 60 steps: continues from the checkpoint (curves keep the first 30 steps)
    m2 = run(_cfg(steps=60), out, data=d, progress=False, resume=True)
    assert m2["steps"] == 60
    steps = [json.loads(x)["step"] for x in (out / "train/curves.jsonl").read_text().splitlines()
             if json.loads(x)["kind"] == "train"]
    assert steps == sorted(steps) and steps[0] == 10 and steps[-1] == 60 and len(steps) == len(set(steps))


def test_resume_matches_uninterrupted_run(tmp_path):
    d = synthetic_dataset(n_skills=3, n_demos=4, seed=2)
    tr, va = split_by_demo(d, 0.3, seed=0)
    a, _ = train_adapters(d.subset(tr), None, _cfg(steps=20), out=tmp_path / "a", progress=False)
    train_adapters(d.subset(tr), None, _cfg(steps=10, checkpoint_every=10), out=tmp_path / "b", progress=False)
    b, _ = train_adapters(d.subset(tr), None, _cfg(steps=20), out=tmp_path / "b", resume=True, progress=False)
    for (k, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items()):
        assert torch.allclose(x, y, atol=1e-6), k


def test_resume_reads_a_checkpoint_of_the_older_layout(tmp_path):
    """Before issue 17: one state.safetensors (model.*, norm.*, opt.<i>.<name>, torch_rng) + state.json."""
    from safetensors.torch import load_file, save_file

    d = synthetic_dataset(n_skills=3, n_demos=4, seed=2)
    tr, _ = split_by_demo(d, 0.3, seed=0)
    a, _ = train_adapters(d.subset(tr), None, _cfg(steps=20), out=tmp_path / "a", progress=False)
    train_adapters(d.subset(tr), None, _cfg(steps=10, checkpoint_every=10), out=tmp_path / "b", progress=False)
    ck = tmp_path / "b" / "checkpoint"
    meta = json.loads((ck / "state.json").read_text())
    model, rest = load_file(str(ck / "model.safetensors")), load_file(str(ck / "state.safetensors"))
    old = {f"model.{k}": v for k, v in model.items() if not k.startswith("normalizer.")}
    old.update({"norm.mean": model["normalizer.mean"], "norm.std": model["normalizer.std"],
                "torch_rng": rest["extra/torch_rng"]})
    old.update({f"opt.{k.split('/')[2]}.{k.split('/')[3]}": v for k, v in rest.items() if k.startswith("optimizer/state/")})
    for f in ck.iterdir():
        f.unlink()
    save_file(old, str(ck / "state.safetensors"))
    (ck / "state.json").write_text(json.dumps({"step": 10, "rng": meta["extra"]["rng"], "variant": "bi_infonce"}))
    b, _ = train_adapters(d.subset(tr), None, _cfg(steps=20), out=tmp_path / "b", resume=True, progress=False)
    for (k, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items()):
        assert torch.allclose(x, y, atol=1e-6), k


def test_compare_variants_table(tmp_path):
    d = synthetic_dataset(n_skills=3, n_demos=4, seed=3)
    m = run(_cfg(steps=10, compare=True, eval_every=10), tmp_path / "cmp", data=d, progress=False)
    assert set(m["variants"]) == {"bi_infonce", "single_infonce", "marginal", "global"}
    table = (tmp_path / "cmp" / "variants.md").read_text()
    assert table.count("\n| ") >= 5  # header + 4 rows
    assert (tmp_path / "cmp" / "variants" / "marginal" / "bundle" / "model.safetensors").is_file()


def test_config_validation():
    with pytest.raises(World2ActError, match="variant"):
        AlignConfig(variant="cosine")
    with pytest.raises(World2ActError, match="hard_ratio"):
        AlignConfig(hard_ratio=1.5)


def test_align_data_roundtrip(tmp_path):
    d = synthetic_dataset(n_skills=2, n_demos=2)
    d.save(tmp_path / "c.safetensors")
    e = AlignData.load(tmp_path / "c.safetensors")
    assert torch.equal(e.latents, d.latents) and torch.equal(e.mask, d.mask)
    assert e.skill_names == d.skill_names and (e.demo_ids == d.demo_ids).all()


def test_explicit_negatives_mode_trains():
    d = synthetic_dataset(n_skills=3, n_demos=4, seed=4)
    _, curves = train_adapters(d, None, _cfg(steps=20, negatives="explicit"), progress=False)
    tr = [c for c in curves if c["kind"] == "train"]
    assert tr[-1]["loss"] < tr[0]["loss"]
