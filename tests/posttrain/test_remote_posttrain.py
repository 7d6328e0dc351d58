"""Stage 2 post-training through a remote base (issue 18): the base is served on localhost
(`world2act serve`'s PolicyServer, in a thread) and `post-train --policy remote://HOST:PORT`
trains a residual on top of it. With the same seed the run is the in-process run: the same
rollouts (success, chunks), the same curves, the same residual weights."""
from __future__ import annotations

import json
import threading

import numpy as np
import pytest
import torch

pytest.importorskip("zmq")
pytest.importorskip("msgpack")

pytestmark = pytest.mark.sim

CAMS = ("corner2", "gripperPOV")
K = 16  # actions per latent frame of the tiny world model (4x temporal compression x frame_stride 4)


@pytest.fixture(scope="module")
def components(tmp_path_factory):
    """A tiny Meta-World base flow policy, a tiny world model and random Stage-1 adapters."""
    from world2act.align import AlignmentBundle
    from world2act.align.bundle import AdapterConfig
    from world2act.policies import Normalizer
    from world2act.policies.flow_policy import FlowPolicy, FlowPolicyConfig
    from world2act.worldmodel import WorldModel

    root = tmp_path_factory.mktemp("remote_post")
    cfg = FlowPolicyConfig(benchmark="metaworld", action_dim=4, state_dim=4, chunk_size=K, cameras=CAMS,
                           image_size=(48, 48), d_model=32, n_heads=2, enc_layers=1, dec_layers=1, ffn_dim=64,
                           flow_steps=2)
    rng = np.random.default_rng(0)
    norm = Normalizer.fit_arrays({"observation.state": rng.standard_normal((50, 4)),
                                  "action": rng.uniform(-0.8, 0.8, (50, 4))})
    torch.manual_seed(0)
    base = FlowPolicy(cfg, norm)
    for prm in base.net.act_out.parameters():  # the zero-init head would give constant chunks
        torch.nn.init.normal_(prm, std=0.5)
    base.save(root / "base")
    torch.manual_seed(0)
    wm = WorldModel.from_config("tiny", cameras=CAMS).eval()
    wm.save(root / "wm")
    bundle = AlignmentBundle(AdapterConfig(action_dim=4, chunk_size=K, latent_dim=8, latent_channels=8,
                                           latent_size=tuple(wm.config.latent_size), cameras=CAMS, layout="1x2",
                                           sigma=0.1), seed=0)
    bundle.normalizer.fit(torch.rand(100, 4) * 2 - 1)
    bundle.save(root / "align")
    return root


def _post_train(policy: str, root, out, monkeypatch):
    """Run Stage 2; also return every rollout's base chunks and success flags."""
    from world2act.posttrain import loop
    from world2act.posttrain.config import PostTrainConfig

    rollouts, real = [], getattr(loop.rollout, "_unrecorded", loop.rollout)  # not the previous run's wrapper

    def recording(*a, **kw):
        ro = real(*a, **kw)
        rollouts.append((ro["base_chunks"].clone(), ro["success"].copy(), list(ro["errors"])))
        return ro

    recording._unrecorded = real
    monkeypatch.setattr(loop, "rollout", recording)

    cfg = PostTrainConfig(policy=policy, wm=str(root / "wm"), align=str(root / "align"), benchmark="metaworld",
                          tasks=["reach-v3"], iterations=2, num_envs=2, init_states_per_task=2, workers=0,
                          imagine_steps=1, max_chunks=2, contrast="chunk", gate_init=0.5, lr=1e-2, seed=7)
    metrics = loop.run(cfg, out)
    curves = [json.loads(line) for line in (out / "curves.jsonl").read_text().splitlines()]
    return metrics, curves, rollouts


def test_post_train_through_the_remote_client_matches_in_process(components, tmp_path, monkeypatch):
    from safetensors.torch import load_file

    from world2act.policies import load_policy
    from world2act.policies.remote import PolicyServer, RemotePolicy

    torch.set_num_threads(1)
    local_m, local_curves, local_ro = _post_train(str(components / "base"), components, tmp_path / "local", monkeypatch)
    server = PolicyServer(load_policy(components / "base"), port=0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    url = f"remote://127.0.0.1:{server.port}"
    try:
        remote_m, remote_curves, remote_ro = _post_train(url, components, tmp_path / "remote", monkeypatch)
        # every rollout's base chunks (the server's forward passes) and outcomes, bit for bit
        assert len(local_ro) == len(remote_ro) == 2
        for (ca, sa, ea), (cb, sb, eb) in zip(local_ro, remote_ro):
            assert ca.shape == (2, 2, K, 4) and torch.equal(ca, cb)
            assert np.array_equal(sa, sb) and ea == eb == []
        assert not torch.equal(local_ro[0][0], local_ro[1][0])  # per-iteration seeds: fresh noise
        assert len(local_curves) == len(remote_curves) == 2
        for a, b in zip(local_curves, remote_curves):  # the same rollouts and updates, figure for figure
            assert a == b
        assert local_curves[0]["errors"] == 0 and local_curves[0]["chunks"] == 2
        assert local_curves[0]["delta_abs"] > 0  # the residual acts, so equality is not trivial
        for k in ("pos_cos_first", "pos_cos_last", "rollout_success_first", "rollout_success_last"):
            if k in local_m:
                assert local_m[k] == remote_m[k], k
        # the same residual weights; the remote run's policy folder points at the server
        w_local = load_file(str(tmp_path / "local" / "policy" / "model.safetensors"))
        w_remote = load_file(str(tmp_path / "remote" / "policy" / "model.safetensors"))
        assert w_local.keys() == w_remote.keys() and all(torch.equal(w_local[k], w_remote[k]) for k in w_local)
        post_remote = load_policy(tmp_path / "remote" / "policy")
        post_local = load_policy(tmp_path / "local" / "policy")
        assert isinstance(post_remote.base, RemotePolicy) and post_remote.base.url == url
        rng = np.random.default_rng(1)
        obs = {f"observation.images.{c}": rng.integers(0, 256, (2, 48, 48, 3), dtype=np.uint8) for c in CAMS}
        obs["observation.state"] = rng.standard_normal((2, 4)).astype(np.float32)
        obs["task"] = ["reach the goal"] * 2
        for p in (post_remote, post_local):
            p.reset()
            p.seed(3)
        assert torch.equal(post_remote.predict_action_chunk(obs), post_local.predict_action_chunk(obs))
    finally:
        server.stop()
        thread.join(5)
