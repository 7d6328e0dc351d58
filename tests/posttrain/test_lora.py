"""World2Act with LoRA instead of the residual (issue 19, Table S2): a tiny flow base policy,
LoRA adapters inside a copy of it, rollouts through a stub vector env, the Stage-2 update."""
import numpy as np
import pytest
import torch

from world2act import World2ActError
from world2act.align import AlignmentBundle
from world2act.align.bundle import AdapterConfig
from world2act.policies.flow_policy import FlowPolicy, FlowPolicyConfig
from world2act.policies.normalizer import Normalizer
from world2act.posttrain.config import LORA_TARGETS, PostTrainConfig
from world2act.posttrain.loop import aligned_batch, make_lora_policy, rollout
from world2act.posttrain.objective import stage2_step

torch.set_num_threads(1)
K, A, S, D, HW = 4, 7, 8, 8, 48
CAMS = ("agentview", "wrist")
TASK = "put the bowl on the plate"


def _base(seed=0):
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    norm = Normalizer.fit_arrays({"observation.state": rng.normal(size=(64, S)), "action": rng.uniform(-1, 1, (64, A))})
    cfg = FlowPolicyConfig(benchmark="libero_object", action_dim=A, state_dim=S, chunk_size=K, cameras=CAMS,
                           image_size=(HW, HW), d_model=32, cnn_channels=(8, 8, 8), n_heads=2, enc_layers=1,
                           dec_layers=2, ffn_dim=48, flow_steps=3)
    base = FlowPolicy(cfg, norm)
    with torch.no_grad():  # a "trained" base: the zero-initialised output layer would block every gradient path
        base.net.act_out.weight.normal_(0, 0.3)
    base._text_cache[TASK] = torch.randn(384, generator=torch.Generator().manual_seed(1))  # no MiniLM in unit tests
    return base


def _bundle():
    b = AlignmentBundle(AdapterConfig(action_dim=A, chunk_size=K, latent_dim=D, latent_channels=16), seed=0)
    b.normalizer.fit(torch.rand(100, A) * 1.6 - 0.8)
    return b


def _lora(base=None, **kw):
    cfg = PostTrainConfig(adapter="lora", **kw)
    return make_lora_policy(cfg, base or _base(), _bundle())


def _obs(B, seed=0):
    r = np.random.default_rng(seed)
    return {**{f"observation.images.{c}": r.integers(0, 256, (B, HW, HW, 3), dtype=np.uint8) for c in CAMS},
            "observation.state": r.normal(size=(B, S)).astype(np.float32), "task": [TASK] * B}


def _perturb(policy, scale=0.5, seed=3):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for n, p in policy.net.named_parameters():
            if "lora_B" in n:
                p.copy_(torch.randn(p.shape, generator=g) * scale)


class StubVenv:
    """The VectorEnv calls rollout() makes, with random observations; records executed actions."""

    def __init__(self, n, seed=0):
        self.n, self.rng, self.actions = n, np.random.default_rng(seed), []

    def _one(self):
        return {**{f"observation.images.{c}": self.rng.integers(0, 256, (HW, HW, 3), dtype=np.uint8) for c in CAMS},
                "observation.state": self.rng.normal(size=S).astype(np.float32), "task": TASK}

    def observe(self, cameras=None):
        return [self._one() for _ in range(self.n)]

    def step_chunk(self, actions, cameras=None, stop_on_success=False):
        self.actions.append(np.asarray(actions).copy())
        return [{"obs": self._one(), "success": False} for _ in range(self.n)]


def _rollout_batch(policy, N=4, T=3, seed=0):
    venv = StubVenv(N, seed)
    policy.reset()
    policy.seed(seed)
    ro = rollout(venv, policy, T, "agentview", CAMS, record_inputs=True)
    cfg = PostTrainConfig(adapter="lora")
    g = torch.Generator().manual_seed(seed + 7)
    tgt = [{"targets": torch.randn(T, D, generator=g), "anchor": None} for _ in range(N)]
    return aligned_batch(ro, tgt, ["0"] * N, ["0"], cfg, T), venv


def test_lora_starts_exactly_at_the_base():
    base = _base()
    pol = _lora(base)
    obs = _obs(3)
    noise = torch.randn(3, K, A, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        want = base.predict_normalized_chunk(obs, noise=noise)
        got = pol.sample_normalized(pol.inputs(obs, noise=noise))
    assert torch.allclose(got, want, atol=1e-5)
    base.seed(11)
    pol.seed(11)
    assert torch.allclose(pol.predict_action_chunk(obs), base.predict_action_chunk(obs), atol=1e-5)
    b, delta = pol.chunk_parts(obs)
    assert b.shape == (3, K, A) and delta.abs().max() < 1e-5
    # the adapters sit where the config says, and they act once moved (the policy is no longer the base)
    assert sorted(pol.target_names) == ["act_in", "act_out", "decoder.layers.0.linear1", "decoder.layers.0.linear2",
                                        "decoder.layers.1.linear1", "decoder.layers.1.linear2"]
    _perturb(pol)
    with torch.no_grad():
        moved = pol.sample_normalized(pol.inputs(obs, noise=noise))
    assert (moved - want).abs().max() > 1e-2


def test_update_chunk_is_the_executed_chunk():
    """The chunk re-sampled with gradient from the stored inputs and noise is what the rollout
    executed (also with adapters in the encoder, where torch's fused path would skip them)."""
    pol = _lora(lora_targets=list(LORA_TARGETS) + ["encoder.layers.*.linear*", "state.*"])
    _perturb(pol, scale=0.3)
    batch, venv = _rollout_batch(pol, N=3, T=2)
    assert set(batch.base_inputs) == {"images", "state", "lang", "noise"}
    assert batch.base_inputs["images"].shape == (3, 2, 2, HW, HW, 3) and batch.base_inputs["noise"].shape == (3, 2, K, A)
    combined = pol.combined_chunk(batch)  # [N*T, K, A], with gradient
    assert combined.requires_grad
    executed = pol.to_env_actions(combined.detach()).reshape(3, 2, K, A)
    assert np.allclose(executed.numpy(), np.stack(venv.actions, 1), atol=1e-5)
    # the rollout's noise differs per chunk and env: a fresh draw would not reproduce the chunk
    assert not torch.allclose(batch.base_inputs["noise"][:, 0], batch.base_inputs["noise"][:, 1])


def test_gradient_reaches_only_the_lora_weights_and_base_is_unchanged():
    base = _base()
    pol = _lora(base)
    frozen = {k: v.clone() for k, v in base.net.state_dict().items()}
    copy_frozen = {k: v.clone() for k, v in pol.net.state_dict().items() if "lora_" not in k}
    lora_before = pol.adapter_state()
    batch, _ = _rollout_batch(pol)
    bundle = pol.bundle
    params = pol.adapter_parameters()
    assert params and all(p.requires_grad for p in params)
    assert sum(p.numel() for p in params) < 0.1 * sum(p.numel() for p in base.net.parameters())
    opt = torch.optim.AdamW(params, lr=1e-2)
    loss, m = stage2_step(pol.residual, bundle.f_a, batch, pol.state_norm(), chunk_fn=pol.combined_chunk)
    assert m["delta_abs"] < 1e-5  # the fresh batch: adapted == base
    opt.zero_grad()
    loss.backward()
    for n, p in pol.net.named_parameters():
        assert ("lora_" in n) == (p.grad is not None), n
    assert all(p.grad is None for p in base.net.parameters())
    assert all(p.grad is None for p in bundle.f_a.parameters())
    assert any(float(p.grad.abs().sum()) > 0 for n, p in pol.net.named_parameters() if "lora_B" in n)
    opt.step()
    for k, v in base.net.state_dict().items():
        assert torch.equal(v, frozen[k]), k
    for k, v in pol.net.state_dict().items():
        if "lora_" not in k:
            assert torch.equal(v, copy_frozen[k]), k
    after = pol.adapter_state()
    assert any(not torch.equal(after[k], lora_before[k]) for k in after)
    _, m2 = stage2_step(pol.residual, bundle.f_a, batch, pol.state_norm(), chunk_fn=pol.combined_chunk)
    assert m2["delta_abs"] > 1e-4  # the adapted chunk moved away from the base's


def test_lora_updates_raise_positive_pair_similarity():
    pol = _lora()
    batch, _ = _rollout_batch(pol, N=4, T=3, seed=1)
    opt = torch.optim.AdamW(pol.adapter_parameters(), lr=3e-2)
    first = m = None
    for _ in range(25):
        loss, m = stage2_step(pol.residual, pol.bundle.f_a, batch, pol.state_norm(), tau=0.2, chunk_fn=pol.combined_chunk)
        first = first or m
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert m["loss"] < first["loss"] - 0.05
    assert m["pos_cos"] > first["pos_cos"] + 0.02


def test_residual_path_unchanged_without_chunk_fn():
    """stage2_step with chunk_fn=None is the residual objective; a chunk_fn replaces the residual."""
    from world2act.policies.residual import ResidualPolicy

    base = _base()
    res = ResidualPolicy.create(base, _bundle(), camera="agentview", align_dir="", gate_init=0.1)
    batch, _ = _rollout_batch(_lora(base), N=3, T=2)
    loss, m = stage2_step(res.residual, res.bundle.f_a, batch, (torch.zeros(S), torch.ones(S)))
    assert m["delta_abs"] > 0
    loss2, m2 = stage2_step(res.residual, res.bundle.f_a, batch, (torch.zeros(S), torch.ones(S)),
                            chunk_fn=lambda b: b.base_chunks.reshape(-1, K, A))
    assert m2["delta_abs"] == 0 and float(loss2.detach()) != float(loss.detach())
    sel = batch.select(torch.tensor([True, False, True]))
    assert sel.base_inputs["noise"].shape[0] == 2 and torch.equal(sel.base_inputs["lang"], batch.base_inputs["lang"][[0, 2]])


def test_save_load_round_trip_via_load_policy(tmp_path):
    from world2act.policies.io import load_policy
    from world2act.policies.lora_policy import LoraPolicy

    base = _base()
    base.save(tmp_path / "base")
    pol = _lora(base, lora_rank=4, lora_sample_steps=2)
    _perturb(pol)
    pol.save(tmp_path / "post", base_source=tmp_path / "base")
    assert sorted(p.name for p in (tmp_path / "post").iterdir()) == ["adapter.safetensors", "base", "config.json"]
    loaded = load_policy(tmp_path / "post", benchmark="libero_object")
    assert isinstance(loaded, LoraPolicy) and loaded.config.rank == 4 and loaded.sample_steps == 2
    loaded.base._text_cache[TASK] = base._text_cache[TASK]
    obs = _obs(2, seed=4)
    for p in (pol, loaded):
        p.reset()
        p.seed(9)
    a, b = pol.predict_action_chunk(obs), loaded.predict_action_chunk(obs)
    assert torch.allclose(a, b, atol=1e-6)
    base.seed(9)
    assert (a - base.predict_action_chunk(obs)).abs().max() > 1e-3  # the adapters were saved, not only the base
    # corrupted adapter weights: a one-line error naming the file
    from safetensors.torch import save_file

    save_file({"act_in.lora_A.default.weight": torch.zeros(3, 3)}, str(tmp_path / "post" / "adapter.safetensors"))
    with pytest.raises(World2ActError, match="adapter.safetensors"):
        load_policy(tmp_path / "post")


def test_config_and_target_validation():
    from world2act.policies.lora_policy import DEFAULT_TARGETS

    assert tuple(LORA_TARGETS) == DEFAULT_TARGETS
    assert PostTrainConfig().adapter == "residual"
    with pytest.raises(World2ActError, match="adapter"):
        PostTrainConfig(adapter="prefix")
    with pytest.raises(World2ActError, match="lora_rank"):
        PostTrainConfig(adapter="lora", lora_rank=0)
    with pytest.raises(World2ActError, match="lora_targets"):
        PostTrainConfig(adapter="lora", lora_targets=[])
    with pytest.raises(World2ActError, match="matches no Linear"):
        _lora(lora_targets=["decoder.layers.*.conv"])
    with pytest.raises(World2ActError, match="out_proj"):
        _lora(lora_targets=["decoder.layers.*.self_attn.out_proj"])
    with pytest.raises(World2ActError, match="flow"):
        make_lora_policy(PostTrainConfig(adapter="lora"), object(), _bundle())
