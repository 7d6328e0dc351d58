"""world2act.utils.training: checkpoints round-trip without pickle, the schedule against diffusers', the EMA."""
import json
import math

import numpy as np
import pytest
import torch

from world2act import World2ActError
from world2act.utils.training import (ModuleEMA, cosine_lr_factor, cosine_scheduler, load_training_state,
                                      save_training_state)


def _net():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4), torch.nn.Linear(4, 2))


def _steps(net, opt, sched, n):
    for _ in range(n):
        loss = net(torch.randn(8, 3)).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()


def test_checkpoint_round_trip_resumes_exactly(tmp_path):
    net = _net()
    opt = torch.optim.AdamW(net.parameters(), lr=1e-2, betas=(0.9, 0.95))
    sched = cosine_scheduler(opt, total=20, warmup=3, floor=0.1)
    torch.manual_seed(1)
    _steps(net, opt, sched, 5)
    rng = np.random.default_rng(0)
    save_training_state(tmp_path / "ck", model_state=net.state_dict(), optimizer=opt, scheduler=sched,
                        ema={"w": torch.ones(2)}, step=5,
                        extra={"rng": rng.bit_generator.state, "log": [(1, 0.5)], "torch_rng": torch.get_rng_state()},
                        files={"note.txt": lambda p: p.write_text("hi")})
    files = sorted(p.name for p in (tmp_path / "ck").iterdir())
    assert files == ["ema.safetensors", "model.safetensors", "note.txt", "state.json", "state.safetensors"]
    assert not (tmp_path / "ck.tmp").exists() and not (tmp_path / "ck.old").exists()
    assert json.loads((tmp_path / "ck" / "state.json").read_text())["step"] == 5
    torch.manual_seed(2)
    _steps(net, opt, sched, 4)
    ref = [p.detach().clone() for p in net.parameters()]
    ref_lr = opt.param_groups[0]["lr"]

    net2 = _net()
    opt2 = torch.optim.AdamW(net2.parameters(), lr=1e-2, betas=(0.9, 0.95))
    sched2 = cosine_scheduler(opt2, total=20, warmup=3, floor=0.1)
    st = load_training_state(tmp_path / "ck", optimizer=opt2, scheduler=sched2)
    net2.load_state_dict(st.model_state)
    assert st.step == 5 and not st.legacy
    assert st.extra["rng"] == rng.bit_generator.state and st.extra["log"] == [(1, 0.5)]
    assert st.extra["torch_rng"].dtype == torch.uint8
    assert torch.equal(st.ema_state["w"], torch.ones(2))
    torch.manual_seed(2)
    _steps(net2, opt2, sched2, 4)
    for a, b in zip(ref, net2.parameters()):
        assert torch.equal(a, b)
    assert opt2.param_groups[0]["lr"] == ref_lr


def test_old_optimizer_pt_is_read_weights_only(tmp_path):
    net = _net()
    opt = torch.optim.AdamW(net.parameters(), lr=1e-2)
    _steps(net, opt, torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0), 2)
    d = tmp_path / "ck"
    d.mkdir()
    torch.save(opt.state_dict(), d / "optimizer.pt")
    (d / "state.json").write_text(json.dumps({"step": 7, "elapsed_s": 3.0}))
    opt2 = torch.optim.AdamW(_net().parameters(), lr=1e-2)
    sched2 = cosine_scheduler(opt2, total=20, warmup=3)
    st = load_training_state(d, optimizer=opt2, scheduler=sched2)
    assert st.legacy and st.step == 7 and st.extra == {"elapsed_s": 3.0} and st.model_state == {}
    assert sched2.last_epoch == 7
    assert opt2.param_groups[0]["lr"] == pytest.approx(1e-2 * cosine_lr_factor(7, 20, 3))
    (d / "optimizer.pt").unlink()
    with pytest.raises(World2ActError, match="without --resume"):
        load_training_state(d, optimizer=opt2)


def test_half_written_save_falls_back_to_the_old_folder(tmp_path):
    net = _net()
    save_training_state(tmp_path / "ck", model_state=net.state_dict(), step=3)
    (tmp_path / "ck").rename(tmp_path / "ck.old")  # killed between the two renames
    assert load_training_state(tmp_path / "ck").step == 3


def test_schedule_matches_diffusers_after_warmup_and_documents_warmup_shift():
    from diffusers.optimization import get_cosine_schedule_with_warmup

    total, warm = 100, 10
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    diff = get_cosine_schedule_with_warmup(opt, warm, total).lr_lambdas[0]
    for s in (10, 11, 37, 55, 99, 100):
        assert cosine_lr_factor(s, total, warm) == diff(s)  # floor 0: identical after warm-up
        for floor in (0.05, 0.1):
            assert cosine_lr_factor(s, total, warm, floor) == pytest.approx(floor + (1 - floor) * diff(s), abs=1e-15)
    for s in (0, 4, 9):  # warm-up: ours is diffusers' one step later (no zero learning rate at step 0)
        assert cosine_lr_factor(s, total, warm) == pytest.approx(diff(s + 1)) and diff(0) == 0.0
    assert cosine_lr_factor(150, total, warm) == 0.0 < diff(150)  # past the end: ours stays at the floor, diffusers' rises again


def test_schedule_reproduces_the_three_hand_written_ones():
    def wm(s, steps, warmup):  # worldmodel/train.py transformer, before
        return min(1.0, (s + 1) / max(warmup, 1)) * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(s / max(steps, 1), 1.0))))

    def vae(s, steps):  # worldmodel/train.py VAE, before
        warm = max(1, steps // 20)
        return min(1.0, (s + 1) / warm) * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(s / max(steps, 1), 1.0))))

    def base(step, steps, warmup, time_frac=0.0):  # policies/train_base.py _lr_at / lr, before
        if step < warmup:
            return (step + 1) / warmup
        p = max((step - warmup) / max(1, steps - warmup), time_frac)
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, p)))

    for s in (0, 3, 9, 10, 50, 199, 200, 250):
        assert cosine_lr_factor(s, 200, 10, 0.1, overlap=True) == wm(s, 200, 10)
        assert cosine_lr_factor(s, 200, 0, 0.1, overlap=True) == wm(s, 200, 0)
        assert cosine_lr_factor(s, 200, max(1, 200 // 20), 0.05, overlap=True) == vae(s, 200)
        assert cosine_lr_factor(s, 200, 10, 0.1) == base(s, 200, 10)
        assert cosine_lr_factor(s, 200, 0, 0.1) == base(s, 200, 0)
        assert cosine_lr_factor(s, 200, 10, 0.1, progress=0.7) == base(s, 200, 10, 0.7)


def test_module_ema_follows_diffusers_decay_and_resumes():
    net, shadow = _net(), _net()
    shadow.load_state_dict(net.state_dict())
    ema = ModuleEMA(net, shadow, decay=0.5)
    old = [p.detach().clone() for p in shadow.parameters()]
    with torch.no_grad():
        for p in net.parameters():
            p.add_(1.0)
    ema.update(net)  # first update copies
    for a, b in zip(shadow.parameters(), net.parameters()):
        assert torch.allclose(a, b)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(1.0)
    ema.update(net)  # then min(0.5, 2/11)
    d = 2 / 11
    for a, b, o in zip(shadow.parameters(), net.parameters(), old):
        assert torch.allclose(a, d * (o + 1) + (1 - d) * b)
    assert ema.updates == 2
    again = ModuleEMA(net, shadow, decay=0.999, step=5)
    before = [p.detach().clone() for p in shadow.parameters()]
    again.update(net)  # the 6th update: decay 6/15
    for a, b, o in zip(shadow.parameters(), net.parameters(), before):
        assert torch.allclose(a, 0.4 * o + 0.6 * b)
    zero = ModuleEMA(net, shadow, decay=0.0, step=100)
    zero.update(net)
    for a, b in zip(shadow.parameters(), net.parameters()):
        assert torch.allclose(a, b)
