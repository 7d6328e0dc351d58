"""The ``motion_weight`` option of the flow-matching loss (issue 16): moving latents count more."""
import pytest
import torch

from world2act import World2ActError
from world2act.worldmodel import WorldModel
from world2act.worldmodel.model import motion_weights
from world2act.worldmodel.train import TrainWMConfig, run

from synthetic import synthetic_clips


def _moving_blob(b=2, c=8, t=5, h=4, w=8):
    """Static background (a constant per channel) and one latent position (1, 2) that changes every frame."""
    x0 = torch.ones(b, c, t, h, w) * torch.linspace(-1, 1, c).view(1, c, 1, 1, 1)
    for j in range(t):
        x0[:, :, j, 1, 2] += 2.0 * (j % 2)  # flips on and off: |change| = 2 in every frame pair
    return x0


def test_motion_weights_favour_moving_positions():
    x0 = _moving_blob()
    assert torch.equal(motion_weights(x0, 0.0), torch.ones(2, 1, 4, 4, 8))
    w = 3.0
    wt = motion_weights(x0, w)
    assert wt.shape == (2, 1, 4, 4, 8)
    assert torch.allclose(wt.mean(dim=(2, 3, 4)), torch.ones(2, 1))  # loss scale kept
    # one moving position in 32 per frame: normalised change 32 there, 0 elsewhere;
    # weights 1 + 3 * 32 = 97 and 1, divided by their mean (1 + 3) = 4
    assert torch.allclose(wt[:, :, :, 1, 2], torch.full((2, 1, 4), 97 / 4))
    static = torch.ones(4, 8, dtype=torch.bool)
    static[1, 2] = False
    assert torch.allclose(wt[:, :, :, static], torch.full((2, 1, 4, 31), 1 / 4))
    with pytest.raises(World2ActError, match="motion_weight"):
        motion_weights(x0, -1.0)


def test_flow_matching_loss_weights_the_error_on_moving_latents(monkeypatch):
    m = WorldModel.from_config("tiny")
    x0 = _moving_blob()
    noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(0))
    t = torch.full((2,), 0.5)
    emb = torch.zeros(2, 4, m.config.text_embed_dim)
    target = noise - x0

    def loss_with_error_at(pos, mw):
        err = torch.zeros_like(x0)
        err[:, :, 1:, pos[0], pos[1]] = 1.0  # a unit velocity error at one position, every scored frame
        monkeypatch.setattr(m, "velocity", lambda z, tt, e, **kw: target + err)
        return m.flow_matching_loss(x0, emb, t=t, noise=noise, motion_weight=mw).item()

    plain_move, plain_static = loss_with_error_at((1, 2), 0.0), loss_with_error_at((3, 7), 0.0)
    assert plain_move == pytest.approx(plain_static) == pytest.approx(1 / 32)  # unweighted: all positions alike
    assert loss_with_error_at((1, 2), 3.0) == pytest.approx(plain_move * 97 / 4)
    assert loss_with_error_at((3, 7), 3.0) == pytest.approx(plain_static / 4)


def test_train_wm_passes_motion_weight_and_the_prepared_denoiser_to_the_loss(tmp_path, monkeypatch):
    seen, denoisers = [], []
    orig = WorldModel.flow_matching_loss

    def spy(self, *a, **k):
        if torch.is_grad_enabled():
            seen.append(k.get("motion_weight", 0.0))
            denoisers.append(k.get("denoiser"))
        return orig(self, *a, **k)

    monkeypatch.setattr(WorldModel, "flow_matching_loss", spy)
    cfg = TrainWMConfig(model="tiny", steps=2, vae_steps=1, vae_batch=2, batch_size=2, ckpt_every=10, log_every=1,
                        eval_clips=0, val_fraction=0.25, device="cpu", threads=1, motion_weight=2.5)
    m = run(cfg, tmp_path / "wm", videos=synthetic_clips(8))
    assert m["steps"] == 2 and seen == [2.5, 2.5]
    # the training step calls the accelerate-prepared module explicitly (gradients sync under DDP)
    assert all(isinstance(d, torch.nn.Module) for d in denoisers) and len(denoisers) == 2
