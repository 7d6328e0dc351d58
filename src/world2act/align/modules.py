"""Stage-1 networks: action adapter f_a, video adapter f_v, action decoder g_a (paper Table S6).

All three are plain ``torch.nn.Module``s with no knowledge of files, simulators or diffusers.

Notation (paper Sec. 4.1): ``K`` actions per chunk (= control steps per world-model latent
frame), ``A`` action dimension, ``D`` shared latent dimension, ``C`` world-model latent
channels, ``H' x W'`` latent spatial size.

The paper's Table S6 lists the layer types and widths; the kernel sizes did not survive in our
copy of the text, so the video adapter uses 3x3 kernels (stride 1 then stride 2, padding 1),
documented in ``docs/align.md``.
"""
from __future__ import annotations

import torch
from torch import nn

from world2act import World2ActError


def _check_positive(**kw: int) -> None:
    for k, v in kw.items():
        if int(v) <= 0:
            raise World2ActError(f"{k} must be a positive integer, got {v!r}")


class ActionAdapter(nn.Module):
    """f_a: an action chunk ``[K, A]`` → one embedding ``[D]`` (paper Table S6, "Action Encoder").

    Flatten, FC(K·A, 128), GELU, FC(128, 64), GELU, FC(64, D).

    Args:
        action_dim: A.
        chunk: K, actions per chunk (= control steps per world-model latent frame).
        latent_dim: D (default 32, as in the authors' code).

    Forward:
        ``[B, T, K, A]`` → ``[B, T, D]`` or ``[B, K, A]`` → ``[B, D]`` (any leading dims work).
        Actions are expected in normalised units (see :class:`ActionNormalizer`).

    Raises:
        World2ActError: the input's last two dims are not ``[K, A]``.
    """

    def __init__(self, action_dim: int, chunk: int, latent_dim: int = 32):
        super().__init__()
        _check_positive(action_dim=action_dim, chunk=chunk, latent_dim=latent_dim)
        self.action_dim, self.chunk, self.latent_dim = int(action_dim), int(chunk), int(latent_dim)
        self.net = nn.Sequential(
            nn.Linear(self.chunk * self.action_dim, 128), nn.GELU(),
            nn.Linear(128, 64), nn.GELU(),
            nn.Linear(64, self.latent_dim),
        )

    def forward(self, actions: torch.Tensor) -> torch.Tensor:
        if actions.dim() < 3 or tuple(actions.shape[-2:]) != (self.chunk, self.action_dim):
            raise World2ActError(
                f"ActionAdapter: expected actions [..., K={self.chunk}, A={self.action_dim}], got {list(actions.shape)}")
        lead = actions.shape[:-2]
        return self.net(actions.reshape(*lead, self.chunk * self.action_dim))


class VideoAdapter(nn.Module):
    """f_v: one world-model latent frame ``[C, H', W']`` → one embedding ``[D]`` (paper Table S6).

    Per latent frame: Conv2D(C, 64, k3 s1 p1), GroupNorm(8), GELU, Conv2D(64, 128, k3 s2 p1),
    GroupNorm(8), GELU, AdaptiveAvgPool2D(1), Flatten, FC(128, D). Works for any H', W'.

    Args:
        latent_channels: C.
        latent_dim: D.

    Forward:
        ``[B, T, C, H', W']`` → ``[B, T, D]`` or ``[B, C, H', W']`` → ``[B, D]``.

    Raises:
        World2ActError: the channel dim is not C or the rank is not 4/5.
    """

    def __init__(self, latent_channels: int, latent_dim: int = 32, groups: int = 8):
        super().__init__()
        _check_positive(latent_channels=latent_channels, latent_dim=latent_dim)
        self.latent_channels, self.latent_dim = int(latent_channels), int(latent_dim)
        self.net = nn.Sequential(
            nn.Conv2d(self.latent_channels, 64, 3, 1, 1), nn.GroupNorm(groups, 64), nn.GELU(),
            nn.Conv2d(64, 128, 3, 2, 1), nn.GroupNorm(groups, 128), nn.GELU(),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(),
            nn.Linear(128, self.latent_dim),
        )

    def forward(self, latents: torch.Tensor) -> torch.Tensor:
        if latents.dim() not in (4, 5) or latents.shape[-3] != self.latent_channels:
            raise World2ActError(
                f"VideoAdapter: expected latents [B, T, C={self.latent_channels}, H', W'] or [B, C, H', W'], "
                f"got {list(latents.shape)}")
        lead = latents.shape[:-3]
        out = self.net(latents.reshape(-1, *latents.shape[-3:]))
        return out.reshape(*lead, self.latent_dim)


class ActionDecoder(nn.Module):
    """g_a: an embedding ``[D]`` → an action chunk ``[K, A]`` (paper Table S6, "Action Decoder").

    FC(D, 64), GELU, FC(64, 128), GELU, FC(128, K·A), unrolled to ``[K, A]``.

    Forward:
        ``[B, T, D]`` → ``[B, T, K, A]`` or ``[B, D]`` → ``[B, K, A]`` (normalised action units).

    Raises:
        World2ActError: the last dim is not D.
    """

    def __init__(self, latent_dim: int, action_dim: int, chunk: int):
        super().__init__()
        _check_positive(latent_dim=latent_dim, action_dim=action_dim, chunk=chunk)
        self.action_dim, self.chunk, self.latent_dim = int(action_dim), int(chunk), int(latent_dim)
        self.net = nn.Sequential(
            nn.Linear(self.latent_dim, 64), nn.GELU(),
            nn.Linear(64, 128), nn.GELU(),
            nn.Linear(128, self.chunk * self.action_dim),
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        if z.dim() < 1 or z.shape[-1] != self.latent_dim:
            raise World2ActError(f"ActionDecoder: expected embeddings [..., D={self.latent_dim}], got {list(z.shape)}")
        return self.net(z).reshape(*z.shape[:-1], self.chunk, self.action_dim)


class ActionNormalizer(nn.Module):
    """Per-dimension affine action normaliser fitted on training actions (z-score).

    ``normalize(a) = (a - mean) / std`` with std floored at ``min_std`` (raw units) so that a
    dimension that never moves maps to 0 instead of blowing up. Buffers ``mean``/``std`` ``[A]``.
    """

    def __init__(self, action_dim: int, min_std: float = 1e-2):
        super().__init__()
        self.min_std = float(min_std)
        self.register_buffer("mean", torch.zeros(int(action_dim)))
        self.register_buffer("std", torch.ones(int(action_dim)))

    @torch.no_grad()
    def fit(self, actions: torch.Tensor) -> "ActionNormalizer":
        """Fit on raw actions ``[..., A]`` (all leading dims pooled). Returns self.

        Raises:
            World2ActError: empty input or wrong last dim.
        """
        flat = actions.reshape(-1, actions.shape[-1]).double()
        if flat.shape[0] == 0 or flat.shape[1] != self.mean.numel():
            raise World2ActError(f"ActionNormalizer.fit: need actions [N, A={self.mean.numel()}], got {list(actions.shape)}")
        self.mean.copy_(flat.mean(0).float())
        self.std.copy_(flat.std(0, unbiased=False).clamp(min=self.min_std).float())
        return self

    def normalize(self, actions: torch.Tensor) -> torch.Tensor:
        """Raw ``[..., A]`` → normalised ``[..., A]``."""
        return (actions - self.mean.to(actions)) / self.std.to(actions)

    def unnormalize(self, actions: torch.Tensor) -> torch.Tensor:
        """Normalised ``[..., A]`` → raw ``[..., A]``."""
        return actions * self.std.to(actions) + self.mean.to(actions)
