"""Stage-1 training data: world-model latents paired with action chunks, cached once.

One item = one world-model window of a skill clip:

* ``latents`` ``[T', C, H', W']`` — the frozen WM's latents of the action-bearing latent frames
  j = 1..T' (latent frame 0 is the first frame alone and carries no actions, so it is dropped),
* ``actions`` ``[T', K, A]`` — for each of those latent frames, the K raw actions of the control
  steps it covers (``world2act.worldmodel.alignment.latent_action_ranges``),
* ``mask`` ``[T']`` — False for latent frames that lie past the end of a short clip (padding),
* labels: ``skill_ids`` (skill prompt), ``demo_ids`` (source demonstration), ``clip_ids``.

:func:`build_cache` (in :mod:`world2act.align.wm_cache`) computes these from a skill dataset and
a world model; :func:`synthetic_dataset` makes a related video/action toy set for tests.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from world2act import World2ActError
from world2act.utils.io import atomic_path


@dataclasses.dataclass
class AlignData:
    """Paired latent/action sequences (see module docstring for shapes)."""

    latents: torch.Tensor          # [N, T, C, H', W'] float
    actions: torch.Tensor          # [N, T, K, A] raw units
    mask: torch.Tensor             # [N, T] bool
    skill_ids: np.ndarray          # [N] int
    demo_ids: np.ndarray           # [N] int
    clip_ids: np.ndarray           # [N] int
    skill_names: list[str] = dataclasses.field(default_factory=list)
    info: dict = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        N = self.latents.shape[0]
        if self.latents.dim() != 5 or self.actions.dim() != 4 or self.mask.dim() != 2:
            raise World2ActError(f"AlignData: expected latents [N,T,C,H,W], actions [N,T,K,A], mask [N,T]; got "
                                 f"{list(self.latents.shape)}, {list(self.actions.shape)}, {list(self.mask.shape)}")
        if not (self.actions.shape[:2] == self.latents.shape[:2] == self.mask.shape):
            raise World2ActError(f"AlignData: N/T disagree: latents {list(self.latents.shape[:2])}, actions "
                                 f"{list(self.actions.shape[:2])}, mask {list(self.mask.shape)}")
        for name in ("skill_ids", "demo_ids", "clip_ids"):
            arr = np.asarray(getattr(self, name)).astype(np.int64)
            if arr.shape != (N,):
                raise World2ActError(f"AlignData: {name} must have shape [{N}], got {arr.shape}")
            setattr(self, name, arr)
        self.mask = self.mask.bool()

    def __len__(self) -> int:
        return int(self.latents.shape[0])

    @property
    def shape_info(self) -> dict:
        N, T, C, H, W = self.latents.shape
        return {"n": N, "T": T, "C": C, "latent_size": [H, W], "K": int(self.actions.shape[2]),
                "A": int(self.actions.shape[3])}

    def subset(self, idx) -> "AlignData":
        idx = np.asarray(idx, dtype=np.int64)
        t = torch.from_numpy(idx)
        return AlignData(self.latents[t], self.actions[t], self.mask[t], self.skill_ids[idx], self.demo_ids[idx],
                         self.clip_ids[idx], list(self.skill_names), dict(self.info))

    def save(self, path: str | Path) -> None:
        """Write one safetensors file (atomic); labels and names go in the metadata."""
        with atomic_path(path) as tmp:
            save_file({
                "latents": self.latents.contiguous(), "actions": self.actions.float().contiguous(),
                "mask": self.mask.to(torch.uint8).contiguous(),
                "skill_ids": torch.from_numpy(self.skill_ids), "demo_ids": torch.from_numpy(self.demo_ids),
                "clip_ids": torch.from_numpy(self.clip_ids),
            }, str(tmp), metadata={"skill_names": json.dumps(self.skill_names), "info": json.dumps(self.info)})

    @classmethod
    def load(cls, path: str | Path) -> "AlignData":
        """Read a file written by :meth:`save`.

        Raises:
            World2ActError: missing or malformed file.
        """
        path = Path(path)
        if not path.is_file():
            raise World2ActError(f"{path}: latent cache not found")
        try:
            from safetensors import safe_open

            with safe_open(str(path), "pt") as f:
                meta = f.metadata() or {}
            t = load_file(str(path))
            return cls(t["latents"], t["actions"], t["mask"].bool(), t["skill_ids"].numpy(), t["demo_ids"].numpy(),
                       t["clip_ids"].numpy(), json.loads(meta.get("skill_names", "[]")), json.loads(meta.get("info", "{}")))
        except (KeyError, OSError, ValueError, json.JSONDecodeError) as e:
            raise World2ActError(f"{path}: not a valid align latent cache ({e}); delete it to rebuild") from None


def split_by_demo(data: AlignData, val_fraction: float = 0.2, seed: int = 0,
                  demo_groups: dict[int, str] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Split item indices into (train, held-out) by *demonstration*, never by clip.

    Demonstrations are grouped (by ``demo_groups[demo]`` — e.g. the task instruction — or by the
    set of skills they contain) and ``round(val_fraction·n)`` demos of every group with at least
    two demos are held out, so the held-out set covers every task.

    Raises:
        World2ActError: bad fraction, or no demonstration could be held out.
    """
    if not 0.0 < val_fraction < 1.0:
        raise World2ActError(f"val_fraction must be in (0, 1), got {val_fraction}")
    rng = np.random.default_rng(seed)
    demos = np.unique(data.demo_ids)
    groups: dict[str, list[int]] = {}
    for d in demos:
        key = demo_groups.get(int(d), "") if demo_groups else str(sorted(set(data.skill_ids[data.demo_ids == d].tolist())))
        groups.setdefault(key, []).append(int(d))
    val_demos: list[int] = []
    for key in sorted(groups):
        g = sorted(groups[key])
        if len(g) < 2:
            continue
        n = max(1, int(round(val_fraction * len(g))))
        n = min(n, len(g) - 1)
        val_demos.extend(rng.choice(g, size=n, replace=False).tolist())
    if not val_demos:
        raise World2ActError("split by demonstration: every task has a single demonstration; nothing can be held out")
    is_val = np.isin(data.demo_ids, np.asarray(val_demos))
    return np.nonzero(~is_val)[0], np.nonzero(is_val)[0]


def synthetic_dataset(n_skills: int = 4, n_demos: int = 6, T: int = 4, K: int = 4, A: int = 3, C: int = 4,
                      size: tuple[int, int] = (4, 4), noise: float = 0.1, seed: int = 0) -> AlignData:
    """A toy set where video latents are a fixed function of the actions (for tests/benchmarks).

    Every demonstration performs every skill once. A skill has a characteristic smooth action
    pattern; each demonstration perturbs it. Latent frame t is a fixed random linear map of the
    chunk's mean action and cumulative displacement (spread over space) plus noise, so the
    modalities are related chunk by chunk, and same-skill items differ in a demo-specific way.

    Returns:
        :class:`AlignData` with ``n_skills·n_demos`` items, all chunks valid except the last chunk
        of every third item (to exercise masks).
    """
    g = torch.Generator().manual_seed(seed)
    H, W = size
    t = torch.linspace(0, 1, T * K)
    base = torch.randn(n_skills, 3, A, generator=g)
    proj = torch.randn(2 * A, C * H * W, generator=g) / (2 * A) ** 0.5
    lats, acts, masks, sk, de = [], [], [], [], []
    for s in range(n_skills):
        for d in range(n_demos):
            c = base[s] + 0.6 * torch.randn(3, A, generator=g)
            phase = torch.rand(1, generator=g) * 2
            a = (c[0] + c[1] * torch.sin(3 * t[:, None] + phase) + c[2] * t[:, None] ** 2)  # [T*K, A]
            a = a.reshape(T, K, A)
            feat = torch.cat([a.mean(1), a.sum(1).cumsum(0) / K], -1)  # [T, 2A]
            z = (feat @ proj).reshape(T, C, H, W) + noise * torch.randn(T, C, H, W, generator=g)
            m = torch.ones(T, dtype=torch.bool)
            if (len(sk) % 3) == 2 and T > 1:
                m[-1] = False
            lats.append(z)
            acts.append(a)
            masks.append(m)
            sk.append(s)
            de.append(d)
    N = len(sk)
    return AlignData(torch.stack(lats), torch.stack(acts), torch.stack(masks), np.array(sk), np.array(de),
                     np.arange(N), [f"skill {i}" for i in range(n_skills)], {"synthetic": True})
