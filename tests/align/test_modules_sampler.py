"""Shapes, gradients, negative sampling and the bundle round trip."""
import numpy as np
import pytest
import torch

from world2act import World2ActError
from world2act.align import (
    ActionAdapter,
    ActionDecoder,
    AdapterConfig,
    AlignmentBundle,
    NegativeSampler,
    VideoAdapter,
    bidirectional_infonce,
    reconstruction_loss,
)

torch.set_num_threads(1)


@pytest.mark.parametrize("K,A,D,C,HW", [(16, 7, 32, 16, (8, 16)), (4, 4, 8, 4, (4, 4)), (1, 2, 3, 1, (3, 5))])
def test_shapes(K, A, D, C, HW):
    fa, fv, ga = ActionAdapter(A, K, D), VideoAdapter(C, D), ActionDecoder(D, A, K)
    B, T = 3, 4
    assert fa(torch.randn(B, T, K, A)).shape == (B, T, D)
    assert fa(torch.randn(B, K, A)).shape == (B, D)
    assert fv(torch.randn(B, T, C, *HW)).shape == (B, T, D)
    assert fv(torch.randn(B, C, *HW)).shape == (B, D)
    assert ga(torch.randn(B, T, D)).shape == (B, T, K, A)
    assert ga(torch.randn(B, D)).shape == (B, K, A)


def test_table_s6_layer_widths():
    fa = ActionAdapter(7, 16, 32)
    assert [m.out_features for m in fa.net if isinstance(m, torch.nn.Linear)] == [128, 64, 32]
    assert fa.net[0].in_features == 16 * 7
    ga = ActionDecoder(32, 7, 16)
    assert [m.out_features for m in ga.net if isinstance(m, torch.nn.Linear)] == [64, 128, 112]
    fv = VideoAdapter(16, 32)
    convs = [m for m in fv.net if isinstance(m, torch.nn.Conv2d)]
    assert [(c.in_channels, c.out_channels) for c in convs] == [(16, 64), (64, 128)]


def test_wrong_input_shapes_raise():
    with pytest.raises(World2ActError, match="K=16"):
        ActionAdapter(7, 16)(torch.randn(2, 8, 7))
    with pytest.raises(World2ActError, match="C=16"):
        VideoAdapter(16)(torch.randn(2, 3, 4, 8, 8))


def test_gradients_reach_both_adapters_and_decoder():
    torch.manual_seed(0)
    fa, fv, ga = ActionAdapter(3, 4, 8), VideoAdapter(4, 8), ActionDecoder(8, 3, 4)
    act = torch.randn(5, 3, 4, 3)
    za = fa(act)
    loss = bidirectional_infonce(fv(torch.randn(5, 3, 4, 4, 4)), za) + reconstruction_loss(ga(za), act)
    loss.backward()
    for name, m in (("f_a", fa), ("f_v", fv), ("g_a", ga)):
        grads = [p.grad for p in m.parameters()]
        assert all(g is not None for g in grads), name
        assert sum(float(g.abs().sum()) for g in grads) > 0, name


def _labels():
    # 3 skills x 10 demos; every demo does every skill once
    skills = np.repeat(np.arange(3), 10)
    demos = np.tile(np.arange(10), 3)
    return skills, demos


@pytest.mark.parametrize("ratio", [0.0, 0.25, 0.75, 1.0])
def test_sampler_honours_hard_ratio_and_never_samples_positive(ratio):
    skills, demos = _labels()
    s = NegativeSampler(skills, demos, num_negatives=8, hard_ratio=ratio, seed=1)
    rng = np.random.default_rng(0)
    for i in range(len(skills)):
        neg, n_hard = s.sample(i, rng)
        assert len(neg) == 8 and len(set(neg.tolist())) == 8
        assert i not in neg
        assert n_hard == round(ratio * 8)
        hard, easy = neg[:n_hard], neg[n_hard:]
        assert np.all(skills[hard] == skills[i]) and np.all(demos[hard] != demos[i])
        assert np.all(skills[easy] != skills[i])


def test_sampler_tops_up_when_hard_pool_is_short():
    skills = np.array([0, 0, 1, 1, 1, 1, 1])
    demos = np.array([0, 1, 0, 1, 2, 3, 4])
    s = NegativeSampler(skills, demos, num_negatives=4, hard_ratio=1.0)
    neg, n_hard = s.sample(0)
    assert n_hard == 1 and 1 in neg and 0 not in neg and len(neg) == 4


def test_sampler_excludes_same_skill_same_demo():
    # items 0 and 1: same skill and same demo (two windows of one clip) -> never negatives of each other
    skills = np.array([0, 0, 0, 1])
    demos = np.array([0, 0, 1, 0])
    s = NegativeSampler(skills, demos, num_negatives=3, hard_ratio=0.5)
    for _ in range(20):
        neg, _ = s.sample(0)
        assert 1 not in neg and 0 not in neg


def test_sampler_batch_candidates():
    skills, demos = _labels()
    s = NegativeSampler(skills, demos, num_negatives=4, hard_ratio=0.25, seed=0)
    nb = s.batch(6)
    U = len(nb.indices)
    assert nb.candidates.shape == (U, U) and int(nb.anchors.sum()) == 6
    assert len(set(nb.indices.tolist())) == U
    rows = torch.nonzero(nb.anchors).flatten()
    for r in rows:
        row = nb.candidates[r]
        assert row[r] and int(row.sum()) == 5  # positive + 4 negatives
    assert nb.num_hard == 6 * 1 and nb.hard_fraction == pytest.approx(0.25)
    assert not nb.candidates[~nb.anchors].any()


def test_bundle_save_load_roundtrip(tmp_path):
    cfg = AdapterConfig(action_dim=3, chunk_size=4, latent_dim=8, latent_channels=4, latent_size=(4, 6),
                        frame_stride=1, num_frames=17, cameras=("agentview",), layout="h")
    b = AlignmentBundle(cfg, seed=0)
    b.normalizer.fit(torch.randn(100, 3) * torch.tensor([1.0, 2.0, 0.0]) + 5)
    b.save(tmp_path)
    for f in ("config.json", "model.safetensors", "normalizer.safetensors"):
        assert (tmp_path / f).is_file()
    c = AlignmentBundle.load(tmp_path)
    assert c.config == cfg and (c.config.A, c.config.K, c.config.D, c.config.C) == (3, 4, 8, 4)
    x = torch.randn(2, 3, 4, 3)
    assert torch.allclose(c.f_a(x), b.f_a(x))
    z = torch.randn(2, 3, 4, 4, 6)
    assert torch.allclose(c.f_v(z), b.eval().f_v(z))
    raw = torch.randn(5, 3)
    assert torch.allclose(c.unnormalize_actions(c.normalize_actions(raw)), raw, atol=1e-5)
    assert torch.allclose(c.normalizer.std[2], torch.tensor(1e-2))  # constant dim floored
    (tmp_path / "normalizer.safetensors").unlink()
    with pytest.raises(World2ActError, match="normalizer.safetensors"):
        AlignmentBundle.load(tmp_path)


@pytest.mark.parametrize("ratio", [0.25, 0.75])
def test_in_batch_sampler_honours_hard_ratio(ratio):
    skills = np.repeat(np.arange(6), 12)  # 6 skills x 12 demos
    demos = np.tile(np.arange(12), 6)
    s = NegativeSampler(skills, demos, num_negatives=8, hard_ratio=ratio, seed=0)
    nb = s.in_batch(32, np.random.default_rng(1))
    U = len(nb.indices)
    assert U == 32 and bool(nb.anchors.all()) and len(set(nb.indices.tolist())) == U
    sk, de = skills[nb.indices], demos[nb.indices]
    for r in range(U):
        row = nb.candidates[r].numpy()
        assert row[r]
        neg = np.nonzero(row)[0]
        neg = neg[neg != r]
        assert len(neg) == 8
        hard = (sk[neg] == sk[r]) & (de[neg] != de[r])
        assert int(hard.sum()) == round(ratio * 8)
        assert not np.any((sk[neg] == sk[r]) & (de[neg] == de[r]))
    assert nb.hard_fraction == pytest.approx(round(ratio * 8) / 8)
