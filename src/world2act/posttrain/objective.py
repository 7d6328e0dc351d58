"""The Stage-2 objective: match the policy's action embeddings to imagined video embeddings.

Paper Sec. 4.2: for N parallel rollouts from different initial states of the same task, the
combined chunks ``a_k + Δa_k`` are embedded with the frozen action adapter f_a and compared
chunk-wise with the world model's imagined video embeddings ``f_v(z)`` using the Eq. 1
bidirectional InfoNCE: the same environment is the positive pair, the other initial states
of the same task are the negatives. No reward and no success signal enters the loss.
"""
from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F


@dataclasses.dataclass
class RolloutBatch:
    """What one round of on-policy rollouts yields for the update (all tensors on one device).

    Attributes:
        images: ``[N, T, 3, H, W]`` float in [0, 1], the residual's camera at each chunk start.
        states: ``[N, T, S]`` raw proprioception at each chunk start.
        base_chunks: ``[N, T, K, A]`` the frozen base policy's chunks, normalised action units.
        targets: ``[N, T, D]`` imagined video embeddings f_v(z) for the same chunk indices.
        valid: ``[N, T]`` bool, False for chunks after an environment error or past the budget.
    """

    images: torch.Tensor
    states: torch.Tensor
    base_chunks: torch.Tensor
    targets: torch.Tensor
    valid: torch.Tensor


def masked_chunkwise_cosine(video: torch.Tensor, action: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Chunk-averaged cosine similarity between every video and every action sequence.

    Args:
        video: ``[N, T, D]``; action: ``[N, T, D]``; valid: ``[N, T]`` (a chunk counts for the
            pair (i, j) when it is valid in both rollouts).

    Returns:
        ``[N, N]`` with entry (i, j) = mean over shared valid t of cos(video_i,t, action_j,t)
        (paper Eq. 1's s(·,·)).
    """
    v = F.normalize(video, dim=-1)
    a = F.normalize(action, dim=-1)
    cos = torch.einsum("itd,jtd->ijt", v, a)  # [N, N, T]
    m = (valid[:, None, :] & valid[None, :, :]).float()
    return (cos * m).sum(-1) / m.sum(-1).clamp(min=1.0)


def stage2_infonce(sim: torch.Tensor, tau: float = 0.07, bidirectional: bool = True) -> torch.Tensor:
    """Eq. 1 over a similarity matrix whose diagonal holds the positive pairs.

    Args:
        sim: ``[N, N]`` similarities s(v_i, a_j).
        tau: temperature.
        bidirectional: average video→action and action→video terms (the paper); False keeps
            action→video only (Table S3 "single InfoNCE").

    Returns:
        scalar loss.
    """
    logits = sim / tau
    labels = torch.arange(sim.shape[0], device=sim.device)
    a2v = F.cross_entropy(logits.t(), labels)
    if not bidirectional:
        return a2v
    return 0.5 * (F.cross_entropy(logits, labels) + a2v)


def stage2_step(residual: torch.nn.Module, action_adapter: torch.nn.Module, batch: RolloutBatch,
                state_norm: tuple[torch.Tensor, torch.Tensor], *, tau: float = 0.07, bidirectional: bool = True,
                delta_l2: float = 0.0) -> tuple[torch.Tensor, dict[str, float]]:
    """Loss and diagnostics for one Stage-2 update (gradients reach only ``residual``).

    Args:
        residual: :class:`world2act.policies.residual_net.ResidualNet`.
        action_adapter: frozen f_a ``[B, K, A] -> [B, D]``.
        batch: :class:`RolloutBatch` with N ≥ 2 rollouts of one task.
        state_norm: (mean ``[S]``, std ``[S]``) for the proprioception.
        tau: InfoNCE temperature (paper: 0.07).
        delta_l2: optional weight of mean Δa² (0 = the paper's pure contrastive objective).

    Returns:
        (loss, metrics) with metrics ``loss``, ``infonce``, ``pos_cos`` (mean positive-pair
        similarity, the paper's Fig. 5a), ``neg_cos`` and ``delta_abs`` (mean |Δa|).
    """
    N, T = batch.valid.shape
    K, A = batch.base_chunks.shape[-2:]
    flat_valid = batch.valid.reshape(-1)
    img = batch.images.reshape(N * T, *batch.images.shape[2:])
    st = (batch.states.reshape(N * T, -1) - state_norm[0]) / state_norm[1]
    base = batch.base_chunks.reshape(N * T, K, A)
    delta = residual(img, st, base)  # [N*T, K, A]
    combined = (base + delta).clamp(-3.0, 3.0)
    emb = action_adapter(combined).reshape(N, T, -1)
    sim = masked_chunkwise_cosine(batch.targets, emb, batch.valid)
    infonce = stage2_infonce(sim, tau, bidirectional)
    loss = infonce
    if delta_l2 > 0:
        loss = loss + delta_l2 * (delta[flat_valid] ** 2).mean()
    with torch.no_grad():
        eye = torch.eye(N, dtype=torch.bool, device=sim.device)
        metrics = {
            "loss": float(loss),
            "infonce": float(infonce),
            "pos_cos": float(sim[eye].mean()),
            "neg_cos": float(sim[~eye].mean()) if N > 1 else float("nan"),
            "delta_abs": float(delta[flat_valid].abs().mean()) if flat_valid.any() else 0.0,
        }
    return loss, metrics
