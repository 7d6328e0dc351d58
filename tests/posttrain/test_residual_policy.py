"""ResidualPolicy: base + Δa as one loadable policy folder (paper Sec. 4.2)."""
import numpy as np
import pytest
import torch

from world2act import World2ActError
from world2act.align import AlignmentBundle
from world2act.align.bundle import AdapterConfig
from world2act.policies.base import Policy
from world2act.policies.io import load_policy, register_policy_type
from world2act.policies.residual import ResidualPolicy
from world2act.utils.io import write_json

torch.set_num_threads(1)
K, A, S = 4, 3, 5


class ConstantPolicy(Policy):
    """Test policy: always the same chunk."""

    def __init__(self, chunk=K):
        super().__init__()
        self.action_dim, self.state_dim, self.chunk_size = A, S, chunk
        self.cameras, self.image_size, self.benchmark = ("agentview",), (40, 40), None

    def predict_action_chunk(self, obs):
        B = len(obs["task"])
        return torch.full((B, self.chunk_size, self.action_dim), 0.25)


register_policy_type("test-constant", lambda path, benchmark=None, device="cpu": ConstantPolicy())


def _obs(B=2):
    rng = np.random.default_rng(0)
    return {"observation.images.agentview": rng.integers(0, 255, (B, 40, 40, 3), dtype=np.uint8),
            "observation.state": rng.normal(size=(B, S)).astype(np.float32), "task": ["t"] * B}


def _setup(tmp_path):
    base_dir = tmp_path / "base"
    base_dir.mkdir()
    write_json(base_dir / "config.json", {"type": "test-constant"})
    bundle = AlignmentBundle(AdapterConfig(action_dim=A, chunk_size=K, latent_dim=8, latent_channels=4), seed=0)
    bundle.save(tmp_path / "align")
    bundle = AlignmentBundle.load(tmp_path / "align")
    return base_dir, bundle


def test_starts_at_base_then_roundtrips_through_load_policy(tmp_path):
    base_dir, bundle = _setup(tmp_path)
    pol = ResidualPolicy.create(load_policy(base_dir), bundle, camera="agentview", align_dir=tmp_path / "align")
    obs = _obs()
    torch.testing.assert_close(pol.predict_action_chunk(obs), torch.full((2, K, A), 0.25), atol=1e-5, rtol=0)
    with torch.no_grad():  # move away from the base so the round trip is meaningful
        pol.residual.gate.fill_(0.5)
    pol.fit_state_norm(torch.randn(10, S))
    before = pol.predict_action_chunk(obs)
    assert not torch.allclose(before, torch.full((2, K, A), 0.25))
    pol.save(tmp_path / "post", base_source=base_dir)
    loaded = load_policy(tmp_path / "post")
    assert isinstance(loaded, ResidualPolicy)
    torch.testing.assert_close(loaded.predict_action_chunk(obs), before)
    assert (loaded.chunk_size, loaded.action_dim, loaded.cameras) == (K, A, ("agentview",))


def test_mismatched_chunk_size_names_both_sides(tmp_path):
    _, bundle = _setup(tmp_path)
    with pytest.raises(World2ActError, match="chunk_size 8.*chunk_size 4"):
        ResidualPolicy.create(ConstantPolicy(chunk=8), bundle, align_dir=tmp_path / "align")


def test_missing_part_is_named(tmp_path):
    base_dir, bundle = _setup(tmp_path)
    pol = ResidualPolicy.create(load_policy(base_dir), bundle, align_dir=tmp_path / "align")
    pol.save(tmp_path / "post", base_source=base_dir)
    (tmp_path / "post" / "model.safetensors").unlink()
    with pytest.raises(World2ActError, match="missing model.safetensors"):
        load_policy(tmp_path / "post")


def test_training_state_resumes_weights_optimizer_and_iteration(tmp_path):
    """Stage 2's checkpoint goes through utils.training: after a reload, the next update is the
    one the uninterrupted run would have made."""
    base_dir, bundle = _setup(tmp_path)

    def make():
        pol = ResidualPolicy.create(load_policy(base_dir), bundle, camera="agentview", align_dir=tmp_path / "align",
                                    head="latent")
        opt = torch.optim.AdamW([p for p in pol.residual.parameters() if p.requires_grad], lr=1e-2)
        return pol, opt

    def step(pol, opt):
        base_norm, delta = pol.chunk_parts(_obs())
        loss = ((base_norm + delta - 1.0) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()

    pol, opt = make()
    pol.fit_state_norm(torch.randn(10, S))
    for _ in range(3):
        step(pol, opt)
    pol.save_training_state(tmp_path / "ck", opt, 3)
    step(pol, opt)
    want = pol.predict_action_chunk(_obs())

    pol2, opt2 = make()
    assert pol2.load_training_state(tmp_path / "ck", opt2) == 3
    step(pol2, opt2)
    torch.testing.assert_close(pol2.predict_action_chunk(_obs()), want)
    torch.testing.assert_close(pol2.state_norm()[0], pol.state_norm()[0])
    with pytest.raises(World2ActError, match="no checkpoint"):
        pol2.load_training_state(tmp_path / "nothing", opt2)


def test_ensemble_is_the_mean_of_its_members_and_roundtrips(tmp_path):
    base_dir, bundle = _setup(tmp_path)
    obs, members = _obs(), []
    norm_states = torch.randn(10, S)
    for seed in (0, 1):
        pol = ResidualPolicy.create(load_policy(base_dir), bundle, camera="agentview", align_dir=tmp_path / "align",
                                    seed=seed, head="latent")
        with torch.no_grad():  # the latent head starts at zero: give each member its own non-zero correction
            for p in pol.residual.mlp[-1].parameters():
                p.normal_(0, 0.5)
        pol.fit_state_norm(norm_states)
        members.append(pol)
    deltas = [m.chunk_parts(obs)[1] for m in members]
    assert not torch.allclose(deltas[0], deltas[1])
    ens = ResidualPolicy.ensemble(members, max_delta=0.3)
    base_norm, delta = ens.chunk_parts(obs)
    with torch.no_grad():
        expect = torch.stack([m.chunk_parts(obs)[1] for m in members]).mean(0)  # members now carry max_delta 0.3
    torch.testing.assert_close(delta, expect)
    assert float(delta.detach().abs().max()) <= 0.3 + 1e-6
    ens.save(tmp_path / "ens", base_source=base_dir)
    loaded = load_policy(tmp_path / "ens")
    torch.testing.assert_close(loaded.predict_action_chunk(obs), ens.predict_action_chunk(obs))


def test_ensemble_refuses_members_with_other_state_normalisers(tmp_path):
    base_dir, bundle = _setup(tmp_path)
    a, b = (ResidualPolicy.create(load_policy(base_dir), bundle, camera="agentview", align_dir=tmp_path / "align")
            for _ in range(2))
    a.fit_state_norm(torch.randn(10, S))
    b.fit_state_norm(torch.randn(10, S) + 3)
    with pytest.raises(World2ActError, match="member 1.*state normaliser"):
        ResidualPolicy.ensemble([a, b])
