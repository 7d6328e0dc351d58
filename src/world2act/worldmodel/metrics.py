"""Video quality metrics: PSNR and SSIM on uint8 frames (used for Skill-WM / Base-WM evaluation).

Whole-frame figures (:func:`psnr`, :func:`ssim`) and their per-frame, optionally masked forms
(:func:`psnr_per_frame`, :func:`ssim_per_frame`, :func:`ssim_from_map`, :func:`masked_psnr`,
:func:`masked_ssim`): a
mask restricts a frame's error to chosen pixels, e.g. the robot's (the simulator's segmentation
masks, ``world2act wm-eval``), where a static background would dominate a whole-frame mean.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def _frames(a) -> np.ndarray:
    return np.asarray(a, np.float64).reshape(-1, *np.shape(a)[-3:])


def _masks(mask, n: int, hw: tuple[int, int]) -> np.ndarray:
    """Broadcast a mask ``[..., H, W]`` (or one ``[H, W]``) to ``[n, H, W]`` bool."""
    m = np.asarray(mask, bool)
    m = m.reshape(-1, *m.shape[-2:])
    if m.shape[-2:] != tuple(hw) or m.shape[0] not in (1, n):
        raise ValueError(f"mask {np.shape(mask)} does not fit {n} frames of {hw[0]}x{hw[1]}")
    return np.broadcast_to(m, (n, *hw))


def psnr_per_frame(a: np.ndarray, b: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """PSNR in dB of each frame of uint8 ``[..., H, W, 3]`` pairs: ``[N]`` float64.

    Args:
        mask: optional bool ``[..., H, W]`` (one per frame, or one for all): the MSE of a frame
            is taken over its masked pixels only (all three channels); a frame without masked
            pixels gives NaN.

    Identical frames (or masked regions) count as 100 dB.
    """
    x, y = _frames(a), _frames(b)
    d2 = ((x - y) ** 2).mean(axis=-1)  # [N, H, W]
    if mask is None:
        mse = d2.mean(axis=(1, 2))
    else:
        m = _masks(mask, len(d2), d2.shape[1:])
        cnt = m.sum(axis=(1, 2))
        mse = np.where(cnt > 0, (d2 * m).sum(axis=(1, 2)) / np.maximum(cnt, 1), np.nan)
    with np.errstate(invalid="ignore"):
        val = np.where(mse > 0, 10 * np.log10(255.0 ** 2 / np.maximum(mse, 1e-12)), 100.0)
    return np.where(np.isnan(mse), np.nan, val)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """Mean per-frame PSNR in dB of uint8 frames ``[..., H, W, 3]`` (identical frames count as 100 dB)."""
    return float(psnr_per_frame(a, b).mean())


def masked_psnr(a: np.ndarray, b: np.ndarray, mask: np.ndarray) -> float:
    """Mean over frames with masked pixels of the PSNR on those pixels (NaN if no frame has any)."""
    v = psnr_per_frame(a, b, mask)
    return float(np.nanmean(v)) if np.isfinite(v).any() else float("nan")


def ssim_map(a: np.ndarray, b: np.ndarray, window: int = 7, sigma: float = 1.5) -> np.ndarray:
    """SSIM map (Wang et al. 2004, Gaussian window, per RGB channel, then the channel mean) of uint8
    frames ``[..., H, W, 3]``: ``[N, H - window + 1, W - window + 1]`` (valid windows only; entry
    ``[y, x]`` is the window centred on pixel ``(y + window // 2, x + window // 2)``)."""
    x = torch.as_tensor(np.asarray(a).reshape(-1, *np.shape(a)[-3:]), dtype=torch.float64).permute(0, 3, 1, 2)
    y = torch.as_tensor(np.asarray(b).reshape(-1, *np.shape(b)[-3:]), dtype=torch.float64).permute(0, 3, 1, 2)
    c = x.shape[1]
    g = torch.exp(-((torch.arange(window, dtype=torch.float64) - window // 2) ** 2) / (2 * sigma ** 2))
    g = g / g.sum()
    k = (g[:, None] * g[None, :]).expand(c, 1, window, window)
    f = lambda t: F.conv2d(t, k, groups=c)  # noqa: E731
    mx, my = f(x), f(y)
    sxx, syy, sxy = f(x * x) - mx ** 2, f(y * y) - my ** 2, f(x * y) - mx * my
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    m = ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx ** 2 + my ** 2 + c1) * (sxx + syy + c2))
    return m.mean(dim=1).numpy()


def ssim_per_frame(a: np.ndarray, b: np.ndarray, mask: np.ndarray | None = None, window: int = 7,
                   sigma: float = 1.5) -> np.ndarray:
    """SSIM of each frame: ``[N]`` float64; with a bool ``mask`` ``[..., H, W]`` the mean of the
    SSIM map over the windows centred on masked pixels (NaN for a frame with none: masked pixels
    within ``window // 2`` of the border have no window)."""
    return ssim_from_map(ssim_map(a, b, window, sigma), mask, window)


def ssim_from_map(m: np.ndarray, mask: np.ndarray | None = None, window: int = 7) -> np.ndarray:
    """Per-frame SSIM ``[N]`` from an :func:`ssim_map` ``[N, H - window + 1, W - window + 1]``:
    its mean, or with a bool ``mask`` ``[..., H, W]`` the mean over windows centred on masked
    pixels (NaN for a frame with none). One map serves several masks (all pixels, robot pixels,
    a view's pixels: windows centred at least ``window // 2`` inside a view see only that view)."""
    if mask is None:
        return m.mean(axis=(1, 2))
    r = window // 2
    H, W = m.shape[1] + 2 * r, m.shape[2] + 2 * r
    mk = _masks(mask, len(m), (H, W))[:, r:H - r, r:W - r]
    cnt = mk.sum(axis=(1, 2))
    return np.where(cnt > 0, (m * mk).sum(axis=(1, 2)) / np.maximum(cnt, 1), np.nan)


def ssim(a: np.ndarray, b: np.ndarray, window: int = 7, sigma: float = 1.5) -> float:
    """Mean SSIM (Wang et al. 2004, Gaussian window, per RGB channel) of uint8 frames ``[..., H, W, 3]``."""
    return float(ssim_map(a, b, window, sigma).mean())


def masked_ssim(a: np.ndarray, b: np.ndarray, mask: np.ndarray, window: int = 7, sigma: float = 1.5) -> float:
    """Mean over frames of the SSIM on masked pixels (:func:`ssim_per_frame`; NaN if no frame has any)."""
    v = ssim_per_frame(a, b, mask, window, sigma)
    return float(np.nanmean(v)) if np.isfinite(v).any() else float("nan")
