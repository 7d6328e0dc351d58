"""The ``vae_motion_weight`` option of VAE training (issue 16): moving pixels count more."""
import numpy as np
import pytest
import torch

from world2act import World2ActError
from world2act.worldmodel.model import build_vae
from world2act.worldmodel.configs import get_config
from world2act.worldmodel.train import TrainWMConfig, train_vae, vae_motion_maps


def _square_clip(t=9, h=16, w=16, moving=True):
    """Grey background; a white 3x3 square that moves one pixel right per frame (or stays)."""
    v = np.full((t, h, w, 3), 100, np.uint8)
    for j in range(t):
        x0 = 2 + (j if moving else 0)
        v[j, 6:9, x0:x0 + 3] = 255
    return v


def test_motion_map_is_zero_on_static_clips_and_marks_the_moving_square():
    static = _square_clip(moving=False)
    m = vae_motion_maps(np.stack([static, np.full_like(static, 7)]))
    assert m.shape == (2, 9, 16, 16) and m.dtype == np.float16
    assert not m.any()  # weight 1 + w * 0 = 1 everywhere, whatever w
    m = vae_motion_maps(_square_clip()[None]).astype(np.float32)[0]
    for j in range(9):
        assert m[j, 6:9, 2 + j:5 + j].min() == 1.0  # the square where it is now
    assert m[:, :6].max() == 0 and m[:, 9:].max() == 0  # rows it never visits
    assert m.max() == 1.0 and m.min() == 0.0
    w = 4.0
    wt = 1 + w * m
    assert wt[:, :6].max() == 1.0 and wt[4, 7, 7] == 1 + w


class _Out:
    def __init__(self, v):
        self.latent_dist = self
        self.sample = v
        self.mean, self.var, self.logvar = torch.zeros(1), torch.ones(1), torch.zeros(1)


class _ErrVAE(torch.nn.Module):
    """Stands in for the VAE: reconstructs its input plus a unit error at one pixel of every frame."""

    def __init__(self, err_at):
        super().__init__()
        self.p = torch.nn.Parameter(torch.zeros(1))
        self.err_at = err_at

    def encode(self, x):
        out = _Out(x)
        out.sample = lambda: x
        return out

    def decode(self, z):
        r = z.clone() + 0 * self.p
        r[:, :, :, self.err_at[0], self.err_at[1]] += 1.0
        return _Out(r)


def _loss_of_one_step(videos, w, err_at):
    """The first-step loss of ``train_vae`` (whole frames, no crop, KL 0) with a unit
    reconstruction error at pixel ``err_at`` of every frame."""
    cfg = TrainWMConfig(vae_steps=1, vae_batch=1, vae_crop=0, vae_kl=0.0, vae_motion_weight=w)
    return train_vae(_ErrVAE(err_at), videos, cfg, np.random.default_rng(0), "cpu")[0][1]


def test_vae_loss_weights_moving_pixels_and_is_unchanged_at_zero():
    videos = _square_clip()[None]
    n = 16 * 16  # the unit error is at one pixel of every frame
    plain_bg = _loss_of_one_step(videos, 0.0, (0, 0))
    plain_sq = _loss_of_one_step(videos, 0.0, (7, 7))
    assert plain_bg == pytest.approx(plain_sq) == pytest.approx(2.0 / n)  # L1 + L2 of a unit error, all alike
    m = vae_motion_maps(videos).astype(np.float64)[0]
    w = 4.0
    mean_wt = (1 + w * m).mean()
    # a background pixel keeps weight 1 (relative to the mean weight), a moving one gets 1 + w m
    assert _loss_of_one_step(videos, w, (0, 0)) == pytest.approx(plain_bg / mean_wt, rel=1e-4)
    want = plain_sq * (1 + w * m[:, 7, 7]).mean() / mean_wt
    assert _loss_of_one_step(videos, w, (7, 7)) == pytest.approx(want, rel=1e-4)
    assert want > 2 * plain_sq


def test_vae_motion_weight_zero_is_the_plain_loss_bit_for_bit():
    torch.manual_seed(0)
    videos = np.stack([_square_clip(), _square_clip(moving=False)])
    hists = []
    for w in (0.0, 0.0):
        torch.manual_seed(0)
        vae = build_vae(get_config("tiny"))
        cfg = TrainWMConfig(vae_steps=2, vae_batch=2, vae_crop=8, vae_motion_weight=w)
        hists.append(train_vae(vae, videos, cfg, np.random.default_rng(0), "cpu"))
    assert hists[0] == hists[1]
    with pytest.raises(World2ActError, match="vae_motion_weight"):
        train_vae(build_vae(get_config("tiny")), videos, TrainWMConfig(vae_steps=1, vae_motion_weight=-1.0),
                  np.random.default_rng(0), "cpu")
