"""Explicit seeding and thread settings for reproducible CPU runs."""
from __future__ import annotations

import os
import random

import numpy as np


def seed_everything(seed: int) -> np.random.Generator:
    """Seed Python, NumPy and torch (if importable); return a fresh ``np.random.Generator``."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    try:
        import torch

        torch.manual_seed(seed)
    except ImportError:
        pass
    return np.random.default_rng(seed)


def resolve_device(device: str = "auto") -> str:
    """Map ``auto|cpu|cuda`` to a torch device string; ``auto`` picks cuda when available."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        from world2act import World2ActError

        raise World2ActError("--device cuda: no CUDA device is available (use --device cpu or auto)")
    return device


def set_torch_threads(n: int | None = None) -> None:
    """Use ``n`` intra-op threads (default: all cores, or $WORLD2ACT_THREADS)."""
    import torch

    n = n or int(os.environ.get("WORLD2ACT_THREADS", "0")) or os.cpu_count() or 1
    torch.set_num_threads(n)


class torch_threads:
    """Context manager: run torch ops with ``n`` intra-op threads, then restore.

    Used where simulator worker processes already occupy the cores (Stage 2 rollouts): two
    OpenMP threads per process on an oversubscribed 2-core machine spin-wait and were measured
    15× slower than one thread (tiny VAE step: 3.3 s vs 51 s under load).
    """

    def __init__(self, n: int):
        self.n = max(1, int(n))

    def __enter__(self) -> "torch_threads":
        import torch

        self.prev = torch.get_num_threads()
        torch.set_num_threads(self.n)
        return self

    def __exit__(self, *exc: object) -> None:
        import torch

        torch.set_num_threads(self.prev)
