"""Held-out measures of the Stage-1 latent space: cosine gap, retrieval, reconstruction."""
from __future__ import annotations

import numpy as np
import torch

from world2act.align.losses import chunkwise_similarity, global_similarity, reconstruction_loss


@torch.no_grad()
def retrieval_metrics(video_emb: torch.Tensor, action_emb: torch.Tensor, mask: torch.Tensor | None = None,
                      skill_ids=None, demo_ids=None, similarity: str = "chunk") -> dict[str, float]:
    """Cosine-similarity statistics and top-1 sequence retrieval on paired sequences.

    Args:
        video_emb, action_emb: ``[N, T, D]``; pair i = (video i, action i).
        mask: optional bool ``[N, T]`` valid chunks.
        skill_ids, demo_ids: optional ``[N]`` labels to split negatives into hard (same skill,
            other demonstration) and easy (other skill), and to measure same-skill retrieval.
        similarity: ``chunk`` (Eq. 1's chunk-averaged cosine; always used for the cosine
            statistics) or ``global`` for the retrieval ranking.

    Returns:
        dict: ``n``, ``chance`` (1/N), ``top1_v2a`` (video → action), ``top1_a2v``,
        ``top1_v2a_x_chance`` / ``top1_a2v_x_chance`` (accuracy ÷ chance), ``pos_cos``,
        ``neg_cos``, ``cos_gap`` (pos − neg), and when labels are given ``hard_neg_cos``
        (negatives of the same skill from other demonstrations), ``easy_neg_cos``,
        ``hard_cos_gap`` (pos − hard neg), ``top1_v2a_same_skill`` / ``top1_a2v_same_skill``
        (ranking only among items of the anchor's skill) with ``chance_same_skill``.
    """
    N = video_emb.shape[0]
    sim = chunkwise_similarity(video_emb, action_emb, mask).double()
    rank_sim = sim if similarity == "chunk" else global_similarity(video_emb, action_emb, mask).double()
    eye = torch.eye(N, dtype=torch.bool)
    target = torch.arange(N)
    out: dict[str, float] = {"n": int(N), "chance": 1.0 / N}
    out["top1_v2a"] = float((rank_sim.argmax(1) == target).double().mean())
    out["top1_a2v"] = float((rank_sim.argmax(0) == target).double().mean())
    out["top1_v2a_x_chance"] = out["top1_v2a"] * N
    out["top1_a2v_x_chance"] = out["top1_a2v"] * N
    out["pos_cos"] = float(sim[eye].mean())
    out["neg_cos"] = float(sim[~eye].mean()) if N > 1 else float("nan")
    out["cos_gap"] = out["pos_cos"] - out["neg_cos"]
    if skill_ids is not None and demo_ids is not None:
        s = torch.as_tensor(np.asarray(skill_ids))
        d = torch.as_tensor(np.asarray(demo_ids))
        same_skill = s[:, None] == s[None, :]
        same_demo = d[:, None] == d[None, :]
        hard = same_skill & ~same_demo
        easy = ~same_skill
        out["hard_neg_cos"] = float(sim[hard].mean()) if hard.any() else float("nan")
        out["easy_neg_cos"] = float(sim[easy].mean()) if easy.any() else float("nan")
        out["hard_cos_gap"] = out["pos_cos"] - out["hard_neg_cos"]
        masked = rank_sim.masked_fill(~same_skill, float("-inf"))
        out["top1_v2a_same_skill"] = float((masked.argmax(1) == target).double().mean())
        out["top1_a2v_same_skill"] = float((masked.argmax(0) == target).double().mean())
        out["chance_same_skill"] = float((1.0 / same_skill.sum(1).double()).mean())
    return out


def heldout_summary(h: dict) -> dict:
    """The held-out figures that matter for Stage 2, from :func:`retrieval_metrics`' dict.

    Retrieval among all held-out windows is dominated by easy negatives (other skills); Stage 2
    contrasts rollouts of one task, so the same-skill retrieval and the hard-negative cosine
    (same skill, other demonstrations) are reported beside it. Keys missing from ``h`` (no
    labels) come out as NaN.

    Returns:
        ``top1_v2a_x_chance``, ``top1_a2v_x_chance``, ``same_skill_top1_v2a``,
        ``same_skill_top1_a2v``, ``same_skill_chance``, ``same_skill_top1_v2a_x_chance``,
        ``same_skill_top1_a2v_x_chance``, ``pos_cos``, ``hard_neg_cos``, ``easy_neg_cos``,
        ``hard_cos_gap`` (pos − hard neg), ``cos_gap`` (pos − all negatives).
    """
    nan = float("nan")
    g = lambda k: float(h.get(k, nan))  # noqa: E731
    chance = g("chance_same_skill")
    out = {"top1_v2a_x_chance": g("top1_v2a_x_chance"), "top1_a2v_x_chance": g("top1_a2v_x_chance"),
           "same_skill_top1_v2a": g("top1_v2a_same_skill"), "same_skill_top1_a2v": g("top1_a2v_same_skill"),
           "same_skill_chance": chance}
    for d in ("v2a", "a2v"):
        out[f"same_skill_top1_{d}_x_chance"] = out[f"same_skill_top1_{d}"] / chance if chance > 0 else nan
    out.update(pos_cos=g("pos_cos"), hard_neg_cos=g("hard_neg_cos"), easy_neg_cos=g("easy_neg_cos"),
               hard_cos_gap=g("pos_cos") - g("hard_neg_cos"), cos_gap=g("cos_gap"))
    return out


@torch.no_grad()
def evaluate_bundle(bundle, latents: torch.Tensor, actions_norm: torch.Tensor, mask: torch.Tensor | None = None,
                    skill_ids=None, demo_ids=None, batch: int = 256, similarity: str = "chunk") -> dict[str, float]:
    """All held-out metrics for a trained bundle.

    Args:
        bundle: object with ``f_v``, ``f_a``, ``g_a`` modules.
        latents: ``[N, T, C, H', W']`` world-model latents; actions_norm: ``[N, T, K, A]``
            normalised actions; mask: bool ``[N, T]``.

    Returns:
        :func:`retrieval_metrics` plus ``rec_mse`` (normalised units, valid chunks only).
    """
    dev = next(bundle.f_v.parameters()).device
    vs, as_, ds = [], [], []
    for i in range(0, latents.shape[0], batch):
        v = bundle.f_v(latents[i:i + batch].to(dev).float())
        a = bundle.f_a(actions_norm[i:i + batch].to(dev).float())
        vs.append(v.cpu())
        as_.append(a.cpu())
        ds.append(bundle.g_a(a).cpu())
    v, a, dec = torch.cat(vs), torch.cat(as_), torch.cat(ds)
    out = retrieval_metrics(v, a, mask, skill_ids, demo_ids, similarity=similarity)
    out["rec_mse"] = float(reconstruction_loss(dec, actions_norm.float(), mask))
    return out
