"""The Stage-2 objective: match the policy's action embeddings to imagined video embeddings.

Paper Sec. 4.2: for N parallel rollouts from different initial states of the same task, the
combined chunks ``a_k + Δa_k`` are embedded with the frozen action adapter f_a and compared
chunk-wise with the world model's imagined video embeddings ``f_v(z)`` using the Eq. 1
bidirectional InfoNCE: the same environment is the positive pair, the other initial states
of the same task are the negatives. No reward and no success signal enters the loss.

Options measured in docs/results.md ("Stage 2 machinery"): a per-chunk InfoNCE with temporal
negatives (:func:`chunk_infonce`) beside the paper's sequence-level one, f_a fed exactly the
executed action, and oracle diagnostics (how the corrected chunk moves relative to the
scripted expert's chunk, when a batch carries one).
"""
from __future__ import annotations

import dataclasses
from typing import Callable

import torch
import torch.nn.functional as F

from world2act.align.losses import chunkwise_similarity, infonce_loss


@dataclasses.dataclass
class RolloutBatch:
    """What one round of on-policy rollouts yields for the update (all tensors on one device).

    Attributes:
        images: ``[N, T, 3, H, W]`` float in [0, 1], the residual's camera at each chunk start.
        states: ``[N, T, S]`` raw proprioception at each chunk start.
        base_chunks: ``[N, T, K, A]`` the frozen base policy's chunks, normalised action units.
        targets: ``[N, T, D]`` imagined video embeddings f_v(z) for the same chunk indices.
        valid: ``[N, T]`` bool, False for chunks after an environment error, past the budget
            or without an aligned target chunk.
        groups: ``[N]`` int task index of each rollout (metrics only: same-task negatives), or None.
        expert_chunks: ``[N, T, K, A]`` the scripted expert's chunks aligned like ``targets``
            (normalised units; ``targets=demo`` only; diagnostics, never in the loss), or None.
        base_inputs: ``adapter=lora`` only (else None): the frozen base's own inputs at each
            chunk start, to re-sample its chunk with gradient — ``images`` uint8
            ``[N, T, C, H, W, 3]`` (all its cameras), ``state`` ``[N, T, S]``, ``lang``
            ``[N, T, 384]`` (instruction embeddings), ``noise`` ``[N, T, K, A]`` (the flow noise
            the rollout used); see :meth:`world2act.policies.lora_policy.LoraPolicy.inputs`.
    """

    images: torch.Tensor
    states: torch.Tensor
    base_chunks: torch.Tensor
    targets: torch.Tensor
    valid: torch.Tensor
    groups: torch.Tensor | None = None
    expert_chunks: torch.Tensor | None = None
    base_inputs: dict[str, torch.Tensor] | None = None

    def select(self, keep: torch.Tensor) -> "RolloutBatch":
        """The rollouts where ``keep`` (``[N]`` bool) is True."""
        def pick(v):
            if v is None:
                return None
            return {k: x[keep] for k, x in v.items()} if isinstance(v, dict) else v[keep]
        return RolloutBatch(**{f.name: pick(getattr(self, f.name)) for f in dataclasses.fields(self)})


def masked_chunkwise_cosine(video: torch.Tensor, action: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Chunk-averaged cosine similarity between every video and every action sequence.

    Args:
        video: ``[N, T, D]``; action: ``[N, T, D]``; valid: ``[N, T]`` (a chunk counts for the
            pair (i, j) when it is valid in both rollouts).

    Returns:
        ``[N, N]`` with entry (i, j) = mean over shared valid t of cos(video_i,t, action_j,t)
        (paper Eq. 1's s(·,·); Stage 1's :func:`world2act.align.losses.chunkwise_similarity`).
    """
    return chunkwise_similarity(video, action, valid)


def stage2_infonce(sim: torch.Tensor, tau: float = 0.07, bidirectional: bool = True) -> torch.Tensor:
    """Eq. 1 over a similarity matrix whose diagonal holds the positive pairs: Stage 1's one
    implementation, :func:`world2act.align.losses.infonce_loss`.

    Args:
        sim: ``[N, N]`` similarities s(v_i, a_j).
        tau: temperature.
        bidirectional: average video→action and action→video terms (the paper); False keeps
            action→video only (Table S3 "single InfoNCE").

    Returns:
        scalar loss.
    """
    return infonce_loss(sim, tau, bidirectional)


def chunk_infonce(video: torch.Tensor, action: torch.Tensor, valid: torch.Tensor, tau: float = 0.07,
                  bidirectional: bool = True, temporal_negatives: bool = True, min_lag: int = 2) -> torch.Tensor:
    """Per-chunk InfoNCE: one term per valid rollout chunk instead of one per rollout.

    For anchor (i, t) the positive is (video_i,t, action_i,t); the candidates are the targets
    of every rollout j at the same chunk t (other init states, and other tasks in a mixed
    batch) and, with ``temporal_negatives``, the same rollout's targets at chunks t' with
    |t' − t| ≥ ``min_lag``. Bidirectional as Eq. 1 (the candidate structure is symmetric).

    Args:
        video: ``[N, T, D]`` target embeddings; action: ``[N, T, D]``; valid: ``[N, T]`` bool.

    Returns:
        scalar loss (0 when no chunk is valid).
    """
    N, T, D = video.shape
    v = F.normalize(video, dim=-1).reshape(N * T, D)
    a = F.normalize(action, dim=-1).reshape(N * T, D)
    ok = valid.reshape(-1)
    env = torch.arange(N, device=video.device).repeat_interleave(T)
    t = torch.arange(T, device=video.device).repeat(N)
    allowed = t[:, None] == t[None, :]
    if temporal_negatives:
        allowed = allowed | ((env[:, None] == env[None, :]) & ((t[:, None] - t[None, :]).abs() >= min_lag))
    allowed = allowed & ok[:, None] & ok[None, :]
    rows = ok.nonzero().squeeze(1)
    if rows.numel() == 0:
        return video.sum() * 0.0
    logits = (a @ v.t()) / tau
    logits = logits.masked_fill(~allowed, float("-inf"))
    a2v = F.cross_entropy(logits[rows], rows)
    if not bidirectional:
        return a2v
    return 0.5 * (a2v + F.cross_entropy(logits.t()[rows], rows))


def stage2_step(residual: torch.nn.Module, action_adapter: torch.nn.Module, batch: RolloutBatch,
                state_norm: tuple[torch.Tensor, torch.Tensor], *, tau: float = 0.07, bidirectional: bool = True,
                delta_l2: float = 0.0, contrast: str = "sequence", temporal_negatives: bool = True,
                action_space: Callable[[torch.Tensor], torch.Tensor] | None = None,
                action_decoder: torch.nn.Module | None = None,
                chunk_fn: Callable[[RolloutBatch], torch.Tensor] | None = None,
                ) -> tuple[torch.Tensor, dict[str, float]]:
    """Loss and diagnostics for one Stage-2 update (gradients reach only ``residual``).

    Args:
        residual: :class:`world2act.policies.residual_net.ResidualNet`.
        action_adapter: frozen f_a ``[B, K, A] -> [B, D]``.
        batch: :class:`RolloutBatch` with N ≥ 2 rollouts of one task.
        state_norm: (mean ``[S]``, std ``[S]``) for the proprioception.
        tau: InfoNCE temperature (paper: 0.07).
        delta_l2: optional weight of mean Δa² (0 = the paper's pure contrastive objective).
        contrast: ``sequence`` (Eq. 1 on chunk-averaged similarities), ``chunk``
            (:func:`chunk_infonce`) or ``cosine`` (positives only, no negatives: mean
            1 − cos over valid chunks; an ablation, not the paper's objective) or ``decoded``
            (mean squared distance between the executed chunk and g_a(target), the target
            decoded by the frozen Stage-1 decoder ``action_decoder``: ours, not the paper's) or
            ``expert`` (the action-level oracle: the expert's own aligned chunk as the goal; an
            upper bound for what any latent target can give, ``targets=demo`` only).
        temporal_negatives: passed to :func:`chunk_infonce`.
        action_space: maps the normalised combined chunk ``[M, K, A]`` to what f_a sees (e.g.
            the executed action: un-normalise, clip to the action box, normalise); None = clamp
            to ±3 normalised units.
        action_decoder: the frozen Stage-1 g_a, for the oracle diagnostic ``decoded_*`` only
            (g_a(target) is the action chunk the target embedding decodes to).
        chunk_fn: another adapter instead of the residual (``residual`` is then unused):
            ``chunk_fn(batch)`` returns the differentiable combined chunk ``[N·T, K, A]`` in the
            same normalised units as base + Δa (LoRA inside the base:
            :meth:`world2act.policies.lora_policy.LoraPolicy.combined_chunk`); Δa is then that
            chunk minus ``batch.base_chunks`` (for ``delta_l2`` and the metrics). None = the residual.

    Returns:
        (loss, metrics) with metrics ``loss``, ``infonce``, ``pos_cos`` (mean positive-pair
        similarity, the paper's Fig. 5a), ``neg_cos`` (all other rollouts),
        ``neg_cos_same_task`` (when ``batch.groups`` is given), ``delta_abs`` (mean |Δa|) and,
        when ``batch.expert_chunks`` is given, ``expert_err_base`` / ``expert_err`` (mean
        |chunk − expert chunk| before / after the correction), ``toward_expert`` (cosine
        between Δa and expert − base, per chunk, averaged) and ``grad_toward_expert`` (cosine
        between the loss's descent direction on the executed chunk and expert − chunk: does
        the objective point at the expert at all, whatever the residual can represent); with
        ``action_decoder`` also ``decoded_err`` (mean |g_a(target) − expert chunk|) and
        ``decoded_toward_expert`` (cosine between g_a(target) − base and expert − base: how
        much of the way to the expert the target itself says, read through Stage 1's decoder).
    """
    N, T = batch.valid.shape
    flat_valid = batch.valid.reshape(-1)
    base, delta, combined = _combined_chunk(residual, batch, state_norm, action_space, chunk_fn)
    emb = action_adapter(combined).reshape(N, T, -1)
    sim = masked_chunkwise_cosine(batch.targets, emb, batch.valid)
    infonce = _contrast_loss(contrast, batch, emb, sim, combined, tau=tau, bidirectional=bidirectional,
                             temporal_negatives=temporal_negatives, action_decoder=action_decoder)
    loss = infonce
    if delta_l2 > 0:
        loss = loss + delta_l2 * (delta[flat_valid] ** 2).mean()
    metrics = _step_metrics(batch, loss, infonce, sim, delta)
    if batch.expert_chunks is not None and flat_valid.any():
        _expert_metrics(metrics, batch, infonce, base, delta, combined, action_space, action_decoder)
    return loss, metrics


def _combined_chunk(residual, batch: RolloutBatch, state_norm, action_space, chunk_fn):
    """The residual's (or ``chunk_fn``'s) correction of the base chunks and the combined chunk
    f_a sees (through ``action_space``, else clamped to ±3). Returns ``(base, delta, combined)``,
    each ``[N·T, K, A]``."""
    N, T = batch.valid.shape
    K, A = batch.base_chunks.shape[-2:]
    img = batch.images.reshape(N * T, *batch.images.shape[2:])
    st = (batch.states.reshape(N * T, -1) - state_norm[0]) / state_norm[1]
    base = batch.base_chunks.reshape(N * T, K, A)
    if chunk_fn is None:
        delta = residual(img, st, base)  # [N*T, K, A]
    else:  # LoRA inside the base: its re-sampled chunk, as a Δa relative to the frozen base's chunk
        delta = chunk_fn(batch).reshape(N * T, K, A) - base
    combined = action_space(base + delta) if action_space is not None else (base + delta).clamp(-3.0, 3.0)
    return base, delta, combined


def _contrast_loss(contrast: str, batch: RolloutBatch, emb, sim, combined, *, tau: float, bidirectional: bool,
                   temporal_negatives: bool, action_decoder) -> torch.Tensor:
    """The objective named by ``contrast`` (see :func:`stage2_step`), before ``delta_l2``."""
    N, T = batch.valid.shape
    K, A = batch.base_chunks.shape[-2:]
    if contrast == "chunk":
        infonce = chunk_infonce(batch.targets, emb, batch.valid, tau, bidirectional, temporal_negatives)
    elif contrast == "sequence":
        infonce = stage2_infonce(sim, tau, bidirectional)
    elif contrast == "cosine":  # positives only: 1 − cos(target, f_a(chunk)) per valid chunk
        pos = F.cosine_similarity(batch.targets, emb, dim=-1)
        infonce = (1.0 - pos)[batch.valid].mean() if batch.valid.any() else emb.sum() * 0.0
    elif contrast == "decoded":  # the target read as actions through Stage 1's frozen g_a, matched in action space
        if action_decoder is None:
            raise ValueError("contrast='decoded' needs the Stage-1 action decoder")
        with torch.no_grad():
            goal = action_decoder(batch.targets.reshape(N * T, -1))
        err = ((combined - goal) ** 2).mean(dim=(1, 2)).reshape(N, T)
        infonce = err[batch.valid].mean() if batch.valid.any() else emb.sum() * 0.0
    elif contrast == "expert":  # the upper bound: the expert's own chunk as the goal (targets=demo only)
        if batch.expert_chunks is None:
            raise ValueError("contrast='expert' needs the expert's chunks (targets=demo)")
        err = ((combined - batch.expert_chunks.reshape(N * T, K, A)) ** 2).mean(dim=(1, 2)).reshape(N, T)
        infonce = err[batch.valid].mean() if batch.valid.any() else emb.sum() * 0.0
    else:
        raise ValueError(f"contrast must be 'sequence', 'chunk', 'cosine', 'decoded' or 'expert', got {contrast!r}")
    return infonce


@torch.no_grad()
def _step_metrics(batch: RolloutBatch, loss, infonce, sim, delta) -> dict[str, float]:
    """``loss``, ``infonce``, ``pos_cos``, ``neg_cos``, ``delta_abs`` and (with ``batch.groups``)
    ``neg_cos_same_task``."""
    N = batch.valid.shape[0]
    flat_valid = batch.valid.reshape(-1)
    eye = torch.eye(N, dtype=torch.bool, device=sim.device)
    metrics = {
        "loss": float(loss),
        "infonce": float(infonce),
        "pos_cos": float(sim[eye].mean()),
        "neg_cos": float(sim[~eye].mean()) if N > 1 else float("nan"),
        "delta_abs": float(delta[flat_valid].abs().mean()) if flat_valid.any() else 0.0,
    }
    if batch.groups is not None:
        same = (batch.groups[:, None] == batch.groups[None, :]) & ~eye
        metrics["neg_cos_same_task"] = float(sim[same].mean()) if same.any() else float("nan")
    return metrics


def _expert_metrics(metrics: dict, batch: RolloutBatch, infonce, base, delta, combined, action_space,
                    action_decoder) -> None:
    """Add the expert diagnostics to ``metrics`` (``grad_toward_expert`` when the chunk carries a
    gradient, ``expert_err_base``, ``expert_err``, ``toward_expert``, and with ``action_decoder``
    ``decoded_err`` / ``decoded_toward_expert``); see :func:`stage2_step`."""
    N, T = batch.valid.shape
    K, A = batch.base_chunks.shape[-2:]
    flat_valid = batch.valid.reshape(-1)
    exp = batch.expert_chunks.reshape(N * T, K, A)[flat_valid]
    if combined.requires_grad:  # where the objective pushes the executed chunk, vs where the expert is
        (g,) = torch.autograd.grad(infonce, combined, retain_graph=True)
        g = -g[flat_valid].flatten(1)
        keep = g.norm(dim=1) > 0
        metrics["grad_toward_expert"] = (float(F.cosine_similarity(g[keep], (exp - combined.detach()[flat_valid])
                                                                  .flatten(1)[keep], dim=1).mean())
                                         if keep.any() else float("nan"))
    with torch.no_grad():
        b = (action_space(base) if action_space is not None else base)[flat_valid]
        c, d = combined.detach()[flat_valid], delta.detach()[flat_valid]
        metrics["expert_err_base"] = float((b - exp).abs().mean())
        metrics["expert_err"] = float((c - exp).abs().mean())
        metrics["toward_expert"] = float(F.cosine_similarity(d.flatten(1), (exp - b).flatten(1), dim=1).mean())
        if action_decoder is not None:
            dec = action_decoder(batch.targets.reshape(N * T, -1)[flat_valid])
            metrics["decoded_err"] = float((dec - exp).abs().mean())
            metrics["decoded_toward_expert"] = float(F.cosine_similarity((dec - b).flatten(1), (exp - b).flatten(1),
                                                                         dim=1).mean())
