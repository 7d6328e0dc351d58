"""A fitted, saved normaliser for policy inputs and outputs (kept out of the model weights).

Modes per feature key:

* ``"mean_std"``: ``(x - mean) / std`` (std floored at ``eps``); used for ``observation.state``.
* ``"min_max"``: maps ``[min, max]`` to ``[-1, 1]`` (range floored at ``eps``; constant dims map
  to 0); used for ``action`` so the flow-matching head works in a fixed box.
* ``"identity"``.

Saved as ``normalizer.safetensors``: tensors ``<key>.<stat>`` plus the modes in the safetensors
metadata, so a policy folder is self-contained and never unpickled.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Mapping

import numpy as np
import torch

from world2act import World2ActError

MODES = ("mean_std", "min_max", "identity")
DEFAULT_MODES = {"observation.state": "mean_std", "action": "min_max"}
FILENAME = "normalizer.safetensors"


class Normalizer:
    """Per-feature affine normalisation fitted from dataset statistics.

    Args:
        stats: ``{key: {"mean", "std", "min", "max": array [D]}}`` (LeRobot ``meta/stats.json``
            layout; extra statistics are ignored).
        modes: ``{key: mode}``; keys absent from ``stats`` are an error.
        eps: floor on std and on (max - min).
    """

    def __init__(self, stats: Mapping[str, Mapping[str, torch.Tensor]], modes: Mapping[str, str], eps: float = 1e-4):
        self.modes = dict(modes)
        self.eps = float(eps)
        self.stats: dict[str, dict[str, torch.Tensor]] = {}
        for key, mode in self.modes.items():
            if mode not in MODES:
                raise World2ActError(f"normaliser: mode {mode!r} for {key!r} is not one of {MODES}")
            if mode == "identity":
                continue
            if key not in stats:
                raise World2ActError(f"normaliser: no statistics for {key!r}; have {sorted(stats)}")
            need = ("mean", "std") if mode == "mean_std" else ("min", "max")
            missing = [s for s in need if s not in stats[key]]
            if missing:
                raise World2ActError(f"normaliser: statistics for {key!r} lack {missing} (mode {mode})")
            self.stats[key] = {s: torch.as_tensor(np.asarray(stats[key][s], dtype=np.float32)).flatten() for s in need}

    # ------------------------------------------------------------------ construction
    @classmethod
    def fit(cls, stats: Mapping[str, Mapping], modes: Mapping[str, str] | None = None, eps: float = 1e-4) -> "Normalizer":
        """Build from LeRobot-style statistics (``ds.stats`` / ``meta/stats.json``).

        Args:
            stats: ``{key: {stat: list|array}}``.
            modes: defaults to ``{"observation.state": "mean_std", "action": "min_max"}``.
        """
        return cls(stats, modes or DEFAULT_MODES, eps)

    @classmethod
    def fit_arrays(cls, arrays: Mapping[str, np.ndarray], modes: Mapping[str, str] | None = None,
                   eps: float = 1e-4) -> "Normalizer":
        """Compute statistics from raw rows ``{key: [N, D]}`` and build the normaliser."""
        stats = {}
        for k, a in arrays.items():
            a = np.asarray(a, dtype=np.float64).reshape(len(a), -1)
            stats[k] = {"mean": a.mean(0), "std": a.std(0), "min": a.min(0), "max": a.max(0)}
        return cls(stats, modes or DEFAULT_MODES, eps)

    # ------------------------------------------------------------------ transforms
    def _params(self, key: str, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(shift, scale) such that normalised = (x - shift) / scale, on x's device/dtype."""
        s = self.stats[key]
        if self.modes[key] == "mean_std":
            shift, scale = s["mean"], s["std"].clamp(min=self.eps)
        else:
            lo, hi = s["min"], s["max"]
            shift, scale = (hi + lo) / 2, ((hi - lo) / 2).clamp(min=self.eps / 2)
        d = shift.numel()
        if x.shape[-1] != d:
            raise World2ActError(f"normaliser: {key!r} has {d} dims, got input with last dim {x.shape[-1]}")
        return shift.to(x.device, x.dtype), scale.to(x.device, x.dtype)

    def normalize(self, key: str, x: torch.Tensor | np.ndarray) -> torch.Tensor:
        """Normalise ``x`` ``[..., D]`` of feature ``key`` (identity for unknown/identity keys)."""
        x = torch.as_tensor(x, dtype=torch.float32) if not torch.is_tensor(x) else x
        if self.modes.get(key, "identity") == "identity":
            return x
        shift, scale = self._params(key, x)
        return (x - shift) / scale

    def unnormalize(self, key: str, x: torch.Tensor | np.ndarray) -> torch.Tensor:
        """Inverse of :meth:`normalize` (exact up to float rounding)."""
        x = torch.as_tensor(x, dtype=torch.float32) if not torch.is_tensor(x) else x
        if self.modes.get(key, "identity") == "identity":
            return x
        shift, scale = self._params(key, x)
        return x * scale + shift

    def dim(self, key: str) -> int | None:
        """Feature size ``D`` of ``key`` (None for identity keys)."""
        s = self.stats.get(key)
        return None if s is None else int(next(iter(s.values())).numel())

    # ------------------------------------------------------------------ files
    def state_dict(self) -> dict[str, torch.Tensor]:
        return {f"{k}.{s}": v.contiguous() for k, d in self.stats.items() for s, v in d.items()}

    def save(self, path: str | Path) -> None:
        """Write ``path`` (a ``.safetensors`` file, or a folder receiving ``normalizer.safetensors``) atomically."""
        from safetensors.torch import save_file

        from world2act.utils.io import atomic_path

        path = Path(path)
        if path.suffix != ".safetensors":
            path = path / FILENAME
        meta = {"modes": json.dumps(self.modes), "eps": repr(self.eps), "format": "world2act-normalizer-v1"}
        with atomic_path(path) as tmp:
            save_file(self.state_dict(), str(tmp), metadata=meta)

    @classmethod
    def load(cls, path: str | Path) -> "Normalizer":
        """Read a file written by :meth:`save`.

        Raises:
            World2ActError: missing or unreadable file (the message names it).
        """
        from safetensors import safe_open

        path = Path(path)
        if path.is_dir():
            path = path / FILENAME
        if not path.is_file():
            raise World2ActError(f"{path}: normaliser file not found")
        try:
            with safe_open(str(path), framework="pt") as f:
                meta = f.metadata() or {}
                tensors = {k: f.get_tensor(k) for k in f.keys()}
            modes = json.loads(meta["modes"])
            eps = float(meta.get("eps", 1e-4))
        except Exception as e:  # noqa: BLE001 - any corruption becomes one clear message
            raise World2ActError(f"{path}: not a valid normaliser file ({type(e).__name__}: {e})") from None
        stats: dict[str, dict[str, torch.Tensor]] = {}
        for name, t in tensors.items():
            key, stat = name.rsplit(".", 1)
            stats.setdefault(key, {})[stat] = t
        return cls(stats, modes, eps)

    def __repr__(self) -> str:
        return f"Normalizer({', '.join(f'{k}: {m} [{self.dim(k)}]' for k, m in self.modes.items())})"
