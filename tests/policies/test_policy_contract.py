"""Policy contract, normaliser round trip, save/load and load errors of the base policy."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from world2act import World2ActError
from world2act.policies import Normalizer, load_policy, register_policy_type
from world2act.policies.flow_policy import FlowPolicy, FlowPolicyConfig

torch.set_num_threads(1)


def _obs(B=2, size=32, seed=0):
    rng = np.random.default_rng(seed)
    return {"observation.images.agentview": rng.integers(0, 256, (B, size, size, 3), dtype=np.uint8),
            "observation.images.wrist": rng.integers(0, 256, (B, size, size, 3), dtype=np.uint8),
            "observation.state": rng.standard_normal((B, 8)).astype(np.float32),
            "task": ["put the soup in the basket"] * B}


def _policy(K=4):
    cfg = FlowPolicyConfig(benchmark="libero_object", action_dim=7, state_dim=8, chunk_size=K, image_size=(32, 32),
                           d_model=32, n_heads=2, enc_layers=1, dec_layers=1, ffn_dim=64, flow_steps=3)
    rng = np.random.default_rng(0)
    norm = Normalizer.fit_arrays({"observation.state": rng.standard_normal((50, 8)),
                                  "action": rng.uniform(-0.5, 0.8, (50, 7))})
    torch.manual_seed(0)
    p = FlowPolicy(cfg, norm)
    for prm in p.net.act_out.parameters():  # zero-init head would give constant chunks
        torch.nn.init.normal_(prm, std=0.5)
    return p


def test_normalizer_round_trip(tmp_path):
    rng = np.random.default_rng(1)
    x = {"observation.state": rng.standard_normal((100, 8)) * 3 + 1, "action": rng.uniform(-1, 1, (100, 7))}
    x["action"][:, 6] = 1.0  # a constant dimension must not divide by zero
    n = Normalizer.fit_arrays(x)
    a = torch.as_tensor(x["action"], dtype=torch.float32)
    na = n.normalize("action", a)
    assert na[:, :6].min() >= -1 - 1e-5 and na[:, :6].max() <= 1 + 1e-5
    assert torch.isfinite(na).all()
    s = torch.as_tensor(x["observation.state"], dtype=torch.float32)
    ns = n.normalize("observation.state", s)
    assert abs(float(ns.mean())) < 1e-4 and abs(float(ns.std(0, unbiased=False).mean()) - 1) < 1e-3
    n.save(tmp_path)
    m = Normalizer.load(tmp_path / "normalizer.safetensors")
    assert m.modes == n.modes
    torch.testing.assert_close(m.unnormalize("action", m.normalize("action", a)), a, atol=1e-5, rtol=0)
    torch.testing.assert_close(m.unnormalize("observation.state", ns), s, atol=1e-5, rtol=0)
    with pytest.raises(World2ActError, match="7 dims"):
        n.normalize("action", torch.zeros(3, 4))
    (tmp_path / "bad.safetensors").write_bytes(b"garbage")
    with pytest.raises(World2ActError, match="bad.safetensors"):
        Normalizer.load(tmp_path / "bad.safetensors")


def test_contract_shapes_queue_and_seeding():
    p = _policy(K=4)
    obs = _obs()
    p.seed(3)
    c1 = p.predict_action_chunk(obs)
    assert c1.shape == (2, 4, 7) and c1.dtype == torch.float32
    assert c1.abs().max() <= 1.0
    p.seed(3)
    torch.testing.assert_close(p.predict_action_chunk(obs), c1)  # same seed, same noise
    p.seed(4)
    assert not torch.allclose(p.predict_action_chunk(obs), c1)
    # select_action serves the queued chunk open loop, then predicts a new one
    p.reset()
    p.seed(3)
    acts = [p.select_action(obs) for _ in range(4)]
    assert all(a.shape == (2, 7) for a in acts)
    torch.testing.assert_close(torch.stack(acts, 1), c1)
    calls = []
    orig = p.predict_action_chunk
    p.predict_action_chunk = lambda o: calls.append(1) or orig(o)
    p.select_action(obs)
    assert calls == [1]
    # normalised chunk + to_env_actions == predict_action_chunk
    p.seed(5)
    norm = p.predict_normalized_chunk(obs)
    p.seed(5)
    torch.testing.assert_close(p.to_env_actions(norm), p.predict_action_chunk(obs))
    # images at another resolution are resized, bad observations are refused
    assert p.predict_action_chunk(_obs(size=64)).shape == (2, 4, 7)
    bad = _obs()
    del bad["observation.images.wrist"]
    with pytest.raises(World2ActError, match="observation.images.wrist"):
        p.predict_action_chunk(bad)
    with pytest.raises(World2ActError, match="list of strings"):
        p.predict_action_chunk({**_obs(), "task": "one string"})


def test_save_load_and_compatibility(tmp_path):
    p = _policy()
    p.save(tmp_path / "pol")
    assert {f.name for f in (tmp_path / "pol").iterdir()} >= {"config.json", "model.safetensors", "normalizer.safetensors"}
    q = load_policy(tmp_path / "pol", benchmark="libero_spatial")  # same robot, same action space
    obs = _obs()
    p.seed(1)
    q.seed(1)
    torch.testing.assert_close(q.predict_action_chunk(obs), p.predict_action_chunk(obs))
    assert (q.action_dim, q.chunk_size, q.cameras, q.image_size, q.state_dim) == (7, 4, ("agentview", "wrist"), (32, 32), 8)
    with pytest.raises(World2ActError, match="action_dim 7 != benchmark metaworld action_dim 4"):
        load_policy(tmp_path / "pol", benchmark="metaworld")
    with pytest.raises(World2ActError, match="missing"):
        q.check_compatible({"benchmark": "libero_object", "action_dim": 7, "state_dim": 8, "cameras": ("agentview",)})


def test_bad_policy_folders(tmp_path):
    p = _policy()
    p.save(tmp_path / "pol")
    with pytest.raises(World2ActError, match="no such folder"):
        load_policy(tmp_path / "nope")
    (tmp_path / "pol" / "normalizer.safetensors").rename(tmp_path / "norm.bak")
    with pytest.raises(World2ActError, match="missing normalizer.safetensors"):
        load_policy(tmp_path / "pol")
    (tmp_path / "norm.bak").rename(tmp_path / "pol" / "normalizer.safetensors")
    cfg = json.loads((tmp_path / "pol" / "config.json").read_text())
    (tmp_path / "pol" / "config.json").write_text(json.dumps({**cfg, "d_model": 64}))
    with pytest.raises(World2ActError, match="weights do not match"):
        load_policy(tmp_path / "pol")
    (tmp_path / "pol" / "config.json").write_text(json.dumps({**cfg, "action_dim": 4}))
    with pytest.raises(World2ActError, match="mismatched normaliser|weights do not match"):
        load_policy(tmp_path / "pol")
    (tmp_path / "pol" / "config.json").write_text(json.dumps({**cfg, "type": "nonsense"}))
    with pytest.raises(World2ActError, match="unknown policy type 'nonsense'"):
        load_policy(tmp_path / "pol")
    (tmp_path / "pol" / "config.json").write_text("{not json")
    with pytest.raises(World2ActError, match="not valid JSON"):
        load_policy(tmp_path / "pol")
    with pytest.raises(World2ActError, match="needs --benchmark"):
        load_policy("expert")


def test_registry_dispatches_on_type(tmp_path):
    seen = {}

    def loader(path, *, benchmark=None, device="cpu"):
        seen["path"] = path
        return _policy()

    register_policy_type("unit-test-type", loader)
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "config.json").write_text(json.dumps({"type": "unit-test-type"}))
    pol = load_policy(tmp_path / "x", benchmark="libero_object")
    assert seen["path"] == tmp_path / "x" and pol.action_dim == 7


def test_expert_policy_contract():
    from world2act.policies.expert_policy import ExpertPolicy

    e = load_policy("expert", benchmark="libero_object")
    assert isinstance(e, ExpertPolicy) and e.needs_env and e.cameras == () and e.chunk_size == 1
    with pytest.raises(World2ActError, match="no environment bound"):
        e.predict_action_chunk({"task": ["x"]})


def test_latency_helper():
    from world2act.evaluation import measure_latency

    p = _policy(K=4)
    lat = measure_latency(p, n=3, warmup=1)
    assert lat["ms_per_chunk"] > 0 and lat["ms_per_action"] == pytest.approx(lat["ms_per_chunk"] / 4)
    assert lat["hz"] == pytest.approx(1000 / lat["ms_per_action"])


@pytest.mark.skipif(not os.path.exists("/proc/stat"), reason="CPU accounting reads /proc/stat (Linux)")
def test_latency_records_cores_other_processes_kept_busy():
    """A timing taken while another process spins a core says so (reports flag it as pessimistic)."""
    from world2act.evaluation.latency import LOADED_CORES, load_note, measure_latency

    class Sleeper:  # a policy whose own CPU use is nil: all measured load is someone else's
        chunk_size = 1

        def reset(self):
            pass

        def seed(self, s):
            pass

        def predict_action_chunk(self, obs):
            time.sleep(0.02)

    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.3)
        lat = measure_latency(Sleeper(), obs={"task": ["x"]}, n=25, warmup=0)
    finally:
        spinner.kill()
        spinner.wait()
    assert lat["other_load_cores"] > LOADED_CORES
    assert "pessimistic" in load_note(lat)
    assert load_note({"other_load_cores": 0.1}) is None and load_note({"ms_per_chunk": 1.0}) is None
