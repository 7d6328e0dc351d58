"""Negative sampling for Stage 1 (paper Sec. 4.1).

For each anchor (a paired video/action sequence) the paper draws negatives of two kinds:

* **easy** — sequences of *other* atomic skills,
* **hard** — sequences of the *same* skill from *other* demonstrations (prevents collapse onto
  skill identity / background cues).

A fraction ``hard_ratio`` of each anchor's ``num_negatives`` negatives is hard (paper: 0.25;
the authors' code: 0.75). When an anchor has too few hard candidates the rest is filled with
easy ones (and vice versa); the realised hard fraction is reported. The anchor itself is never
a negative, nor is any other sequence of the same skill from the same demonstration (e.g.
another window of the same clip), which is neither kind of negative.
"""
from __future__ import annotations

import dataclasses

import numpy as np
import torch

from world2act import World2ActError


@dataclasses.dataclass
class NegativeBatch:
    """One training batch built around anchors and their sampled negatives.

    Attributes:
        indices: ``[U]`` dataset indices of every item in the batch (anchors first).
        anchors: bool ``[U]``, True for anchors (only they contribute to the contrastive loss).
        candidates: bool ``[U, U]``; row i (an anchor) marks its positive (i) and its negatives.
        num_hard: hard negatives drawn; num_easy: easy negatives drawn.
    """

    indices: np.ndarray
    anchors: torch.Tensor
    candidates: torch.Tensor
    num_hard: int
    num_easy: int

    @property
    def hard_fraction(self) -> float:
        n = self.num_hard + self.num_easy
        return self.num_hard / n if n else float("nan")


class NegativeSampler:
    """Draws easy/hard negatives by skill and demonstration identity.

    Args:
        skill_ids: ``[N]`` skill label of each dataset item (e.g. its skill prompt index).
        demo_ids: ``[N]`` source-demonstration label of each item.
        num_negatives: negatives per anchor (M).
        hard_ratio: fraction of the M negatives that are hard, in [0, 1] (paper 0.25).
        seed: RNG seed.

    Raises:
        World2ActError: lengths differ, bad ratio, or fewer than 2 items.
    """

    def __init__(self, skill_ids, demo_ids, num_negatives: int = 15, hard_ratio: float = 0.25, seed: int = 0):
        self.skill = np.asarray(skill_ids)
        self.demo = np.asarray(demo_ids)
        if self.skill.shape != self.demo.shape or self.skill.ndim != 1:
            raise World2ActError(f"NegativeSampler: skill_ids {self.skill.shape} and demo_ids {self.demo.shape} must be equal-length 1-D")
        if not 0.0 <= float(hard_ratio) <= 1.0:
            raise World2ActError(f"hard_ratio must be in [0, 1], got {hard_ratio}")
        if num_negatives < 1:
            raise World2ActError(f"num_negatives must be >= 1, got {num_negatives}")
        if len(self.skill) < 2:
            raise World2ActError(f"NegativeSampler: need at least 2 items, got {len(self.skill)}")
        self.num_negatives = int(num_negatives)
        self.hard_ratio = float(hard_ratio)
        self.rng = np.random.default_rng(seed)
        n = len(self.skill)
        same_skill = self.skill[:, None] == self.skill[None, :]
        same_demo = self.demo[:, None] == self.demo[None, :]
        idx = np.arange(n)
        self._hard = [idx[same_skill[i] & ~same_demo[i]] for i in range(n)]
        self._easy = [idx[~same_skill[i]] for i in range(n)]
        self._by_skill: dict = {}
        for i in range(n):
            self._by_skill.setdefault(self.skill[i].item(), []).append(i)

    def hard_pool(self, i: int) -> np.ndarray:
        """Indices of item i's hard negatives (same skill, other demonstration)."""
        return self._hard[i]

    def easy_pool(self, i: int) -> np.ndarray:
        """Indices of item i's easy negatives (other skills)."""
        return self._easy[i]

    def sample(self, i: int, rng: np.random.Generator | None = None) -> tuple[np.ndarray, int]:
        """Negatives of anchor ``i``: ``(indices [<=M], number of them that are hard)``.

        Draws ``round(hard_ratio·M)`` hard and the rest easy, without replacement; a short
        pool is topped up from the other kind; never returns ``i``.
        """
        rng = rng or self.rng
        M = self.num_negatives
        hard, easy = self._hard[i], self._easy[i]
        want_h = int(round(self.hard_ratio * M))
        n_h = min(want_h, len(hard))
        n_e = min(M - n_h, len(easy))
        n_h = min(M - n_e, len(hard))  # top up with hard when easy ones run short
        h = rng.choice(hard, size=n_h, replace=False) if n_h else np.empty(0, dtype=int)
        e = rng.choice(easy, size=n_e, replace=False) if n_e else np.empty(0, dtype=int)
        return np.concatenate([h, e]).astype(int), int(n_h)

    def batch(self, num_anchors: int, rng: np.random.Generator | None = None,
              pool: np.ndarray | None = None) -> NegativeBatch:
        """Build a batch: ``num_anchors`` anchors (drawn from ``pool`` or all items, without
        replacement) plus their negatives, with the candidate mask for the loss."""
        rng = rng or self.rng
        pool = np.arange(len(self.skill)) if pool is None else np.asarray(pool)
        k = min(int(num_anchors), len(pool))
        anchors = rng.choice(pool, size=k, replace=False)
        order: dict[int, int] = {int(a): j for j, a in enumerate(anchors)}
        negs, nh_total, ne_total = [], 0, 0
        for a in anchors:
            ng, nh = self.sample(int(a), rng)
            negs.append(ng)
            nh_total += nh
            ne_total += len(ng) - nh
            for x in ng:
                order.setdefault(int(x), len(order))
        U = len(order)
        indices = np.empty(U, dtype=int)
        for x, j in order.items():
            indices[j] = x
        cand = torch.zeros(U, U, dtype=torch.bool)
        anc = torch.zeros(U, dtype=torch.bool)
        for a, ng in zip(anchors, negs):
            r = order[int(a)]
            anc[r] = True
            cand[r, r] = True
            for x in ng:
                cand[r, order[int(x)]] = True
        return NegativeBatch(indices, anc, cand, nh_total, ne_total)

    def in_batch(self, batch_size: int, rng: np.random.Generator | None = None) -> NegativeBatch:
        """An in-batch batch (the paper's "negatives (in-batch)"): every item is an anchor and its
        negatives are drawn from the other items of the same batch.

        The batch is composed of skill groups: each group holds items of one skill from
        distinct demonstrations (``round(hard_ratio·M) + 1`` of them where the skill has that
        many), so that hard negatives exist in the batch; groups are added until
        ``batch_size`` items. Each anchor then gets ``round(hard_ratio·M)`` hard and the rest
        easy negatives among the batch (topped up from the other kind when short; never
        itself, never an item of the same skill and demonstration). Cost: ``batch_size``
        forward passes instead of ``anchors·(1+M)`` for :meth:`batch`.
        """
        rng = rng or self.rng
        M = self.num_negatives
        want_h = int(round(self.hard_ratio * M))
        group = max(2, want_h + 1)
        n_groups = max(2, batch_size // group)
        sizes = [batch_size // n_groups + (1 if g < batch_size % n_groups else 0) for g in range(n_groups)]
        skills = list(self._by_skill)
        order = rng.permutation(len(skills))
        chosen: list[int] = []
        used: set[int] = set()
        deficit = 0
        for gi, k in enumerate(order):
            if len(chosen) >= batch_size:
                break
            target = (sizes[gi] if gi < n_groups else 0) + deficit
            if target <= 0:
                break
            perm = rng.permutation(np.asarray(self._by_skill[skills[k]]))
            seen, pick = set(), []
            for i in perm:  # one item per demonstration (random window)
                d = self.demo[i].item()
                if d not in seen:
                    seen.add(d)
                    pick.append(int(i))
                if len(pick) == target:
                    break
            pick = pick[: batch_size - len(chosen)]
            chosen.extend(pick)
            used.update(pick)
            deficit = target - len(pick)
        if len(chosen) < batch_size:  # small datasets: fill with any unused items
            rest = np.array([i for i in rng.permutation(len(self.skill)) if int(i) not in used], dtype=int)
            chosen.extend(rest[: batch_size - len(chosen)].tolist())
        indices = np.asarray(chosen, dtype=int)
        U = len(indices)
        sk, de = self.skill[indices], self.demo[indices]
        cand = torch.zeros(U, U, dtype=torch.bool)
        nh_total = ne_total = 0
        local = np.arange(U)
        for r in range(U):
            hard = local[(sk == sk[r]) & (de != de[r])]
            easy = local[sk != sk[r]]
            n_h = min(want_h, len(hard))
            n_e = min(M - n_h, len(easy))
            n_h = min(M - n_e, len(hard))
            h = rng.choice(hard, size=n_h, replace=False) if n_h else np.empty(0, dtype=int)
            e = rng.choice(easy, size=n_e, replace=False) if n_e else np.empty(0, dtype=int)
            cand[r, r] = True
            cand[r, torch.from_numpy(np.concatenate([h, e]).astype(np.int64))] = True
            nh_total += n_h
            ne_total += n_e
        return NegativeBatch(indices, torch.ones(U, dtype=torch.bool), cand, nh_total, ne_total)
