"""Stage-1 losses: chunk-wise bidirectional InfoNCE (paper Eq. 1), its Table S3 ablations, and
action reconstruction.

Similarity (Sec. 4.1): ``s(v_i, a_j) = (1/T') Σ_t cos(v_i,t, a_j,t)``, the chunk-averaged cosine
between a video-embedding sequence and an action-embedding sequence (only time steps valid in
both sequences count when masks are given).

Eq. 1 (bidirectional InfoNCE, positives on the diagonal)::

    L = -1/(2B) Σ_i [ log exp(s_ii/τ) / Σ_{j∈N_i} exp(s_ij/τ)      (video i → actions)
                    + log exp(s_ii/τ) / Σ_{j∈N_i} exp(s_ji/τ) ]    (action i → videos)

where ``N_i`` is the anchor's positive plus its sampled negatives (all of the batch when no
candidate mask is given).

Table S3 ablations (``variant``):

* ``bi_infonce``   — Eq. 1 as above (the paper's choice, default),
* ``single_infonce`` — the action → video term only,
* ``marginal``     — a hinge (margin) contrastive loss on the same similarities, both directions:
  ``mean_{i, j∈N_i, j≠i} [max(0, m - s_ii + s_ij) + max(0, m - s_ii + s_ji)] / 2``,
* ``global``       — Eq. 1 on *global* similarities: each sequence is first mean-pooled over
  time into one descriptor, then one cosine per pair.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from world2act import World2ActError

LOSS_VARIANTS = ("bi_infonce", "single_infonce", "marginal", "global")
DIRECTIONS = ("both", "a2v", "v2a")


def _masks(video_emb, action_emb, mask, action_mask):
    B, T = video_emb.shape[:2]
    Bp = action_emb.shape[0]
    if action_emb.shape[1] != T or action_emb.shape[-1] != video_emb.shape[-1]:
        raise World2ActError(f"similarity: video [B, T, D] {list(video_emb.shape)} and action [B', T, D] "
                             f"{list(action_emb.shape)} must share T and D")
    if mask is None and action_mask is None:
        return None, None
    if mask is None:
        mask = torch.ones(B, T, dtype=torch.bool, device=video_emb.device)
    if action_mask is None:
        if Bp != B:
            action_mask = torch.ones(Bp, T, dtype=torch.bool, device=video_emb.device)
        else:
            action_mask = mask
    if tuple(mask.shape) != (B, T) or tuple(action_mask.shape) != (Bp, T):
        raise World2ActError(f"similarity: mask {list(mask.shape)} / action_mask {list(action_mask.shape)} "
                             f"must be [B={B}, T={T}] / [B'={Bp}, T={T}]")
    return mask.bool(), action_mask.bool()


def chunkwise_similarity(video_emb: torch.Tensor, action_emb: torch.Tensor, mask: torch.Tensor | None = None,
                         action_mask: torch.Tensor | None = None) -> torch.Tensor:
    """Chunk-averaged cosine similarity s(v_i, a_j) of paper Eq. 1.

    Args:
        video_emb: ``[B, T, D]`` video embeddings f_v(z).
        action_emb: ``[B', T, D]`` action embeddings f_a(a).
        mask: optional bool ``[B, T]``, True where video chunk t exists.
        action_mask: optional bool ``[B', T]``; defaults to ``mask`` when ``B' == B``, else all True.

    Returns:
        ``[B, B']``; entry (i, j) is the mean over t valid in both sequences of
        ``cos(video_i,t, action_j,t)`` (0 when they share no valid t).

    Raises:
        World2ActError: T/D or mask shapes disagree.
    """
    mv, ma = _masks(video_emb, action_emb, mask, action_mask)
    v = F.normalize(video_emb, dim=-1)
    a = F.normalize(action_emb, dim=-1)
    cos = torch.einsum("itd,jtd->ijt", v, a)  # [B, B', T]
    if mv is None:
        return cos.mean(-1)
    m = (mv[:, None, :] & ma[None, :, :]).to(cos.dtype)
    return (cos * m).sum(-1) / m.sum(-1).clamp(min=1.0)


def global_similarity(video_emb: torch.Tensor, action_emb: torch.Tensor, mask: torch.Tensor | None = None,
                      action_mask: torch.Tensor | None = None) -> torch.Tensor:
    """Global-descriptor similarity (Table S3 "Global Similarity" ablation).

    Each sequence is mean-pooled over its valid time steps into one ``[D]`` descriptor, then
    one cosine per pair. Args/returns as :func:`chunkwise_similarity` (``[B, B']``).
    """
    mv, ma = _masks(video_emb, action_emb, mask, action_mask)

    def pool(x, m):
        if m is None:
            return x.mean(1)
        w = m.to(x.dtype)[..., None]
        return (x * w).sum(1) / w.sum(1).clamp(min=1.0)

    v = F.normalize(pool(video_emb, mv), dim=-1)
    a = F.normalize(pool(action_emb, ma), dim=-1)
    return v @ a.t()


def _check_sim(sim, candidates, anchors):
    B = sim.shape[0]
    if sim.dim() != 2 or sim.shape[1] != B:
        raise World2ActError(f"contrastive loss: similarity must be square [B, B] with positives on the diagonal, got {list(sim.shape)}")
    eye = torch.eye(B, dtype=torch.bool, device=sim.device)
    if candidates is None:
        cand = torch.ones(B, B, dtype=torch.bool, device=sim.device)
    else:
        if tuple(candidates.shape) != (B, B):
            raise World2ActError(f"contrastive loss: candidates must be bool [B, B] = [{B}, {B}], got {list(candidates.shape)}")
        cand = candidates.bool() | eye
    if anchors is None:
        anc = torch.ones(B, dtype=torch.bool, device=sim.device)
    else:
        if tuple(anchors.shape) != (B,):
            raise World2ActError(f"contrastive loss: anchors must be bool [B={B}], got {list(anchors.shape)}")
        anc = anchors.bool()
    if not bool(anc.any()):
        raise World2ActError("contrastive loss: no anchor selected")
    return cand, anc, eye


def infonce_from_similarity(sim: torch.Tensor, tau: float = 0.07, candidates: torch.Tensor | None = None,
                            anchors: torch.Tensor | None = None, direction: str = "both") -> torch.Tensor:
    """Eq. 1 on a precomputed similarity matrix.

    Args:
        sim: ``[B, B]`` with ``sim[i, j] = s(v_i, a_j)``; positives on the diagonal.
        tau: temperature τ (paper 0.07).
        candidates: optional bool ``[B, B]``; row i marks N_i, the items anchor i is contrasted
            with (its positive i is always included). For the action→video term anchor i's
            denominator runs over videos j ∈ N_i, i.e. ``s_ji``.
        anchors: optional bool ``[B]``; only these rows contribute to the loss (the others
            serve only as negatives). Default: all.
        direction: ``both`` (Eq. 1), ``a2v`` (action → video only; the Table S3 single
            variant) or ``v2a``.

    Returns:
        scalar loss (mean over anchors; ``both`` averages the two directions).

    Raises:
        World2ActError: bad shapes or direction.
    """
    if direction not in DIRECTIONS:
        raise World2ActError(f"direction {direction!r} is not one of {DIRECTIONS}")
    if tau <= 0:
        raise World2ActError(f"tau must be > 0, got {tau}")
    cand, anc, eye = _check_sim(sim, candidates, anchors)
    logits = sim / tau
    neg_inf = torch.finfo(logits.dtype).min
    out = []
    if direction in ("both", "v2a"):
        lv = logits.masked_fill(~cand, neg_inf)
        out.append(-(lv.diagonal() - torch.logsumexp(lv, dim=1))[anc].mean())
    if direction in ("both", "a2v"):
        la = logits.t().masked_fill(~cand, neg_inf)  # row i: s_ji over j
        out.append(-(la.diagonal() - torch.logsumexp(la, dim=1))[anc].mean())
    return sum(out) / len(out)


def infonce_loss(sim: torch.Tensor, tau: float = 0.07, bidirectional: bool = True,
                 candidates: torch.Tensor | None = None, anchors: torch.Tensor | None = None) -> torch.Tensor:
    """Eq. 1 from a similarity matrix: the one implementation Stage 1 and Stage 2 share.

    Args:
        sim: ``[N, N]`` with ``sim[i, j] = s(v_i, a_j)`` (e.g. :func:`chunkwise_similarity`
            with the rollouts' valid-chunk mask); positives on the diagonal.
        tau: temperature τ (paper 0.07).
        bidirectional: average the video→action and action→video terms (the paper); False
            keeps action→video only (Table S3 "single InfoNCE").
        candidates / anchors: as :func:`infonce_from_similarity` (default: every other row is a
            negative of every anchor).

    Returns:
        scalar loss, ``mean_i -log softmax_j(s_ji / τ)[i]`` (action→video) averaged with its
        video→action twin when ``bidirectional``.
    """
    return infonce_from_similarity(sim, tau, candidates, anchors, "both" if bidirectional else "a2v")


def marginal_from_similarity(sim: torch.Tensor, margin: float = 0.2, candidates: torch.Tensor | None = None,
                             anchors: torch.Tensor | None = None, direction: str = "both") -> torch.Tensor:
    """Hinge (margin) contrastive loss on a similarity matrix (Table S3 "Marginal").

    ``mean over anchors i and negatives j ∈ N_i \\ {i} of max(0, margin - s_ii + s_ij)`` (video
    anchor) and ``max(0, margin - s_ii + s_ji)`` (action anchor), averaged over directions.
    Args as :func:`infonce_from_similarity`. Returns a scalar; 0 when no negatives exist.
    """
    if direction not in DIRECTIONS:
        raise World2ActError(f"direction {direction!r} is not one of {DIRECTIONS}")
    cand, anc, eye = _check_sim(sim, candidates, anchors)
    neg = (cand & ~eye) & anc[:, None]
    if not bool(neg.any()):
        return sim.sum() * 0.0
    pos = sim.diagonal()[:, None]
    out = []
    if direction in ("both", "v2a"):
        out.append(F.relu(margin - pos + sim)[neg].mean())
    if direction in ("both", "a2v"):
        out.append(F.relu(margin - pos + sim.t())[neg].mean())
    return sum(out) / len(out)


def bidirectional_infonce(video_emb: torch.Tensor, action_emb: torch.Tensor, tau: float = 0.07,
                          mask: torch.Tensor | None = None, candidates: torch.Tensor | None = None,
                          anchors: torch.Tensor | None = None, direction: str = "both",
                          similarity: str = "chunk") -> torch.Tensor:
    """Chunk-wise bidirectional InfoNCE of paper Eq. 1 between paired sequences.

    Args:
        video_emb: ``[B, T, D]``; action_emb: ``[B, T, D]``; pair i is (video i, action i).
        tau: temperature (paper 0.07).
        mask: optional bool ``[B, T]`` valid chunks (shared by both modalities of a pair).
        candidates / anchors: see :func:`infonce_from_similarity` (default: every other item
            of the batch is a negative of every anchor).
        direction: ``both`` (paper), ``a2v`` (Table S3 single InfoNCE), ``v2a``.
        similarity: ``chunk`` (paper) or ``global`` (Table S3 global-descriptor ablation).

    Returns:
        scalar loss.
    """
    sim = pair_similarity(video_emb, action_emb, mask, similarity)
    return infonce_from_similarity(sim, tau, candidates, anchors, direction)


def single_infonce(video_emb, action_emb, tau: float = 0.07, mask=None, candidates=None, anchors=None) -> torch.Tensor:
    """Table S3 "Single InfoNCE": the action → video term of Eq. 1 only. Returns a scalar."""
    return bidirectional_infonce(video_emb, action_emb, tau, mask, candidates, anchors, direction="a2v")


def global_infonce(video_emb, action_emb, tau: float = 0.07, mask=None, candidates=None, anchors=None) -> torch.Tensor:
    """Table S3 "Global Similarity": Eq. 1 on time-pooled descriptors. Returns a scalar."""
    return bidirectional_infonce(video_emb, action_emb, tau, mask, candidates, anchors, similarity="global")


def marginal_loss(video_emb, action_emb, margin: float = 0.2, mask=None, candidates=None, anchors=None) -> torch.Tensor:
    """Table S3 "Marginal": bidirectional hinge loss on chunk-wise similarities. Returns a scalar."""
    sim = chunkwise_similarity(video_emb, action_emb, mask)
    return marginal_from_similarity(sim, margin, candidates, anchors)


def pair_similarity(video_emb, action_emb, mask=None, similarity: str = "chunk") -> torch.Tensor:
    """``[B, B']`` similarities, ``chunk`` (Eq. 1) or ``global`` (time-pooled)."""
    if similarity == "chunk":
        return chunkwise_similarity(video_emb, action_emb, mask)
    if similarity == "global":
        return global_similarity(video_emb, action_emb, mask)
    raise World2ActError(f"similarity {similarity!r} is not one of ('chunk', 'global')")


def contrastive_loss(variant: str, video_emb: torch.Tensor, action_emb: torch.Tensor, *, tau: float = 0.07,
                     margin: float = 0.2, mask=None, candidates=None, anchors=None) -> torch.Tensor:
    """The contrastive term L_NCE for one of :data:`LOSS_VARIANTS` (Table S3).

    Raises:
        World2ActError: unknown variant (the message lists the valid ones).
    """
    if variant == "bi_infonce":
        return bidirectional_infonce(video_emb, action_emb, tau, mask, candidates, anchors)
    if variant == "single_infonce":
        return single_infonce(video_emb, action_emb, tau, mask, candidates, anchors)
    if variant == "global":
        return global_infonce(video_emb, action_emb, tau, mask, candidates, anchors)
    if variant == "marginal":
        return marginal_loss(video_emb, action_emb, margin, mask, candidates, anchors)
    raise World2ActError(f"loss variant {variant!r} is not one of {LOSS_VARIANTS}")


def reconstruction_loss(decoded: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """L_rec: MSE between decoded and target (normalised) actions.

    Args:
        decoded, target: ``[B, T, K, A]`` (or any equal shapes).
        mask: optional bool ``[B, T]`` (chunks outside the mask are ignored).

    Returns:
        scalar mean squared error over valid elements.
    """
    if decoded.shape != target.shape:
        raise World2ActError(f"reconstruction_loss: decoded {list(decoded.shape)} != target {list(target.shape)}")
    se = (decoded - target) ** 2
    if mask is None:
        return se.mean()
    m = mask.to(se.dtype).reshape(*mask.shape, *([1] * (se.dim() - mask.dim())))
    denom = (m.expand_as(se)).sum().clamp(min=1.0)
    return (se * m).sum() / denom


def stage1_loss(video_emb: torch.Tensor, action_emb: torch.Tensor, decoded: torch.Tensor, target_actions: torch.Tensor,
                *, variant: str = "bi_infonce", lam: float = 0.1, tau: float = 0.07, margin: float = 0.2,
                mask=None, candidates=None, anchors=None, rec_on_anchors_only: bool = False) -> tuple[torch.Tensor, dict]:
    """L = L_rec + λ·L_NCE (paper Sec. 4.1).

    Args:
        video_emb, action_emb: ``[B, T, D]``; decoded, target_actions: ``[B, T, K, A]``.
        variant: one of :data:`LOSS_VARIANTS`; lam: λ; tau: τ; margin: hinge margin.
        mask / candidates / anchors: as in :func:`infonce_from_similarity`.

    Returns:
        (loss, {"loss", "rec", "nce"} as floats).
    """
    nce = contrastive_loss(variant, video_emb, action_emb, tau=tau, margin=margin, mask=mask,
                           candidates=candidates, anchors=anchors)
    if rec_on_anchors_only and anchors is not None:
        sel = anchors.bool()
        rec = reconstruction_loss(decoded[sel], target_actions[sel], None if mask is None else mask[sel])
    else:
        rec = reconstruction_loss(decoded, target_actions, mask)
    loss = rec + lam * nce
    return loss, {"loss": float(loss.detach()), "rec": float(rec.detach()), "nce": float(nce.detach())}
