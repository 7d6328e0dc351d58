"""Stage-1 losses against hand-computed values (paper Eq. 1 and the Table S3 variants)."""
import math

import pytest
import torch

from world2act import World2ActError
from world2act.align import (
    bidirectional_infonce,
    chunkwise_similarity,
    global_infonce,
    global_similarity,
    infonce_from_similarity,
    marginal_loss,
    reconstruction_loss,
    single_infonce,
    stage1_loss,
)

torch.set_num_threads(1)

# Two pairs, T=2 chunks, D=2. Unit vectors so cosines are easy to read.
#   video 0: [e1, e2]   video 1: [e2, e2]
#   action0: [e1, e1]   action1: [e2, -e1]
V = torch.tensor([[[1.0, 0.0], [0.0, 1.0]], [[0.0, 1.0], [0.0, 1.0]]])
A_ = torch.tensor([[[2.0, 0.0], [3.0, 0.0]], [[0.0, 1.0], [-1.0, 0.0]]])  # norms differ: cosine ignores them
# s(v0,a0) = (1 + 0)/2 = 0.5 ; s(v0,a1) = (0 + 0)/2 = 0 ; s(v1,a0) = (0+0)/2 = 0 ; s(v1,a1) = (1 + 0)/2 = 0.5
S = torch.tensor([[0.5, 0.0], [0.0, 0.5]])


def test_chunkwise_similarity_hand_value():
    assert torch.allclose(chunkwise_similarity(V, A_), S)


def test_chunkwise_similarity_mask_counts_shared_valid_chunks_only():
    mask = torch.tensor([[True, False], [True, True]])
    s = chunkwise_similarity(V, A_, mask)
    # pair (0,0): only t=0 valid -> cos(e1,e1)=1 ; (0,1): t=0 -> cos(e1,e2)=0 ; (1,0): t=0 -> 0 ; (1,1): 0.5
    assert torch.allclose(s, torch.tensor([[1.0, 0.0], [0.0, 0.5]]))


def test_global_similarity_hand_value():
    # pooled: v0=[.5,.5] v1=[0,1]; a0=[2.5,0] a1=[-.5,.5]
    s = global_similarity(V, A_)
    r = 1 / math.sqrt(2)
    want = torch.tensor([[r, 0.0], [0.0, r]])
    assert torch.allclose(s, want, atol=1e-6)


def test_bidirectional_infonce_hand_value():
    tau = 0.5
    # each row/col: softmax over [0.5/τ, 0] = [1, 0] -> -log(e^1/(e^1+1))
    per = -math.log(math.e / (math.e + 1.0))
    assert bidirectional_infonce(V, A_, tau=tau).item() == pytest.approx(per, rel=1e-6)


def test_bidirectional_infonce_asymmetric_matrix_hand_value():
    sim = torch.tensor([[0.9, 0.1, -0.2], [0.3, 0.4, 0.0], [0.5, -0.1, 0.2]])
    tau = 0.1
    e = [[math.exp(x / tau) for x in row] for row in sim.tolist()]
    v2a = -sum(math.log(e[i][i] / sum(e[i])) for i in range(3)) / 3
    a2v = -sum(math.log(e[i][i] / sum(e[j][i] for j in range(3))) for i in range(3)) / 3
    assert infonce_from_similarity(sim, tau).item() == pytest.approx(0.5 * (v2a + a2v), rel=1e-5)
    assert infonce_from_similarity(sim, tau, direction="a2v").item() == pytest.approx(a2v, rel=1e-5)
    assert infonce_from_similarity(sim, tau, direction="v2a").item() == pytest.approx(v2a, rel=1e-5)
    # candidates: anchor 0 sees only item 2 as negative; anchors 1, 2 excluded from the loss
    cand = torch.tensor([[True, False, True], [False, True, False], [False, False, True]])
    anchors = torch.tensor([True, False, False])
    v2a0 = -math.log(e[0][0] / (e[0][0] + e[0][2]))
    a2v0 = -math.log(e[0][0] / (e[0][0] + e[2][0]))
    got = infonce_from_similarity(sim, tau, candidates=cand, anchors=anchors).item()
    assert got == pytest.approx(0.5 * (v2a0 + a2v0), rel=1e-5)


def test_single_infonce_is_action_to_video_term():
    sim = chunkwise_similarity(V, A_)
    assert single_infonce(V, A_, tau=0.3).item() == pytest.approx(infonce_from_similarity(sim, 0.3, direction="a2v").item())


def test_global_infonce_uses_pooled_similarity():
    tau = 0.2
    r = 1 / math.sqrt(2)
    per = -math.log(math.exp(r / tau) / (math.exp(r / tau) + 1.0))
    assert global_infonce(V, A_, tau=tau).item() == pytest.approx(per, rel=1e-5)


def test_marginal_loss_hand_value():
    # s_ii = 0.5, s_ij = 0: hinge max(0, m - 0.5 + 0) -> 0.1 for m=0.6, 0 for m=0.4
    assert marginal_loss(V, A_, margin=0.6).item() == pytest.approx(0.1, abs=1e-6)
    assert marginal_loss(V, A_, margin=0.4).item() == pytest.approx(0.0, abs=1e-7)


def test_reconstruction_loss_hand_value_and_mask():
    dec = torch.zeros(1, 2, 1, 2)
    tgt = torch.tensor([[[[1.0, 1.0]], [[2.0, 0.0]]]])
    assert reconstruction_loss(dec, tgt).item() == pytest.approx((1 + 1 + 4 + 0) / 4)
    assert reconstruction_loss(dec, tgt, torch.tensor([[True, False]])).item() == pytest.approx(1.0)


def test_stage1_loss_combines_terms():
    dec = torch.zeros(2, 2, 1, 2)
    tgt = torch.ones(2, 2, 1, 2)
    loss, parts = stage1_loss(V, A_, dec, tgt, lam=0.1, tau=0.5)
    assert parts["rec"] == pytest.approx(1.0)
    assert loss.item() == pytest.approx(1.0 + 0.1 * parts["nce"], rel=1e-6)


def test_bad_inputs_raise_clear_errors():
    with pytest.raises(World2ActError, match="share T and D"):
        chunkwise_similarity(V, A_[:, :1])
    with pytest.raises(World2ActError, match="direction"):
        infonce_from_similarity(S, direction="sideways")
    with pytest.raises(World2ActError, match="square"):
        infonce_from_similarity(torch.zeros(2, 3))


def test_infonce_loss_is_stage2s_cross_entropy_form_and_masked_similarity():
    """Stage 2 (posttrain/objective.py) states Eq. 1 as cross-entropy over sim / τ and the
    similarity as a masked chunk-averaged cosine; infonce_loss / chunkwise_similarity give the same."""
    import torch.nn.functional as F

    from world2act.align import infonce_loss

    g = torch.Generator().manual_seed(0)
    v, a = torch.randn(5, 4, 8, generator=g, requires_grad=True), torch.randn(5, 4, 8, generator=g)
    valid = torch.rand(5, 4, generator=g) > 0.3
    cos = torch.einsum("itd,jtd->ijt", F.normalize(v, dim=-1), F.normalize(a, dim=-1))
    m = (valid[:, None, :] & valid[None, :, :]).float()
    ref_sim = (cos * m).sum(-1) / m.sum(-1).clamp(min=1.0)
    sim = chunkwise_similarity(v, a, valid)
    assert torch.allclose(sim, ref_sim, atol=1e-6)
    labels = torch.arange(5)
    for tau in (0.07, 0.5):
        a2v = F.cross_entropy((sim / tau).t(), labels)
        assert torch.allclose(infonce_loss(sim, tau, bidirectional=False), a2v, atol=1e-5)
        both = 0.5 * (F.cross_entropy(sim / tau, labels) + a2v)
        assert torch.allclose(infonce_loss(sim, tau), both, atol=1e-5)
    (gr,) = torch.autograd.grad(infonce_loss(sim, 0.07), v)
    (gr_ref,) = torch.autograd.grad(0.5 * (F.cross_entropy(ref_sim / 0.07, labels)
                                           + F.cross_entropy((ref_sim / 0.07).t(), labels)), v)
    assert torch.allclose(gr, gr_ref, atol=1e-5)
