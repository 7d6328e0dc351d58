"""Stage 2 with LoRA instead of the residual (issue 19, Table S2): cost per update, and Stage 2
speed figures to budget a run with.

Prints, on the default small components (the built-in flow base policy with K = 16 as Stage 1
needs, 1.5 M parameters, 10 flow steps; default Stage-1 adapters; random weights, which do not
change the cost):

1. one Stage-2 update (forward, Eq. 1 loss, backward, AdamW step) on the same batch of
   N rollouts × T chunks, for the residual (``adapter=residual``) and for LoRA
   (``adapter=lora``: the base's flow sampling unrolled with gradient, ``lora_sample_steps``
   Euler steps; rank 8 on the default targets) — ms per step and optimizer steps per second;
2. the policy side of one round of rollouts (``loop.rollout`` through a stub vector env that
   returns random observations: policy inference and bookkeeping for N envs × T chunks; the
   simulator's own stepping and rendering is NOT included) and, from it, trajectories per
   minute with one update per round (``updates_per_round`` = 0, ``epochs_per_rollout`` = 1),
   simulator excluded. Add the simulator's time per step × K × T to budget a real run.

Run: .venv/bin/python benchmarks/bench_lora.py [--threads 1] [--sample-steps 10,4]
"""
from __future__ import annotations

import argparse

import numpy as np
import torch

from world2act.align import AlignmentBundle
from world2act.align.bundle import AdapterConfig
from world2act.policies.flow_policy import FlowPolicy, FlowPolicyConfig
from world2act.policies.lora_policy import LoraAdapterConfig, LoraPolicy
from world2act.policies.normalizer import Normalizer
from world2act.policies.residual import ResidualPolicy
from world2act.posttrain.config import PostTrainConfig
from world2act.posttrain.loop import aligned_batch, rollout
from world2act.posttrain.objective import stage2_step

from bench_posttrain import timeit as timeit_ms  # benchmarks/ is on sys.path when run as a script

TASK = "pick up the alphabet soup and place it in the basket"


class StubVenv:
    """The calls ``loop.rollout`` makes on a VectorEnv, with random 64×64 observations (no simulator)."""

    def __init__(self, n: int, cams: tuple[str, ...], size: int = 64, seed: int = 0):
        self.n, self.cams, self.size, self.rng = n, cams, size, np.random.default_rng(seed)

    def _one(self) -> dict:
        return {**{f"observation.images.{c}": self.rng.integers(0, 256, (self.size, self.size, 3), dtype=np.uint8)
                   for c in self.cams},
                "observation.state": self.rng.normal(size=8).astype(np.float32), "task": TASK}

    def observe(self, cameras=None):
        return [self._one() for _ in range(self.n)]

    def step_chunk(self, actions, cameras=None, stop_on_success=False):
        return [{"obs": self._one(), "success": False} for _ in range(self.n)]


def timeit(fn, n: int) -> float:
    """Median seconds per call (bench_posttrain's timer, which reports ms)."""
    return timeit_ms(fn, n) / 1000.0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--chunk", type=int, default=16)
    ap.add_argument("--envs", type=int, default=4, help="N parallel rollouts per update")
    ap.add_argument("--chunks", type=int, default=8, help="T chunks per rollout")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--sample-steps", default="10,4", help="lora_sample_steps to time (10 = the base's own)")
    ap.add_argument("--rank", type=int, default=8)
    ap.add_argument("-n", type=int, default=7)
    a = ap.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(a.threads)
    rng = np.random.default_rng(0)
    norm = Normalizer.fit_arrays({"observation.state": rng.normal(size=(100, 8)), "action": rng.uniform(-1, 1, (100, 7))})
    base = FlowPolicy(FlowPolicyConfig(benchmark="libero_object", action_dim=7, state_dim=8, chunk_size=a.chunk), norm)
    with torch.no_grad():
        base.net.act_out.weight.normal_(0, 0.05)  # as after training (zero-initialised, it blocks the gradient paths)
    bundle = AlignmentBundle(AdapterConfig(action_dim=7, chunk_size=a.chunk, latent_dim=32, latent_channels=16), seed=0)
    N, T = a.envs, a.chunks
    cfg = PostTrainConfig()
    cams = tuple(base.cameras)
    tgt = [{"targets": torch.randn(T, 32), "anchor": None} for _ in range(N)]

    def one_round(policy, record: bool):
        policy.reset()
        policy.seed(0)
        ro = rollout(StubVenv(N, cams), policy, T, "agentview", cams, record_inputs=record)
        return aligned_batch(ro, tgt, ["0"] * N, ["0"], cfg, T)

    res = ResidualPolicy.create(base, bundle, camera="agentview", align_dir="")
    with torch.no_grad():
        res.residual.gate.fill_(0.1)  # a trained residual, not the zero-gated initial one
    steps_list = [int(s) for s in a.sample_steps.split(",") if s]
    loras = []
    for steps in steps_list:
        torch.manual_seed(0)
        loras.append(LoraPolicy(base, LoraAdapterConfig(rank=a.rank, sample_steps=steps), bundle=bundle))
    batch = one_round(loras[0], True)  # one batch for every update timed: it carries what both adapters read
    res_params = [p for p in res.residual.parameters() if p.requires_grad]
    opt_r = torch.optim.AdamW(res_params, lr=3e-4)
    norm_r = (torch.zeros(8), torch.ones(8))

    def residual_step():
        loss, _ = stage2_step(res.residual, bundle.f_a, batch, norm_r)
        opt_r.zero_grad()
        loss.backward()
        opt_r.step()

    rows = [("residual", sum(p.numel() for p in res_params), timeit(residual_step, a.n),
             timeit(lambda: one_round(res, False), max(2, a.n // 2)))]
    for steps, lp in zip(steps_list, loras):
        params = lp.adapter_parameters()
        opt = torch.optim.AdamW(params, lr=3e-4)

        def lora_step(lp=lp, opt=opt):
            loss, _ = stage2_step(lp.residual, bundle.f_a, batch, lp.state_norm(), chunk_fn=lp.combined_chunk)
            opt.zero_grad()
            loss.backward()
            opt.step()

        rows.append((f"LoRA r={a.rank}, {steps} sample steps", sum(p.numel() for p in params), timeit(lora_step, a.n),
                     timeit(lambda lp=lp: one_round(lp, True), max(2, a.n // 2))))
    r_again = timeit(residual_step, a.n)  # the residual again, after: how much the shared machine drifted

    print(f"## One Stage-2 update on N={N} rollouts × T={T} chunks (K={a.chunk}), {a.threads} thread(s)")
    print(f"base policy: {sum(p.numel() for p in base.net.parameters()):,} parameters, {base.config.flow_steps} flow steps\n")
    print("| adapter | trainable params | ms per update | optimizer steps/s | × residual | "
          "rollout policy side, ms per round | trajectories/min (simulator excluded) |")
    print("|---|---|---|---|---|---|---|")
    for name, n_p, upd, ro_s in rows:
        traj_min = 60.0 * N / (ro_s + upd)
        print(f"| {name} | {n_p:,} | {1000 * upd:.0f} | {1 / upd:.2f} | {upd / rows[0][2]:.1f} | {1000 * ro_s:.0f} | "
              f"{traj_min:.0f} |")
    print(f"\nresidual update timed again after the LoRA rows (machine drift): {1000 * r_again:.0f} ms")
    print("trajectories/min = 60·N / (policy side of one round + one update); a round's simulator time "
          "(N envs × T·K steps, rendering at chunk boundaries) comes on top.")


if __name__ == "__main__":
    main()
