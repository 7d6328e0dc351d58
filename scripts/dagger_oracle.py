"""The state-conditioned action oracle for Stage 2, offline (docs/results.md, issue 15).

Separates "can a residual on this base learn a useful correction at all?" from "do the latent
targets say the right thing?": the residual (:class:`world2act.policies.residual.ResidualPolicy`)
is fitted to the scripted expert's chunk queried from each rollout chunk's own start state
(:meth:`ManipulationEnv.expert_chunk`), on rollouts of the base from post-training init states.

    # 1. rollouts of the base (or of a residual policy: --policy DIR) with expert relabels
    python scripts/dagger_oracle.py collect --base runs/mw/base4k --align runs/mw/align \
        --benchmark metaworld --tasks pick-place-v3,bin-picking-v3,assembly-v3,shelf-place-v3 \
        --per-task 24 --out runs/mw/dag/round0.safetensors
    # 2. fit the residual (squared error in executed-action space), 1/6 of init states held out
    python scripts/dagger_oracle.py fit --base runs/mw/base4k --align runs/mw/align \
        --data runs/mw/dag/round0.safetensors --head latent --steps 1500 --lr 1e-3 --fit-max-delta 0 --max-delta 0.2 \
        --out runs/mw/dag/fit-latent-m0.2
    # 2b. (optional) average several fits (different --seed) into one policy: the mean correction
    python scripts/dagger_oracle.py ensemble --members runs/mw/dag/fit-s0 runs/mw/dag/fit-s1 --max-delta 0.2 \
        --out runs/mw/dag/ens
    # 3. judge on validation init states, then (once) on evaluation ones
    world2act eval --policy runs/mw/dag/fit-latent-m0.2 --benchmark metaworld --tasks ... --init-states validation ...

``--max-delta`` is stored in the policy (the trust region m·tanh(Δa/m) applies at inference);
``--fit-max-delta`` is the bound during the fit (default: the same; the measured run fitted
unbounded, ``--fit-max-delta 0``, and bounded at inference).
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file


def _components(args):
    from world2act.align import AlignmentBundle
    from world2act.policies.io import load_policy

    base = load_policy(args.base, benchmark=args.benchmark)
    return base, AlignmentBundle.load(args.align)


def collect(args) -> None:
    from world2act.envs import resolve_tasks
    from world2act.envs.parallel import VectorEnv
    from world2act.policies.io import load_policy
    from world2act.policies.residual import ResidualPolicy
    from world2act.posttrain.loop import base_max_steps, posttrain_seeds, rollout
    from world2act.utils.io import atomic_path
    from world2act.utils.seeding import torch_threads

    base, bundle = _components(args)
    policy = (load_policy(args.policy, benchmark=args.benchmark) if args.policy
              else ResidualPolicy.create(base, bundle, camera=base.cameras[0], align_dir=args.align))
    camera = policy.residual.config.camera
    tasks = resolve_tasks(args.benchmark, args.tasks)
    K, cams = int(base.chunk_size), tuple(base.cameras)
    T = base_max_steps(args.benchmark, tasks[0]) // K
    parts: dict[str, list] = {k: [] for k in ("images", "states", "base_chunks", "valid", "relabels", "success", "task", "seed")}
    venv, t0 = None, time.time()
    try:
        for ti, task in enumerate(tasks):
            seeds = posttrain_seeds(args.benchmark, task, args.first + args.per_task)[args.first:]
            for b in range(0, len(seeds), args.num_envs):
                ss = seeds[b:b + args.num_envs]
                if venv is None:
                    venv = VectorEnv(args.benchmark, [task] * len(ss), workers=args.workers,
                                     camera_size=tuple(base.image_size), cameras=cams)
                else:
                    venv.set_tasks([task] * len(ss))
                venv.reset([dict(seed=s) for s in ss])
                policy.reset()
                policy.seed(args.seed * 100_003 + 100 * ti + b)
                with torch_threads(1):
                    ro = rollout(venv, policy, T, camera, cams, relabel=True)
                parts["images"].append((ro["images"] * 255).round().to(torch.uint8))
                for k in ("states", "base_chunks"):
                    parts[k].append(ro[k])
                parts["valid"].append(ro["valid"].to(torch.uint8))
                parts["relabels"].append(torch.as_tensor(bundle.normalize_actions(torch.from_numpy(ro["relabels"])),
                                                         dtype=torch.float32))
                parts["success"].append(torch.from_numpy(ro["success"]).to(torch.uint8))
                parts["task"].append(torch.full((len(ss),), ti))
                parts["seed"].append(torch.tensor(ss))
                print(f"{task} init states {b}..{b + len(ss) - 1}: success {ro['success'].mean():.2f} "
                      f"errors {len(ro['errors'])} ({time.time() - t0:.0f} s)", flush=True)
    finally:
        if venv is not None:
            venv.close()
    data = {k: torch.cat(v).contiguous() for k, v in parts.items()}
    with atomic_path(Path(args.out)) as tmp:
        save_file(data, str(tmp), metadata={"args": json.dumps(vars(args))})
    print(f"saved {args.out}: {data['images'].shape[0]} rollouts, success {data['success'].float().mean():.3f}")


def chunk_errors(space, base: torch.Tensor, delta: torch.Tensor, expert: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-chunk distances to the expert's chunk, ``[B]`` each: mean |·| per element (normalised
    units, executed action space ``space``) of base − expert (``expert_err_base``) and of
    base + Δa − expert (``expert_err``), the same for the last (gripper) dimension, and the cosine
    between Δa and expert − base (``toward_expert``). ``base``, ``delta``, ``expert``: ``[B, K, A]``."""
    bb, rr = space(base), space(base + delta)
    return {"expert_err_base": (bb - expert).abs().mean((1, 2)), "expert_err": (rr - expert).abs().mean((1, 2)),
            "gripper_err_base": (bb - expert)[..., -1].abs().mean(1), "gripper_err": (rr - expert)[..., -1].abs().mean(1),
            "toward_expert": torch.nn.functional.cosine_similarity(delta.flatten(1), (expert - bb).flatten(1), dim=1)}


def fit(args) -> None:
    from world2act.policies.residual import ResidualPolicy
    from world2act.posttrain.loop import executed_action_space

    torch.manual_seed(args.seed)
    base, bundle = _components(args)
    policy = ResidualPolicy.create(base, bundle, camera=base.cameras[0], align_dir=args.align, seed=args.seed,
                                   max_delta=args.max_delta if args.fit_max_delta is None else args.fit_max_delta,
                                   head=args.head)
    D = [load_file(f) for f in args.data]
    cat = lambda k: torch.cat([d[k] for d in D])  # noqa: E731
    imgs, st, basec, exp, valid, seed = (cat("images"), cat("states"), cat("base_chunks"), cat("relabels"),
                                         cat("valid").bool(), cat("seed"))
    held = ((seed % 100_000) % 6) == 5  # 1/6 of the init states held out
    if args.labels in ("relabel_latent", "relabel_latent_delta"):  # the label read through Stage 1's latent space
        with torch.no_grad():
            flat, fb = exp[valid], basec[valid]
            rt = lambda x: torch.cat([bundle.g_a(bundle.f_a(x[i:i + 1024])) for i in range(0, len(x), 1024)])  # noqa: E731
            exp = exp.clone()
            # absolute: g_a(f_a(expert)); delta: base + g_a(f_a(expert)) − g_a(f_a(base)) (g_a's bias cancels)
            exp[valid] = rt(flat) if args.labels == "relabel_latent" else fb + rt(flat) - rt(fb)
        print(f"{args.labels}: the label is {float((exp[valid] - flat).abs().mean()):.3f} from the expert's chunk", flush=True)
    elif args.labels != "relabel":  # trajectory-level labels: what imagined targets can carry, at best
        exp, ok = trajectory_labels(args, bundle, st, cat("task"), seed, valid)
        valid = valid & ok
    if args.label_clip > 0:  # LIBERO: off-demo states make the expert rotate, in units the demos' tiny std blows up
        n_out = int((exp[valid].abs() > args.label_clip).sum())
        exp = exp.clamp(-args.label_clip, args.label_clip)
        print(f"label clip ±{args.label_clip}: {n_out} of {int(valid.sum()) * exp.shape[-2] * exp.shape[-1]} label entries clipped",
              flush=True)
    policy.fit_state_norm(st[valid & ~held[:, None]])
    m, s = policy.state_norm()
    space = executed_action_space(bundle)
    tr, te = (valid & ~held[:, None]).nonzero(), (valid & held[:, None]).nonzero()
    net = policy.residual
    params = [p for p in net.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=args.lr, weight_decay=1e-2)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, args.steps)

    def batch(idx):
        n, t = idx[:, 0], idx[:, 1]
        return imgs[n, t].float() / 255, (st[n, t] - m) / s, basec[n, t], exp[n, t]

    @torch.no_grad()
    def score(idx) -> dict:
        if len(idx) == 0:
            return {}
        net.eval()
        parts: dict[str, list] = {k: [] for k in ("expert_err_base", "expert_err", "toward_expert")}
        for i in range(0, len(idx), 512):
            im, ss, b, e = batch(idx[i:i + 512])
            for k, v in chunk_errors(space, b, net(im, ss, b), e).items():
                if k in parts:
                    parts[k].append(v)
        net.train()
        return {k: float(torch.cat(v).nan_to_num().mean()) for k, v in parts.items()}

    g = torch.Generator().manual_seed(args.seed)
    t0 = time.time()
    for step in range(1, args.steps + 1):
        im, ss, b, e = batch(tr[torch.randint(len(tr), (args.batch,), generator=g)])
        loss = ((space(b + net(im, ss, b)) - e) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        if step % max(1, args.steps // 6) == 0 or step == args.steps:
            print(f"step {step}: loss {loss.item():.4f} held-out {score(te)} ({time.time() - t0:.0f} s)", flush=True)
    net.config.max_delta = float(args.max_delta)  # the bound the saved policy applies at inference
    net.eval()
    policy.save(args.out, base_source=args.base)
    report = {"args": vars(args), "train": score(tr[:4096]), "held_out": score(te), "wall_s": time.time() - t0,
              "chunks": {"train": len(tr), "held_out": len(te)}}
    Path(args.out, "fit.json").write_text(json.dumps(report, indent=1))
    print(json.dumps(report["held_out"]))


def ensemble(args) -> None:
    from world2act.policies.io import load_policy
    from world2act.policies.residual import ResidualPolicy

    members = [load_policy(m, benchmark=args.benchmark) for m in args.members]
    pol = ResidualPolicy.ensemble(members, max_delta=args.max_delta)
    src = Path(args.members[0])
    base = src / "base"
    pol.save(args.out, base_source=base)
    fits = {m: json.loads(Path(m, "fit.json").read_text()).get("held_out", {}) for m in args.members if Path(m, "fit.json").exists()}
    Path(args.out, "ensemble.json").write_text(json.dumps({"args": vars(args), "members_held_out": fits}, indent=1))
    print(f"wrote {args.out}: mean of {len(members)} residuals")


def trajectory_labels(args, bundle, states: torch.Tensor, task_idx: torch.Tensor, seeds: torch.Tensor,
                      valid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Labels from the same-init-state expert *trajectory* (cached by ``post-train --targets demo``
    in ``--targets-dir``), time-aligned through the first gripper closure as Stage 2 does
    (``time_alignment=events``): ``trajectory`` = the expert's aligned chunk, ``decoded`` =
    Stage 1's g_a applied to the aligned target embedding f_v(z) (the latent target read as an
    action chunk). Rollouts without a cached target, and chunks past the target's end, get no label.

    Returns:
        labels ``[N, T, K, A]`` (normalised units), ok ``[N, T]`` bool.
    """
    from safetensors import safe_open

    from world2act.envs import resolve_tasks
    from world2act.posttrain.loop import align_indices, closure_anchor

    tasks = resolve_tasks(args.benchmark, args.tasks)
    N, T = valid.shape
    K, A = int(bundle.config.chunk_size), int(bundle.config.action_dim)
    labels, ok = torch.zeros(N, T, K, A), torch.zeros(N, T, dtype=torch.bool)
    for i in range(N):
        path = Path(args.targets_dir) / f"{tasks[int(task_idx[i])]}_{int(seeds[i])}.safetensors"
        if not path.is_file():
            continue
        with safe_open(str(path), "pt") as f:
            anchor = json.loads((f.metadata() or {}).get("anchor", "null"))
        t = load_file(str(path))
        widths = states[i, :, args.gripper_state_dim].numpy()  # the gripper width is a proprioception entry
        roll_anchor = closure_anchor(widths, valid[i].numpy(), args.benchmark)
        idx, good = align_indices(T, int(t["targets"].shape[0]), roll_anchor, anchor, "events")
        if args.labels == "trajectory":
            labels[i] = t["expert_chunks"][idx]
        else:
            with torch.no_grad():
                labels[i] = bundle.g_a(t["targets"][idx])
        ok[i] = torch.from_numpy(good)
    print(f"{args.labels} labels: {int(ok.sum())} aligned chunks of {int(valid.sum())}", flush=True)
    return labels, ok


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    for name in ("collect", "fit"):
        q = sub.add_parser(name)
        q.add_argument("--base", required=True)
        q.add_argument("--align", required=True)
        q.add_argument("--benchmark", default="metaworld")
        q.add_argument("--out", required=True)
        q.add_argument("--seed", type=int, default=0)
    c = sub.choices["collect"]
    c.add_argument("--tasks", required=True)
    c.add_argument("--policy", default="", help="a residual policy folder to roll out instead of the base (DAgger round > 0)")
    c.add_argument("--per-task", type=int, default=24)
    c.add_argument("--first", type=int, default=0, help="first post-training init-state index")
    c.add_argument("--num-envs", type=int, default=8)
    c.add_argument("--workers", type=int, default=2)
    f = sub.choices["fit"]
    f.add_argument("--data", nargs="+", required=True)
    f.add_argument("--head", default="latent", choices=["decoder", "latent", "linear"])
    f.add_argument("--steps", type=int, default=1500)
    f.add_argument("--batch", type=int, default=64)
    f.add_argument("--lr", type=float, default=1e-3)
    f.add_argument("--max-delta", type=float, default=0.2, help="trust region stored in the policy (inference)")
    f.add_argument("--fit-max-delta", type=float, default=None,
                   help="trust region during the fit (default: --max-delta; 0 = fit unbounded, bound at inference only)")
    f.add_argument("--labels", default="relabel", choices=["relabel", "relabel_latent", "relabel_latent_delta", "trajectory", "decoded"],
                   help="relabel: the expert's chunk from each chunk's own state (collected); relabel_latent: that chunk "
                        "through Stage 1's latent space, g_a(f_a(chunk)) (a perfect state-conditioned latent target); "
                        "relabel_latent_delta: base + g_a(f_a(chunk)) - g_a(f_a(base)) (the latent target read as a correction); "
                        "trajectory: the same-init "
                        "expert trajectory's aligned chunk; decoded: g_a of its aligned target embedding (needs --targets-dir)")
    f.add_argument("--label-clip", type=float, default=0.0,
                   help="clamp the labels to ±C normalised units (0 = off; LIBERO: 3, as f_a's input is clamped)")
    f.add_argument("--targets-dir", default="", help="a post-train run's demo_targets/ folder (targets=demo cache)")
    f.add_argument("--tasks", default="", help="the collect run's --tasks (for --labels trajectory/decoded)")
    f.add_argument("--gripper-state-dim", type=int, default=3, help="proprioception index of the gripper width")
    e = sub.add_parser("ensemble", help="one policy whose correction is the mean of several fitted residuals")
    e.add_argument("--members", nargs="+", required=True, help="residual policy folders (fits with different --seed)")
    e.add_argument("--max-delta", type=float, default=None, help="trust region for every member (default: as fitted)")
    e.add_argument("--benchmark", default="metaworld")
    e.add_argument("--out", required=True)
    args = p.parse_args()
    {"collect": collect, "fit": fit, "ensemble": ensemble}[args.cmd](args)


if __name__ == "__main__":
    main()
