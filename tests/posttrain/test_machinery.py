"""Stage 2 machinery options (issue 15): per-chunk InfoNCE, time alignment, task mixing,
executed-action f_a input, trust region and oracle diagnostics, on synthetic tensors."""
import numpy as np
import pytest
import torch
from torch import nn

from world2act import World2ActError
from world2act.policies.residual_net import ResidualNet, ResidualNetConfig
from world2act.posttrain.config import PostTrainConfig
from world2act.posttrain.loop import (align_indices, choose_init_states, closure_anchor, slot_tasks)
from world2act.posttrain.objective import RolloutBatch, chunk_infonce, stage2_step

torch.set_num_threads(1)
K, A, D, S = 4, 3, 8, 5


def test_chunk_infonce_low_when_each_chunk_matches_and_high_when_shuffled():
    g = torch.Generator().manual_seed(0)
    v = torch.randn(4, 5, D, generator=g)
    valid = torch.ones(4, 5, dtype=torch.bool)
    matched = chunk_infonce(v, v, valid, tau=0.1)
    shuffled = chunk_infonce(v, v[torch.tensor([1, 2, 3, 0])], valid, tau=0.1)
    assert matched.item() < 0.5 < shuffled.item()
    # temporal negatives: swapping two chunks of one rollout is only caught with them
    a = v.clone()
    a[0, [0, 3]] = v[0, [3, 0]]
    with_t = chunk_infonce(v, a, valid, tau=0.1, temporal_negatives=True)
    without = chunk_infonce(v, a, valid, tau=0.1, temporal_negatives=False)
    assert with_t.item() > without.item()


def test_chunk_infonce_ignores_invalid_chunks():
    g = torch.Generator().manual_seed(1)
    v = torch.randn(3, 4, D, generator=g)
    a = v.clone()
    a[2, 3] = torch.randn(D, generator=g) * 10  # garbage, but masked out
    valid = torch.ones(3, 4, dtype=torch.bool)
    valid[2, 3] = False
    assert chunk_infonce(v, a, valid, tau=0.1).item() == pytest.approx(chunk_infonce(v, v, valid, tau=0.1).item(), abs=1e-6)
    assert chunk_infonce(v, a, torch.zeros(3, 4, dtype=torch.bool)).item() == 0.0


def test_align_indices_index_and_events():
    idx, ok = align_indices(6, 4, None, None, "index")
    assert idx.tolist() == [0, 1, 2, 3, 3, 3] and ok.tolist() == [True] * 4 + [False] * 2
    # rollout grasps at chunk 4, target at chunk 2: approach compressed, then offsets follow
    idx, ok = align_indices(7, 5, 4, 2, "events")
    assert idx.tolist() == [0, 0, 1, 2, 2, 3, 4] and ok.all()
    idx, ok = align_indices(7, 4, 1, 2, "events")  # a faster rollout: stretched, then runs past the target
    assert idx.tolist() == [0, 2, 3, 3, 3, 3, 3] and ok.tolist() == [True, True, True, False, False, False, False]
    idx, _ = align_indices(3, 5, None, 2, "events")  # rollout never grasped: index pairing
    assert idx.tolist() == [0, 1, 2]
    with pytest.raises(ValueError):
        align_indices(3, 3, None, None, "dtw")


def test_closure_anchor_from_chunk_start_widths():
    w = np.array([1.0, 1.0, 0.98, 0.5, 0.45, 0.9])  # Meta-World normalised gap, closed at chunk start 3
    assert closure_anchor(w, np.ones(6, bool), "metaworld") == 2
    assert closure_anchor(np.ones(4), np.ones(4, bool), "metaworld") is None
    assert closure_anchor(np.array([0.08, 0.08, 0.01]), np.array([True, True, False]), "libero_object") is None


def test_slot_tasks_and_init_state_choice():
    assert slot_tasks(["a", "b"], 3, 4, "single") == ["b"] * 4
    assert slot_tasks(["a", "b", "c"], 3, 4, "mixed") == ["a", "b", "c", "a"]
    rng = np.random.default_rng(0)
    pool = {"a": [1, 2, 3], "b": [7, 8]}
    chosen = choose_init_states(rng, pool, ["a", "b", "a", "b"])
    assert chosen[0] != chosen[2] and set(chosen[::2]) <= {1, 2, 3} and sorted(chosen[1::2]) == [7, 8]
    with pytest.raises(World2ActError, match="init states"):
        choose_init_states(rng, pool, ["b", "b", "b"])


def test_config_rejects_unknown_choices():
    with pytest.raises(World2ActError, match="targets"):
        PostTrainConfig(targets="dream")
    with pytest.raises(World2ActError, match="time_alignment"):
        PostTrainConfig(time_alignment="dtw")
    assert PostTrainConfig(targets="demo", contrast="chunk", replay=2).replay == 2
    with pytest.raises(World2ActError, match="head"):
        PostTrainConfig(head="mlp")
    with pytest.raises(World2ActError, match="updates_per_round"):
        PostTrainConfig(updates_per_round=-1)


def _net(gate_init=0.5, max_delta=0.0):
    f_a = nn.Sequential(nn.Flatten(-2), nn.Linear(K * A, D))
    g_a = nn.Sequential(nn.Linear(D, K * A), nn.Unflatten(-1, (K, A)))
    cfg = ResidualNetConfig(state_dim=S, action_dim=A, chunk_size=K, latent_dim=D, image_size=(40, 40), num_heads=2,
                            gate_init=gate_init, max_delta=max_delta)
    return ResidualNet(cfg, f_a, g_a), f_a


def test_trust_region_bounds_the_correction():
    torch.manual_seed(0)
    net, _ = _net(gate_init=50.0, max_delta=0.2)
    out = net(torch.rand(3, 3, 40, 40), torch.randn(3, S), torch.randn(3, K, A))
    assert out.abs().max() <= 0.2 and out.abs().max() > 0.1


def _batch(N=4, T=3, seed=0, expert=True):
    g = torch.Generator().manual_seed(seed)
    base = torch.randn(N, T, K, A, generator=g)
    return RolloutBatch(images=torch.rand(N, T, 3, 40, 40, generator=g), states=torch.randn(N, T, S, generator=g),
                        base_chunks=base, targets=torch.randn(N, T, D, generator=g), valid=torch.ones(N, T, dtype=torch.bool),
                        groups=torch.tensor([0, 0, 1, 1]),
                        expert_chunks=base + torch.randn(N, T, K, A, generator=g) if expert else None)


def test_executed_action_space_and_oracle_metrics():
    net, f_a = _net(gate_init=0.5)
    seen = []

    def space(x):
        seen.append(x.detach().clone())
        return x.clamp(-1.0, 1.0)

    loss, m = stage2_step(net, f_a, _batch(), (torch.zeros(S), torch.ones(S)), contrast="chunk", action_space=space)
    loss.backward()
    assert len(seen) >= 1 and seen[0].shape == (12, K, A)
    assert {"neg_cos_same_task", "expert_err_base", "expert_err", "toward_expert", "grad_toward_expert"} <= set(m)
    assert -1.0 <= m["grad_toward_expert"] <= 1.0
    assert -1.0 <= m["toward_expert"] <= 1.0 and m["expert_err_base"] > 0
    _, m2 = stage2_step(net, f_a, _batch(expert=False), (torch.zeros(S), torch.ones(S)))
    assert "expert_err" not in m2
    g_a = nn.Sequential(nn.Linear(D, K * A), nn.Unflatten(-1, (K, A)))
    _, m3 = stage2_step(net, f_a, _batch(), (torch.zeros(S), torch.ones(S)), contrast="cosine", action_decoder=g_a)
    assert m3["decoded_err"] > 0 and -1.0 <= m3["decoded_toward_expert"] <= 1.0


def test_batch_select_keeps_optional_fields():
    b = _batch().select(torch.tensor([True, False, True, True]))
    assert b.targets.shape[0] == 3 and b.groups.tolist() == [0, 1, 1] and b.expert_chunks.shape[0] == 3


def test_grad_toward_expert_is_positive_when_targets_encode_the_expert():
    """If the targets are f_a of the expert's chunks, descending the loss moves chunks toward the expert."""
    torch.manual_seed(0)
    net, f_a = _net(gate_init=0.0)
    b = _batch(N=4, T=3, seed=3)
    with torch.no_grad():
        b.targets = f_a(b.expert_chunks.reshape(-1, K, A)).reshape(4, 3, D)
    _, m = stage2_step(net, f_a, b, (torch.zeros(S), torch.ones(S)), contrast="chunk", tau=0.1)
    assert m["grad_toward_expert"] > 0.1


@pytest.mark.sim
def test_demo_targets_follow_the_expert_on_metaworld():
    """targets=demo: the scripted expert's own video from the init state, embedded per chunk."""
    from world2act.align import AlignmentBundle
    from world2act.align.bundle import AdapterConfig
    from world2act.envs import make_env
    from world2act.posttrain.loop import demo_targets
    from world2act.worldmodel import WorldModel

    torch.manual_seed(0)
    cams = ("corner2", "gripperPOV")
    wm = WorldModel.from_config("tiny", cameras=cams).eval()
    bundle = AlignmentBundle(AdapterConfig(action_dim=4, chunk_size=16, latent_dim=8, latent_channels=8,
                                           latent_size=tuple(wm.config.latent_size), cameras=cams, layout="1x2",
                                           sigma=0.1), seed=0)
    bundle.normalizer.fit(torch.rand(100, 4) * 2 - 1)
    env = make_env("metaworld", "pick-place-v3", camera_size=(32, 32), cameras=cams)
    try:
        res = demo_targets(wm, bundle, env, 123, sigma=0.1, chunk_size=16)
    finally:
        env.close()
    T = res["targets"].shape[0]
    assert res["success"] and res["targets"].shape == (T, 8) and T == res["steps"] // 16
    assert res["expert_chunks"].shape == (T, 16, 4)
    assert res["anchor"] is not None and 0 < res["anchor"] < T  # the expert grasps mid-episode
    assert res["video"].shape[1:] == (32, 64, 3)


def test_decoded_contrast_pulls_chunks_to_the_decoded_target():
    torch.manual_seed(0)
    net, f_a = _net(gate_init=0.5)
    g_a = nn.Sequential(nn.Linear(D, K * A), nn.Unflatten(-1, (K, A)))
    b = _batch(N=4, T=3, seed=4)
    opt = torch.optim.AdamW([p for p in net.parameters() if p.requires_grad], lr=3e-3)
    first = None
    for _ in range(40):
        loss, m = stage2_step(net, f_a, b, (torch.zeros(S), torch.ones(S)), contrast="decoded", action_decoder=g_a)
        first = first or float(loss.detach())
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert float(loss) < 0.8 * first
    with pytest.raises(ValueError, match="decoder"):
        stage2_step(net, f_a, b, (torch.zeros(S), torch.ones(S)), contrast="decoded")


@pytest.mark.sim
def test_expert_chunk_relabels_without_moving_the_scene():
    """A look-ahead query leaves no trace: the same actions give the same observations with and
    without queries in between (the mocap target and Meta-World's previous-frame observation
    included, which get_sim_state does not hold), and the returned chunk, executed open loop,
    is what the expert does closed loop from there."""
    from world2act.envs import make_env

    env = make_env("metaworld", "pick-place-v3", camera_size=(32, 32), cameras=("corner2",))
    ref = make_env("metaworld", "pick-place-v3", camera_size=(32, 32), cameras=("corner2",))
    try:
        for e in (env, ref):
            e.reset(seed=5)
        push = np.array([0.5, 0.0, -0.2, -1.0], np.float32)
        for i in range(10):
            if i % 3 == 0:
                env.expert_chunk(16)
            env.step(push)
            ref.step(push)
        np.testing.assert_allclose(env.privileged()["obs"], ref.privileged()["obs"], atol=1e-9)
        before = env.get_sim_state()
        chunk = env.expert_chunk(16)
        np.testing.assert_array_equal(before, env.get_sim_state())
        assert chunk.shape == (16, 4) and chunk.dtype == np.float32 and np.abs(chunk).max() <= 1.0
        np.testing.assert_array_equal(chunk, env.expert_chunk(16))  # a pure function of the restored state
        from world2act.experts import make_expert

        expert = make_expert(ref)
        for a in chunk:  # open loop in env, closed loop in ref: the same trajectory
            env.step(a)
            ref.step(expert.act())
        np.testing.assert_allclose(env.privileged()["obs"], ref.privileged()["obs"], atol=1e-9)
    finally:
        env.close()
        ref.close()
    assert PostTrainConfig(contrast="expert", expert_relabel=True).expert_relabel
    with pytest.raises(World2ActError, match="expert"):
        PostTrainConfig(contrast="expert")


def _head_net(head):
    f_a = nn.Sequential(nn.Flatten(-2), nn.Linear(K * A, D))
    g_a = nn.Sequential(nn.Linear(D, K * A), nn.Tanh(), nn.Unflatten(-1, (K, A)))
    cfg = ResidualNetConfig(state_dim=S, action_dim=A, chunk_size=K, latent_dim=D, image_size=(40, 40), num_heads=2,
                            head=head)
    return ResidualNet(cfg, f_a, g_a)


@pytest.mark.parametrize("head", ["decoder", "latent", "linear"])
def test_residual_heads_start_at_the_base_and_only_decoder_starves_the_network(head):
    """Every head starts at Δa = 0; the paper's gated decoder gives the network no gradient at
    gate 0 (only the gate learns), the latent and linear heads train their last layer from step one."""
    torch.manual_seed(0)
    net = _head_net(head)
    img, st, base = torch.rand(5, 3, 40, 40), torch.randn(5, S), torch.randn(5, K, A)
    out = net(img, st, base)
    assert out.shape == (5, K, A) and out.abs().max() == 0
    ((out - torch.ones_like(out)) ** 2).mean().backward()
    head_params = list(net.mlp.parameters()) + (list(net.to_chunk.parameters()) if head == "linear" else [])
    mlp_grad = sum(float(p.grad.abs().sum()) for p in head_params if p.grad is not None)
    enc_grad = float(net.state_encoder[0].weight.grad.abs().sum()) if net.state_encoder[0].weight.grad is not None else 0.0
    if head == "decoder":
        assert mlp_grad == 0 and float(net.gate.grad.abs().sum()) > 0
    else:
        assert mlp_grad > 0
        opt = torch.optim.SGD([p for p in net.parameters() if p.requires_grad], lr=0.1)
        opt.step()
        assert net(img, st, base).abs().max() > 0  # one step moves the output
    assert enc_grad == 0  # the encoders get gradient only through a non-zero last layer


def test_residual_head_is_validated():
    with pytest.raises(World2ActError, match="head"):
        ResidualNetConfig(state_dim=S, action_dim=A, chunk_size=K, head="mlp")


def test_imagination_prompts_skill_wm_and_base_wm():
    """Skill-WM: one clip per skill window; Base-WM (Table 4): the instruction for as many clips
    as a whole training episode spanned; an instruction the Base-WM never saw is refused."""
    from types import SimpleNamespace

    from world2act.posttrain.loop import decompose_instruction, imagination_prompts

    instr = "pick up the alphabet soup and place it in the basket"
    skills = decompose_instruction(instr)
    assert len(skills) >= 2 and instr not in skills
    windows = {skills[0]: 1, skills[-1]: 2, instr: 3}
    wm = SimpleNamespace(prompt_windows=windows,
                         clip_prompts=lambda ps: [p for p in ps for _ in range(windows.get(p, 1))])
    got = imagination_prompts(wm, instr, "skills")
    assert got[0] == skills[0] and got[-2:] == [skills[-1]] * 2
    assert imagination_prompts(wm, instr, "instruction") == [instr] * 3
    with pytest.raises(World2ActError, match="not trained on the instruction"):
        imagination_prompts(wm, "open the drawer", "instruction")
    with pytest.raises(World2ActError, match="wm_prompts must be one of"):
        imagination_prompts(wm, instr, "episodes")
    with pytest.raises(World2ActError, match="wm_prompts must be one of"):
        PostTrainConfig(policy="p", wm="w", align="a", wm_prompts="episodes")
