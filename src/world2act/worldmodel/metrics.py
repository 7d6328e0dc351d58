"""Video quality metrics: PSNR and SSIM on uint8 frames (used for Skill-WM / Base-WM evaluation)."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """Mean per-frame PSNR in dB of uint8 frames ``[..., H, W, 3]`` (identical frames count as 100 dB)."""
    a = np.asarray(a, np.float64).reshape(-1, *np.shape(a)[-3:])
    b = np.asarray(b, np.float64).reshape(-1, *np.shape(b)[-3:])
    mse = ((a - b) ** 2).mean(axis=(1, 2, 3))
    val = np.where(mse > 0, 10 * np.log10(255.0 ** 2 / np.maximum(mse, 1e-12)), 100.0)
    return float(val.mean())


def ssim(a: np.ndarray, b: np.ndarray, window: int = 7, sigma: float = 1.5) -> float:
    """Mean SSIM (Wang et al. 2004, Gaussian window, per RGB channel) of uint8 frames ``[..., H, W, 3]``."""
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
    return float(m.mean())
