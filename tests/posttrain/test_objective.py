"""Stage 2 objective and residual network (paper Sec. 4.2, Eq. 1, Table S6) on synthetic tensors."""
import math

import pytest
import torch
from torch import nn

from world2act import World2ActError
from world2act.policies.residual_net import ResidualNet, ResidualNetConfig
from world2act.posttrain.objective import RolloutBatch, masked_chunkwise_cosine, stage2_infonce, stage2_step

torch.set_num_threads(1)
K, A, D, S = 4, 3, 8, 5


def _adapters():
    f_a = nn.Sequential(nn.Flatten(-2), nn.Linear(K * A, D))
    g_a = nn.Sequential(nn.Linear(D, K * A), nn.Unflatten(-1, (K, A)))
    return f_a, g_a


def _net(gate_init=0.0):
    f_a, g_a = _adapters()
    cfg = ResidualNetConfig(state_dim=S, action_dim=A, chunk_size=K, latent_dim=D, image_size=(40, 40),
                            num_heads=2, gate_init=gate_init)
    return ResidualNet(cfg, f_a, g_a), f_a


def test_infonce_matches_hand_computation():
    sim = torch.tensor([[0.9, 0.1], [0.2, 0.5]])
    tau = 0.5
    e = lambda x: math.exp(x / tau)
    row = -0.5 * (math.log(e(0.9) / (e(0.9) + e(0.1))) + math.log(e(0.5) / (e(0.2) + e(0.5))))
    col = -0.5 * (math.log(e(0.9) / (e(0.9) + e(0.2))) + math.log(e(0.5) / (e(0.1) + e(0.5))))
    assert stage2_infonce(sim, tau).item() == pytest.approx(0.5 * (row + col), rel=1e-6)
    assert stage2_infonce(sim, tau, bidirectional=False).item() == pytest.approx(col, rel=1e-6)


def test_masked_chunkwise_cosine_ignores_invalid_chunks():
    v = torch.tensor([[[1.0, 0.0], [0.0, 1.0]], [[1.0, 0.0], [1.0, 0.0]]])
    a = torch.tensor([[[1.0, 0.0], [1.0, 0.0]], [[1.0, 0.0], [0.0, 1.0]]])
    valid = torch.tensor([[True, True], [True, False]])
    sim = masked_chunkwise_cosine(v, a, valid)
    assert sim[0, 0].item() == pytest.approx(0.5)   # cos 1 then cos 0
    assert sim[0, 1].item() == pytest.approx(1.0)   # only chunk 0 shared-valid
    assert sim[1, 1].item() == pytest.approx(1.0)


def test_zero_gate_starts_at_base_and_shapes_check():
    net, _ = _net(gate_init=0.0)
    out = net(torch.rand(2, 3, 40, 40), torch.randn(2, S), torch.randn(2, K, A))
    assert out.shape == (2, K, A) and torch.all(out == 0)
    with pytest.raises(World2ActError, match="expects"):
        net(torch.rand(2, 3, 40, 40), torch.randn(2, S), torch.randn(2, K + 1, A))


def _batch(N=4, T=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return RolloutBatch(images=torch.rand(N, T, 3, 40, 40, generator=g), states=torch.randn(N, T, S, generator=g),
                        base_chunks=torch.randn(N, T, K, A, generator=g), targets=torch.randn(N, T, D, generator=g),
                        valid=torch.ones(N, T, dtype=torch.bool))


def test_gradients_reach_residual_but_not_frozen_adapter():
    net, f_a = _net(gate_init=0.1)
    loss, m = stage2_step(net, f_a, _batch(), (torch.zeros(S), torch.ones(S)))
    loss.backward()
    assert all(p.grad is None for p in f_a.parameters())
    assert net.state_encoder[0].weight.grad.abs().sum() > 0
    assert net.visual_encoder[-2].weight.grad.abs().sum() > 0
    assert net.action_decoder[0].weight.grad.abs().sum() > 0
    assert set(m) >= {"loss", "pos_cos", "neg_cos", "delta_abs"}


def test_updates_raise_positive_pair_similarity():
    torch.manual_seed(0)
    net, f_a = _net(gate_init=0.0)
    batch = _batch(N=4, T=3, seed=1)
    opt = torch.optim.AdamW([p for p in net.parameters() if p.requires_grad], lr=3e-3)
    norm = (torch.zeros(S), torch.ones(S))
    first = None
    for _ in range(60):
        loss, m = stage2_step(net, f_a, batch, norm, tau=0.2)
        first = first or m
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert m["loss"] < first["loss"] - 0.1
    assert m["pos_cos"] > first["pos_cos"] + 0.05
    assert m["delta_abs"] > 0  # the gate opened


def _curves(n, pos, neg, delta, sr):
    return [{"iteration": i, "task": "0", "loss": 1.0, "pos_cos": pos(i), "neg_cos": neg(i), "delta_abs": delta(i),
             "rollout_success_rate": sr(i)} for i in range(n)]


def test_stage2_diagnosis_flags_noise_drift_and_collapse(tmp_path):
    from world2act.posttrain.loop import plot_curves, summarize_curves

    healthy = summarize_curves(_curves(20, lambda i: 0.1 + 0.03 * i, lambda i: 0.1, lambda i: 1e-3 * i, lambda i: 0.5))
    assert healthy["warnings"] == [] and healthy["pos_cos_last"] > healthy["neg_cos_last"]
    # the measured runs/demo-wm4 lr=3e-3 run: pos == neg, |Δa| 0 → 1.9 (last fifth 1.75), rollout success 0.3 → 0
    bad = _curves(20, lambda i: 0.1, lambda i: 0.1, lambda i: 0.1 * i, lambda i: 0.3 if i < 10 else 0.0)
    w = summarize_curves(bad)["warnings"]
    assert len(w) == 3
    assert "not closer than negatives" in w[0] and "|Δa| reached 1.75" in w[1] and "0.30 to 0.00" in w[2]
    plot_curves(bad, tmp_path / "curves.png")
    assert (tmp_path / "curves.png").stat().st_size > 1000


def test_imagined_target_similarity_between_init_states():
    from world2act.posttrain.loop import imagined_target_similarity

    g = torch.Generator().manual_seed(0)
    same = torch.randn(5, 8, generator=g)
    assert imagined_target_similarity([same, same.clone(), 2 * same]) == pytest.approx(1.0)
    assert imagined_target_similarity([same, -same[:3]]) == pytest.approx(-1.0)  # compared over the shared 3 chunks
    spread = imagined_target_similarity([torch.randn(6, 64, generator=g) for _ in range(4)])
    assert abs(spread) < 0.15
    assert math.isnan(imagined_target_similarity([same]))
