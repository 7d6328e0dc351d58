"""Stage 2: latent action post-training, top to bottom (paper Sec. 4.2).

1. Load the frozen base policy, the frozen Skill-WM and the frozen Stage-1 adapters; check
   they agree (action dim, chunk size = actions per latent frame, latent channels, cameras).
2. Imagine: for every post-training initial state (seeded resets disjoint from evaluation),
   render the first frame, decompose the instruction into skill prompts, let the WM generate
   the task skill by skill, and turn its action-bearing latents into target embeddings with
   f_v. Cached on disk: this is the "imagined trajectories" budget.
3. Loop: pick a task and N of its initial states, roll out base + residual in N parallel
   environments chunk by chunk (open loop within a chunk), then update the residual with the
   Eq. 1 loss between f_a(a + Δa) and the imagined embeddings (same env = positive).
   No reward and no success signal is used.
4. Save the post-trained policy folder (base copy + residual), curves, manifest.
"""
from __future__ import annotations

import json
import logging
import shutil
import time
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from tqdm import tqdm

from world2act import World2ActError
from world2act.posttrain.config import PostTrainConfig
from world2act.posttrain.objective import RolloutBatch, masked_chunkwise_cosine, stage2_step
from world2act.utils.io import atomic_path, write_json
from world2act.utils.manifest import write_manifest
from world2act.utils.seeding import seed_everything, torch_threads

log = logging.getLogger(__name__)

CURVES = "curves.jsonl"


# --------------------------------------------------------------------------- components
def load_components(cfg: PostTrainConfig, device: str = "cpu"):
    """Load (base policy, world model, alignment bundle) and check they fit together.

    Raises:
        World2ActError: a component is missing or two of them disagree; the message names both
            sides (e.g. ``policy chunk_size 8 != align K 16``).
    """
    from world2act.align import AlignmentBundle
    from world2act.policies.io import load_policy
    from world2act.worldmodel import WorldModel

    base = load_policy(cfg.policy, device=device)
    bundle = AlignmentBundle.load(cfg.align)
    wm = WorldModel.load(cfg.wm, device=device)
    check_compatible(base, wm, bundle, cfg)
    return base, wm, bundle


def check_compatible(base, wm, bundle, cfg: PostTrainConfig) -> None:
    """Raise :class:`World2ActError` naming both sides of the first mismatch."""
    a = bundle.config
    pairs = [
        (f"policy {cfg.policy} action_dim", base.action_dim, f"align {cfg.align} action_dim", a.action_dim),
        (f"policy {cfg.policy} chunk_size", base.chunk_size, f"align {cfg.align} chunk_size (actions per latent frame)", a.chunk_size),
        (f"world model {cfg.wm} latent_channels", wm.config.latent_channels, f"align {cfg.align} latent_channels", a.latent_channels),
    ]
    for left, lv, right, rv in pairs:
        if int(lv) != int(rv):
            raise World2ActError(f"mismatched components: {left} = {lv} but {right} = {rv}")
    if cfg.camera not in base.cameras:
        raise World2ActError(f"post-train: camera {cfg.camera!r} is not one of policy {cfg.policy} cameras {list(base.cameras)}")
    if base.benchmark and cfg.benchmark and not (base.benchmark == cfg.benchmark
                                                 or (base.benchmark.startswith("libero") and cfg.benchmark.startswith("libero") and base.action_dim == 7)):
        raise World2ActError(f"mismatched components: policy {cfg.policy} was trained for {base.benchmark}, post-training asks for {cfg.benchmark}")


def posttrain_seeds(benchmark: str, task, n: int) -> list[int]:
    """Seeds of the post-training initial states of ``task``: the project's post-train seed
    range, disjoint from demonstration and evaluation seeds (``world2act.envs.SEED_RANGES``).
    The task's position in the benchmark (not in this run's task list) picks the block, so a
    task keeps its initial states whichever subset of tasks is post-trained."""
    from world2act.envs import list_tasks, seed_for

    index = [t.task_id for t in list_tasks(benchmark)].index(task)
    return [seed_for("posttrain", index, i) for i in range(n)]


# --------------------------------------------------------------------------- imagination
def decompose_instruction(instruction: str) -> list[str]:
    """Skill prompts for an instruction (schema decomposer, Sec. 3.3)."""
    from world2act.skills.decompose import decompose_instruction as schema_decompose

    return [step.prompt for step in schema_decompose(instruction)]


def imagine_targets(wm, bundle, first_frame: np.ndarray, instruction: str, *, steps: int, seed: int) -> dict:
    """Imagine one task from its first frame and embed the WM latents with f_v.

    Args:
        first_frame: uint8 ``[H, W, 3]`` stitched in the WM's layout.

    Returns:
        dict with ``targets`` ``[T, D]`` (one per action-bearing latent frame = one policy
        chunk), ``video`` uint8 ``[T_frames, H, W, 3]``, ``prompts`` (one per generated clip:
        a skill whose training clips spanned several 17-frame windows is generated as that many
        consecutive clips, ``WorldModel.prompt_windows``).
    """
    # a skill longer than one clip gets as many clips as its training windows (e.g. place ≈ 2)
    prompts = wm.clip_prompts(decompose_instruction(instruction))
    video, latents = wm.rollout(first_frame, prompts, num_inference_steps=steps, seed=seed)
    z = action_latents(wm, latents, len(prompts))  # [T, C, h, w]
    with torch.no_grad():
        targets = bundle.f_v(z[None].float())[0]  # [T, D]
    return {"targets": targets, "video": video, "prompts": prompts}


def action_latents(wm, latents: torch.Tensor, num_clips: int) -> torch.Tensor:
    """Select the latent frames that carry actions from a skill-compositional rollout.

    Each generated clip has ``n = num_latent_frames(num_frames)`` latent frames; its frame 0 is
    the conditioning frame (the previous clip's last frame, no actions) and frames 1..n-1 each
    cover ``K = 4·s`` control steps. Returns ``[num_clips·(n-1), C, h, w]``.
    """
    from world2act.worldmodel.alignment import num_latent_frames

    n = num_latent_frames(wm.config.num_frames)
    if latents.shape[0] == num_clips * n:
        return torch.cat([latents[i * n + 1:(i + 1) * n] for i in range(num_clips)])
    if latents.shape[0] == num_clips * (n - 1) + 1:  # boundary frame shared between clips
        return latents[1:]
    raise World2ActError(f"world model rollout returned {latents.shape[0]} latent frames for {num_clips} clips of {n}")


# --------------------------------------------------------------------------- rollouts
def batch_obs(obs_list: list[dict]) -> dict:
    """Stack per-env LeRobot observations into a batch (``[B, ...]``, ``task`` a list)."""
    out: dict = {}
    for k in obs_list[0]:
        vals = [o[k] for o in obs_list]
        out[k] = vals if k == "task" else np.stack([np.asarray(v) for v in vals])
    return out


def image_tensor(obs: dict, camera: str) -> torch.Tensor:
    """``observation.images.<camera>`` uint8 ``[B, H, W, 3]`` → float ``[B, 3, H, W]`` in [0, 1]."""
    key = f"observation.images.{camera}"
    if key not in obs:
        raise World2ActError(f"observation has no {key}; available: {sorted(k for k in obs if k.startswith('observation.images'))}")
    return torch.from_numpy(np.asarray(obs[key])).permute(0, 3, 1, 2).float() / 255.0


@torch.no_grad()
def rollout(venv, policy, n_chunks: int, camera: str, cameras: tuple[str, ...]) -> dict:
    """Run ``n_chunks`` chunks of base + residual in every env of ``venv`` (open loop inside a chunk).

    Returns numpy arrays: ``images`` ``[N, T, 3, H, W]`` float, ``states`` ``[N, T, S]``,
    ``base_chunks`` ``[N, T, K, A]`` (normalised), ``valid`` ``[N, T]``, ``success`` ``[N]``
    (recorded for the curves only, never used by the loss), ``errors``.
    """
    obs_list = venv.observe(cameras=cameras)
    N = len(obs_list)
    alive = np.ones(N, dtype=bool)
    success = np.zeros(N, dtype=bool)
    imgs, states, bases, valid = [], [], [], []
    errors: list[str] = []
    for _ in range(n_chunks):
        obs = batch_obs(obs_list)
        base_norm, delta = policy.chunk_parts(obs)  # [N, K, A] each, normalised units
        imgs.append(image_tensor(obs, camera))
        states.append(torch.as_tensor(np.asarray(obs["observation.state"]), dtype=torch.float32))
        bases.append(base_norm)
        valid.append(torch.from_numpy(alive.copy()))
        actions = policy.to_env_actions(base_norm + delta).cpu().numpy()
        results = venv.step_chunk(actions, cameras=cameras, stop_on_success=False)
        for i, r in enumerate(results):
            if r.get("error"):
                if alive[i]:
                    errors.append(f"env {i}: {r['error']}")
                alive[i] = False
            else:
                success[i] |= bool(r.get("success"))
                obs_list[i] = r["obs"]
    return {
        "images": torch.stack(imgs, 1), "states": torch.stack(states, 1), "base_chunks": torch.stack(bases, 1),
        "valid": torch.stack(valid, 1), "success": success, "errors": errors,
    }


# --------------------------------------------------------------------------- main loop
def run(cfg: PostTrainConfig, out: str | Path, *, device: str = "cpu", resume: bool = False) -> dict:
    """Post-train a residual on top of a frozen base policy; write a loadable policy folder.

    Returns the final metrics dict. Raises :class:`World2ActError` on bad components.
    """
    from world2act.data import stitch_views
    from world2act.envs import make_env, resolve_tasks
    from world2act.envs.parallel import VectorEnv
    from world2act.policies.residual import ResidualPolicy

    started = time.time()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rng = seed_everything(cfg.seed)
    task_ids = resolve_tasks(cfg.benchmark, ",".join(cfg.tasks))
    base, wm, bundle = load_components(cfg, device)
    policy = ResidualPolicy.create(base, bundle, camera=cfg.camera, seed=cfg.seed, align_dir=cfg.align)
    cameras = tuple(dict.fromkeys(list(base.cameras) + list(wm.config.cameras)))
    size = tuple(base.image_size)

    # ---- 2. imagined trajectories (cached; resumable)
    imag_dir = out / "imagined"
    imag_dir.mkdir(exist_ok=True)
    targets: dict[tuple, torch.Tensor] = {}
    pool: dict = {}
    for task in task_ids:
        seeds = posttrain_seeds(cfg.benchmark, task, cfg.init_states_per_task)
        pool[task] = seeds
        todo = [s for s in seeds if not (imag_dir / f"{task}_{s}.safetensors").is_file()]
        if todo:
            env = make_env(cfg.benchmark, task, camera_size=size, cameras=cameras)
            try:
                for s in tqdm(todo, desc=f"imagine task {task}", leave=False):
                    env.reset(seed=s)
                    frames = env.render(tuple(wm.config.cameras), tuple(wm.config.image_size))
                    first = stitch_views(frames, tuple(wm.config.cameras), wm.config.layout)
                    res = imagine_targets(wm, bundle, first, env.instruction, steps=cfg.imagine_steps, seed=s)
                    with atomic_path(imag_dir / f"{task}_{s}.safetensors") as tmp:
                        save_file({"targets": res["targets"].contiguous()}, str(tmp),
                                  metadata={"prompts": json.dumps(res["prompts"]), "instruction": env.instruction})
                    if s == seeds[0]:
                        from world2act.data import write_video

                        write_video(imag_dir / f"{task}_{s}.mp4", res["video"], fps=max(1, int(round(wm.config.fps))))
            finally:
                env.close()
        for s in seeds:
            targets[(task, s)] = load_file(str(imag_dir / f"{task}_{s}.safetensors"))["targets"]

    # ---- 3. the loop
    params = [p for p in policy.residual.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    start_it = 0
    ckpt = out / "checkpoint"
    if resume and (ckpt / "residual.safetensors").is_file():
        start_it = policy.load_training_state(ckpt, opt)
        log.info("resuming post-training at iteration %d", start_it)
    elif (out / CURVES).exists():
        (out / CURVES).unlink()
    budget_chunks = max(1, base_max_steps(cfg.benchmark, task_ids[0]) // base.chunk_size)
    venv = None
    bar = tqdm(range(start_it, cfg.iterations), desc="post-train", initial=start_it, total=cfg.iterations)
    try:
        for it in bar:
            task = task_ids[it % len(task_ids)]
            chosen = sorted(rng.choice(pool[task], size=cfg.num_envs, replace=False).tolist())
            tgt = [targets[(task, s)] for s in chosen]
            T = min(min(t.shape[0] for t in tgt), budget_chunks, cfg.max_chunks or 10**9)
            if venv is None:  # one set of workers for the whole run; a task switch rebuilds only the simulators
                venv = VectorEnv(cfg.benchmark, [task] * cfg.num_envs, workers=cfg.workers,
                                 camera_size=size, cameras=cameras)
            elif venv.task_ids[0] != task:
                venv.set_tasks([task] * cfg.num_envs)
            venv.reset([dict(seed=s) for s in chosen])
            policy.reset()
            policy.seed(cfg.seed * 100_003 + it)  # flow-matching noise: same rollouts after a resume
            with torch_threads(1):  # the simulator workers own the cores during rollouts
                ro = rollout(venv, policy, T, cfg.camera, tuple(base.cameras))
            if it == start_it and not policy.state_norm_fitted:
                policy.fit_state_norm(ro["states"][ro["valid"]])
            batch = RolloutBatch(images=ro["images"], states=ro["states"], base_chunks=ro["base_chunks"],
                                 targets=torch.stack([t[:T] for t in tgt]), valid=ro["valid"])
            keep = batch.valid[:, 0]
            if int(keep.sum()) < 2:
                log.warning("iteration %d: fewer than 2 rollouts without errors (%s); skipped", it, ro["errors"])
                continue
            batch = RolloutBatch(*(getattr(batch, f)[keep] for f in ("images", "states", "base_chunks", "targets", "valid")))
            policy.residual.train()
            for _ in range(cfg.epochs_per_rollout):
                loss, m = stage2_step(policy.residual, bundle.f_a, batch, policy.state_norm(), tau=cfg.tau,
                                      bidirectional=cfg.bidirectional, delta_l2=cfg.delta_l2)
                opt.zero_grad()
                loss.backward()
                gn = torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
                opt.step()
            policy.residual.eval()
            rec = {"iteration": it, "task": str(task), **m, "grad_norm": float(gn), "chunks": T,
                   "rollout_success_rate": float(ro["success"][keep.numpy()].mean()), "errors": len(ro["errors"])}
            with open(out / CURVES, "a") as f:
                f.write(json.dumps(rec) + "\n")
            bar.set_postfix(loss=f"{m['loss']:.3f}", pos=f"{m['pos_cos']:.3f}", neg=f"{m['neg_cos']:.3f}")
            if (it + 1) % cfg.checkpoint_every == 0 or it + 1 == cfg.iterations:
                policy.save_training_state(ckpt, opt, it + 1)
    finally:
        if venv is not None:
            venv.close()

    # ---- 4. artifacts
    curves = [json.loads(line) for line in (out / CURVES).read_text().splitlines()] if (out / CURVES).exists() else []
    policy.save(out / "policy", base_source=cfg.policy)
    plot_curves(curves, out / "curves.png")
    metrics = summarize_curves(curves)
    metrics["imagined_target_cos"] = {str(t): imagined_target_similarity([targets[(t, s)] for s in pool[t]])
                                      for t in task_ids}
    write_json(out / "metrics.json", metrics)
    write_manifest(out, stage="post-train", config=cfg, inputs={"policy": cfg.policy, "wm": cfg.wm, "align": cfg.align},
                   metrics=metrics, started=started)
    return metrics


def imagined_target_similarity(targets: list[torch.Tensor]) -> float:
    """Mean chunk-averaged cosine between the imagined trajectories of different init states of
    one task (the Stage-2 negatives' targets; Eq. 1's s(·,·) over the first ``min T`` chunks).

    Near 1, the world model imagines the same latent trajectory whatever the init state, and
    the InfoNCE has nothing to tell the rollouts apart by; lower is a more informative prior.

    Args:
        targets: per init state ``[T_i, D]``.

    Returns:
        the mean over pairs i ≠ j, or NaN with fewer than two trajectories.
    """
    if len(targets) < 2:
        return float("nan")
    T = min(t.shape[0] for t in targets)
    x = torch.stack([t[:T].float() for t in targets])
    sim = masked_chunkwise_cosine(x, x, torch.ones(x.shape[:2], dtype=torch.bool))
    return float(sim[~torch.eye(len(targets), dtype=torch.bool)].mean())


def base_max_steps(benchmark: str, task) -> int:
    """The suite's step budget (chunks per rollout are capped by it)."""
    from world2act.envs import step_budget

    return step_budget(benchmark, task)


def summarize_curves(curves: list[dict]) -> dict:
    """First/last-fifth means of loss, positive/negative cosine, mean |Δa| and rollout success
    rate, plus ``warnings`` (:func:`diagnose`)."""
    if not curves:
        return {"iterations": 0}
    w = max(1, len(curves) // 5)

    def mean(key, part):
        vals = [c[key] for c in part if c.get(key) == c.get(key)]
        return float(np.mean(vals)) if vals else float("nan")

    first, last = curves[:w], curves[-w:]
    out = {
        "iterations": len(curves),
        **{f"{k}_first": mean(k, first) for k in ("loss", "pos_cos", "neg_cos", "delta_abs")},
        **{f"{k}_last": mean(k, last) for k in ("loss", "pos_cos", "neg_cos", "delta_abs")},
        "rollout_success_rate_first": mean("rollout_success_rate", first),
        "rollout_success_rate_last": mean("rollout_success_rate", last),
    }
    out["warnings"] = diagnose(out)
    return out


#: thresholds of :func:`diagnose` (first/last = means over the first/last fifth of the iterations)
MIN_COS_GAP = 0.02          # positive-pair minus negative-pair cosine at the end
MAX_DELTA_ABS = 0.5         # mean |Δa| in normalised action units (the base chunk's own scale is ≈ 1)
MAX_ROLLOUT_SR_DROP = 0.25  # fall of the on-policy rollout success rate, absolute


def diagnose(summary: dict) -> list[str]:
    """Plain-language warnings about a Stage-2 run, from :func:`summarize_curves`' figures.

    Stage 2 is reward-free, so nothing else stops a run whose objective carries no signal or
    whose residual drifts far from the base. Three checks: the last-window positive-pair cosine
    is not above the negatives' by :data:`MIN_COS_GAP` (the InfoNCE does not tell rollouts
    apart, so updates are mostly noise); mean |Δa| above :data:`MAX_DELTA_ABS`; on-policy
    rollout success fell by more than :data:`MAX_ROLLOUT_SR_DROP` (success is observed, never
    trained on). Returns an empty list for a healthy run.
    """
    w = []
    pos, neg = summary.get("pos_cos_last", float("nan")), summary.get("neg_cos_last", float("nan"))
    if pos - neg < MIN_COS_GAP:
        w.append(f"positive pairs are not closer than negatives at the end (cosine {pos:.3f} vs {neg:.3f}): "
                 "the Stage-2 objective does not tell the rollouts apart, so its updates are mostly noise")
    d = summary.get("delta_abs_last", 0.0)
    if d > MAX_DELTA_ABS:
        w.append(f"the residual's mean |Δa| reached {d:.2f} normalised action units: the policy acts far from "
                 "the base; lower lr or set delta_l2")
    a, b = summary.get("rollout_success_rate_first", float("nan")), summary.get("rollout_success_rate_last", float("nan"))
    if a - b > MAX_ROLLOUT_SR_DROP:
        w.append(f"on-policy rollout success rate fell from {a:.2f} to {b:.2f} during post-training")
    return w


def plot_curves(curves: list[dict], path: Path) -> None:
    """Loss and positive/negative-pair cosine over iterations (the paper's Fig. 5a)."""
    if not curves:
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    it = [c["iteration"] for c in curves]
    fig, ax = plt.subplots(1, 3, figsize=(13, 3.2))
    ax[0].plot(it, [c["loss"] for c in curves])
    ax[0].set(title="Stage 2 loss (Eq. 1)", xlabel="iteration")
    ax[1].plot(it, [c["pos_cos"] for c in curves], label="positive pairs")
    ax[1].plot(it, [c["neg_cos"] for c in curves], label="negatives")
    ax[1].set(title="chunk-averaged cosine", xlabel="iteration")
    ax[1].legend()
    ax[2].plot(it, [max(c["delta_abs"], 1e-6) for c in curves], color="C2", label="mean |Δa| (normalised)")
    ax[2].set(title="residual size and rollout success", xlabel="iteration", yscale="log")
    ax[2].set_ylabel("mean |Δa|", color="C2")
    sr = ax[2].twinx()
    sr.plot(it, [c["rollout_success_rate"] for c in curves], color="C3", marker=".", lw=0.8)
    sr.set_ylabel("rollout success rate", color="C3")
    sr.set_ylim(-0.05, 1.05)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
