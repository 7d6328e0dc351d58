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

from world2act import World2ActError
from world2act.envs.registry import FAMILIES, family_of
from world2act.posttrain.config import WM_PROMPTS, PostTrainConfig
from world2act.posttrain.objective import RolloutBatch, masked_chunkwise_cosine, stage2_step
from world2act.utils.io import atomic_path, write_json
from world2act.utils.manifest import write_manifest
from world2act.utils.progress import progress_bar
from world2act.utils.seeding import seed_everything, torch_threads
from world2act.utils.training import checkpoint_folder
from world2act.utils.tracking import NO_TRACKER, Tracker

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
    if not cfg.camera:
        cfg.camera = str(base.cameras[0])
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
                                                 or (family_of(base.benchmark) == family_of(cfg.benchmark) == "libero"
                                                     and base.action_dim == FAMILIES["libero"].action_dim)):
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


def decompose_episodes(episodes: list[int], task_of: dict[int, str], dataset: str) -> dict[str, list[str]]:
    """Skill prompts of each distinct instruction among ``episodes`` (checked before heavy work).

    Raises:
        World2ActError: an instruction the schema decomposer cannot split, naming the dataset
            and the episode.
    """
    skills: dict[str, list[str]] = {}
    for i in episodes:
        t = task_of[i]
        if t not in skills:
            try:
                skills[t] = decompose_instruction(t)
            except World2ActError as e:
                raise World2ActError(f"--dataset {dataset}: episode {i}'s instruction {t!r} cannot be decomposed "
                                     f"into skills ({e})") from None
    return skills


def imagination_prompts(wm, instruction: str, mode: str = "skills") -> list[str]:
    """One prompt per imagined clip (Sec. 3.3; Base-WM: Sec. 5.3 / Table 4).

    ``skills``: the schema decomposer's skill prompts, each repeated as many clips as its
    training clips spanned windows (``WorldModel.prompt_windows``). ``instruction``: the global
    instruction for every clip, as many clips as a whole training episode spanned: a Base-WM
    trained on whole demonstrations (``train-wm --dataset DEMOS --clips skills``), chained at the
    Skill-WM's time scale so that Stage 2's chunk alignment is the same for both.

    Raises:
        World2ActError: an unknown mode, or ``instruction`` with a world model whose training
            prompts (``prompt_windows``) do not include this instruction.
    """
    if mode == "skills":
        return wm.clip_prompts(decompose_instruction(instruction))
    if mode != "instruction":
        raise World2ActError(f"wm_prompts must be one of {', '.join(WM_PROMPTS)}, got {mode!r}")
    if wm.prompt_windows and instruction not in wm.prompt_windows:
        raise World2ActError(f"wm_prompts=instruction: the world model was not trained on the instruction "
                             f"{instruction!r} (a Base-WM is train-wm on the demonstrations themselves)")
    return wm.clip_prompts([instruction])


def imagine_targets(wm, bundle, first_frame: np.ndarray, instruction: str, *, steps: int, seed: int,
                    prompts: str = "skills") -> dict:
    """Imagine one task from its first frame and embed the WM latents with f_v.

    Args:
        first_frame: uint8 ``[H, W, 3]`` stitched in the WM's layout.
        prompts: ``skills`` (Skill-WM) or ``instruction`` (Base-WM), :func:`imagination_prompts`.

    Returns:
        dict with ``targets`` ``[T, D]`` (one per action-bearing latent frame = one policy
        chunk), ``video`` uint8 ``[T_frames, H, W, 3]``, ``prompts`` (one per generated clip:
        a skill whose training clips spanned several 17-frame windows is generated as that many
        consecutive clips, ``WorldModel.prompt_windows``).
    """
    # a skill longer than one clip gets as many clips as its training windows (e.g. place ≈ 2)
    clip_prompts = imagination_prompts(wm, instruction, prompts)
    video, latents = wm.rollout(first_frame, clip_prompts, num_inference_steps=steps, seed=seed)
    z = action_latents(wm, latents, len(clip_prompts))  # [T, C, h, w]
    with torch.no_grad():
        targets = bundle.f_v(z[None].float())[0]  # [T, D]
    return {"targets": targets, "video": video, "prompts": clip_prompts, "anchor": skill_anchor(wm, clip_prompts)}


def skill_anchor(wm, prompts: list[str]) -> int | None:
    """Chunk index where the imagined trajectory's second skill starts (the grasp is done:
    the first skill's clips end at its gripper-closure event, Sec. 3.1), or None for one skill."""
    from world2act.worldmodel.alignment import num_latent_frames

    n = num_latent_frames(wm.config.num_frames) - 1
    for k, p in enumerate(prompts):
        if p != prompts[0]:
            return k * n
    return None


def demo_targets(wm, bundle, env, seed: int, *, sigma: float, chunk_size: int) -> dict:
    """Oracle Stage-2 targets: run the scripted expert from ``env.reset(seed=seed)`` and embed
    its own video's world-model latents (the denoiser's x0 at ``sigma``, as Stage 1 sees real
    video) with f_v, on the episode grid (windows of ``(num_frames-1)·stride`` steps from step 0).

    Args:
        env: a :class:`~world2act.envs.base.ManipulationEnv` of the task (rendering the WM's cameras).
        chunk_size: K, control steps per latent frame.

    Returns:
        dict with ``targets`` ``[T, D]``, ``expert_chunks`` ``[T, K, A]`` (normalised units),
        ``anchor`` (chunk of the expert's first gripper closure, or None), ``success``,
        ``steps``, ``video`` uint8 ``[F, H, W, 3]`` (the frames fed to the WM).

    Raises:
        World2ActError: no scripted expert for the task, or the expert's episode is shorter
            than one chunk.
    """
    from world2act.data import stitch_views
    from world2act.experts import run_expert
    from world2act.skills.contacts import detect_events, params_for

    wc = wm.config
    stride, n_frames = int(wc.frame_stride), int(wc.num_frames)

    def frame():
        views = env.render(tuple(wc.cameras), tuple(wc.image_size))
        return stitch_views(views, tuple(wc.cameras), wc.layout)

    frames, widths = [], []

    def record(step):
        if step % stride == 0:
            frames.append(frame())
        widths.append(env.gripper_width())

    actions, success = run_expert(env, seed, env.max_steps, record)
    L = len(actions)
    if L % stride == 0:
        frames.append(frame())
    frames_np, acts = np.stack(frames), np.stack(actions)
    if L < chunk_size:
        raise World2ActError(f"demo targets: the expert's episode from seed {seed} has {L} steps, less than one chunk ({chunk_size})")
    events = detect_events(np.asarray(widths, dtype=np.float64), params_for(env.benchmark)).events
    closes = [e.index for e in events if e.kind == "close"]
    prompts_all = decompose_instruction(env.instruction)
    span = (n_frames - 1) * stride
    videos, prompts, n_valid = [], [], []
    for w in range(0, L, span):
        nv = min(n_frames // 4, (L - w) // chunk_size, (len(frames_np) - 1) * stride // chunk_size - w // chunk_size)
        if nv < 1:
            break
        rows = np.minimum(w // stride + np.arange(n_frames), len(frames_np) - 1)
        videos.append(frames_np[rows])
        prompts.append(prompts_all[min(sum(c < w for c in closes), len(prompts_all) - 1)])
        n_valid.append(nv)
    with torch.no_grad():
        z = wm.denoised_latents(np.stack(videos), prompts, sigma, seed=seed)  # [M, T', C, h, w]
        lat = torch.cat([z[m, 1:1 + nv] for m, nv in enumerate(n_valid)]).float()
        targets = bundle.f_v(lat[None])[0]
    T = targets.shape[0]
    chunks = torch.from_numpy(acts[:T * chunk_size].reshape(T, chunk_size, -1))
    return {"targets": targets, "expert_chunks": torch.as_tensor(bundle.normalize_actions(chunks), dtype=torch.float32),
            "anchor": (closes[0] // chunk_size) if closes else None, "success": success, "steps": L,
            "video": frames_np}


def align_indices(T_roll: int, T_tgt: int, roll_anchor: int | None, tgt_anchor: int | None,
                  mode: str) -> tuple[np.ndarray, np.ndarray]:
    """Which target chunk each rollout chunk is paired with.

    ``index``: chunk t ↔ target chunk t. ``events``: piecewise linear in time through the
    anchors (the rollout's first gripper closure ↔ the target's grasp): chunks up to the
    rollout's anchor are stretched onto the target's approach, later chunks keep their offset
    from the anchor. Without both anchors, ``events`` falls back to ``index``.

    Returns:
        (indices ``[T_roll]`` int, ok ``[T_roll]`` bool: an aligned target chunk exists).
    """
    t = np.arange(T_roll)
    if mode == "events" and roll_anchor is not None and tgt_anchor is not None:
        pre = np.rint(t * (tgt_anchor / max(roll_anchor, 1))).astype(int)
        idx = np.where(t <= roll_anchor, pre, tgt_anchor + (t - roll_anchor))
    elif mode in ("index", "events"):
        idx = t
    else:
        raise ValueError(f"time alignment must be 'index' or 'events', got {mode!r}")
    ok = idx < T_tgt
    return np.minimum(idx, T_tgt - 1), ok


def closure_anchor(widths: np.ndarray, valid: np.ndarray, benchmark: str) -> int | None:
    """The rollout's anchor chunk: the chunk during which the gripper first closed.

    Args:
        widths: ``[T]`` gripper width at each chunk start (dataset units); valid: ``[T]`` bool.

    Returns:
        t − 1 for the first chunk start t whose closure signal exceeds the benchmark's contact
        threshold (the closure happened while chunk t − 1 ran), or None if it never closes.
    """
    from world2act.skills.contacts import closure_signal, params_for

    p = params_for(benchmark)
    c = closure_signal(np.asarray(widths, dtype=np.float64), p.w_open)
    hits = np.flatnonzero((c > p.tau) & np.asarray(valid, dtype=bool))
    return int(max(hits[0] - 1, 0)) if hits.size else None


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
def rollout(venv, policy, n_chunks: int, camera: str, cameras: tuple[str, ...], relabel: bool = False,
            record_inputs: bool = False) -> dict:
    """Run ``n_chunks`` chunks of base + residual in every env of ``venv`` (open loop inside a chunk).

    Returns tensors ``images`` ``[N, T, 3, H, W]`` float, ``states`` ``[N, T, S]``,
    ``base_chunks`` ``[N, T, K, A]`` (normalised), ``valid`` ``[N, T]``; numpy ``widths``
    ``[N, T]`` (gripper width at each chunk start), ``success`` ``[N]`` (recorded for the
    curves only, never used by the loss); ``errors``; with ``record_inputs`` (``adapter=lora``)
    also ``base_inputs``: the policy's ``last_inputs`` after each chunk (the base's cameras,
    state, instruction embedding and flow noise), stacked to ``[N, T, ...]``.
    """
    obs_list = venv.observe(cameras=cameras)
    N = len(obs_list)
    alive = np.ones(N, dtype=bool)
    success = np.zeros(N, dtype=bool)
    imgs, states, bases, valid, widths, relabels, inputs = [], [], [], [], [], [], []
    errors: list[str] = []
    for _ in range(n_chunks):
        obs = batch_obs(obs_list)
        base_norm, delta = policy.chunk_parts(obs)  # [N, K, A] each, normalised units
        imgs.append(image_tensor(obs, camera))
        states.append(torch.as_tensor(np.asarray(obs["observation.state"]), dtype=torch.float32))
        widths.append(np.asarray(obs.get("observation.gripper_width", np.full(N, np.nan)), dtype=np.float64).reshape(N))
        bases.append(base_norm)
        if record_inputs:
            inputs.append(policy.last_inputs)
        valid.append(torch.from_numpy(alive.copy()))
        if relabel:  # the expert's chunk from where each rollout is now (DAgger-style oracle)
            K, A = base_norm.shape[-2:]
            got = venv.call("expert_chunk", int(K))
            relabels.append(np.stack([np.asarray(g["value"], dtype=np.float32) if not g.get("error")
                                      else np.zeros((K, A), np.float32) for g in got]))
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
        "valid": torch.stack(valid, 1), "success": success, "errors": errors, "widths": np.stack(widths, 1),
        "relabels": np.stack(relabels, 1) if relabels else None,  # [N, T, K, A] raw env units
        "base_inputs": {k: torch.stack([d[k] for d in inputs], 1) for k in inputs[0]} if inputs else None,
    }


def make_lora_policy(cfg: PostTrainConfig, base, bundle):
    """``adapter=lora`` (Table S2): LoRA adapters inside a copy of the frozen base flow policy
    (:class:`world2act.policies.lora_policy.LoraPolicy`), with ``lora_rank``, ``lora_targets``
    and ``lora_sample_steps``. It offers the loop the residual policy's interface
    (``chunk_parts``, ``residual`` = the trainable module, checkpoints, ``save``) plus
    ``combined_chunk``, the ``chunk_fn`` of :func:`stage2_step`.

    Raises:
        World2ActError: the base is not a local flow policy, or a target matches no Linear layer.
    """
    from world2act.policies.lora_policy import LoraAdapterConfig, LoraPolicy

    torch.manual_seed(cfg.seed)  # LoRA A matrices
    return LoraPolicy(base, LoraAdapterConfig(rank=cfg.lora_rank, targets=tuple(cfg.lora_targets),
                                              sample_steps=cfg.lora_sample_steps), bundle=bundle)


# --------------------------------------------------------------------------- main loop
def run(cfg: PostTrainConfig, out: str | Path, *, device: str = "cpu", resume: bool = False,
        tracker: Tracker = NO_TRACKER) -> dict:
    """Post-train a residual on top of a frozen base policy; write a loadable policy folder.

    ``tracker`` (:mod:`world2act.utils.tracking`) also receives each iteration's curve record.

    Returns the final metrics dict. Raises :class:`World2ActError` on bad components.
    """
    from world2act.envs import resolve_tasks
    from world2act.policies.residual import ResidualPolicy

    started = time.time()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rng = seed_everything(cfg.seed)
    task_ids = resolve_tasks(cfg.benchmark, ",".join(cfg.tasks))
    base, wm, bundle = load_components(cfg, device)
    if cfg.targets == "demo" or cfg.expert_relabel:
        check_expert(cfg.benchmark, task_ids)
    policy = (make_lora_policy(cfg, base, bundle) if cfg.adapter == "lora" else
              ResidualPolicy.create(base, bundle, camera=cfg.camera, seed=cfg.seed, align_dir=cfg.align,
                                    gate_init=cfg.gate_init, max_delta=cfg.max_delta, head=cfg.head))
    cameras = tuple(dict.fromkeys(list(base.cameras) + list(wm.config.cameras)))
    size = tuple(base.image_size)
    K = int(base.chunk_size)

    # ---- 2. target trajectories (cached; resumable)
    pool = {task: posttrain_seeds(cfg.benchmark, task, cfg.init_states_per_task) for task in task_ids}
    targets = build_targets(cfg, wm, bundle, pool, out, size=size, cameras=cameras, chunk_size=K)

    # ---- 3. the loop
    _iterate(cfg, out, rng, task_ids, base, bundle, policy, pool, targets, size, cameras, resume, tracker)

    # ---- 4. artifacts
    return _save_artifacts(cfg, out, policy, pool, targets, task_ids, started)


def _iterate(cfg: PostTrainConfig, out: Path, rng, task_ids: list, base, bundle, policy, pool: dict, targets: dict,
             size, cameras, resume: bool, tracker: Tracker) -> None:
    """The post-training iterations (from the checkpoint's when resuming): roll out, align to
    the targets, update the residual from the replay, append a curve record, checkpoint. One
    set of simulator workers serves the whole run and is closed at the end."""
    from collections import deque

    from world2act.envs.parallel import VectorEnv

    K = int(base.chunk_size)
    params = [p for p in policy.residual.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    start_it = 0
    ckpt = out / "checkpoint"
    if resume and checkpoint_folder(ckpt) is not None:
        start_it = policy.load_training_state(ckpt, opt)
        log.info("resuming post-training at iteration %d", start_it)
    elif (out / CURVES).exists():
        (out / CURVES).unlink()
    budget_chunks = max(1, base_max_steps(cfg.benchmark, task_ids[0]) // K)
    action_space = executed_action_space(bundle) if cfg.fa_input == "executed" else None
    replay: deque = deque(maxlen=max(1, cfg.replay))  # the current round first, then older ones
    venv = None
    bar = progress_bar(range(start_it, cfg.iterations), desc="post-train", initial=start_it, total=cfg.iterations)
    try:
        for it in bar:
            slots = slot_tasks(task_ids, it, cfg.num_envs, cfg.task_mixing)
            chosen = choose_init_states(rng, pool, slots)
            tgt = [targets[(t, s)] for t, s in zip(slots, chosen)]
            T = _round_chunks(cfg, tgt, budget_chunks)
            if venv is None:  # one set of workers for the whole run; a task switch rebuilds only the simulators
                venv = VectorEnv(cfg.benchmark, slots, workers=cfg.workers, camera_size=size, cameras=cameras)
            elif list(venv.task_ids) != list(slots):
                venv.set_tasks(slots)
            ro, batch, keep = _collect_round(cfg, venv, policy, base, bundle, it, start_it, chosen, tgt, slots,
                                             task_ids, T)
            if batch is None:
                continue
            replay.appendleft(batch)
            m, gn, schedule = _update_round(cfg, rng, list(replay), policy, bundle, params, opt, action_space)
            rec = {"iteration": it, "task": ",".join(dict.fromkeys(str(t) for t in slots)), **m,
                   "grad_norm": float(gn), "chunks": T, "optimizer_steps": len(schedule),
                   "rollout_success_rate": float(ro["success"][keep.numpy()].mean()), "errors": len(ro["errors"]),
                   "aligned_chunks": float(batch.valid.float().sum(1).mean())}
            with open(out / CURVES, "a") as f:
                f.write(json.dumps(rec) + "\n")
            tracker.log(rec, step=it)
            bar.set_postfix(loss=f"{m['loss']:.3f}", pos=f"{m['pos_cos']:.3f}", neg=f"{m['neg_cos']:.3f}",
                            d=f"{m['delta_abs']:.3f}")
            if (it + 1) % cfg.checkpoint_every == 0 or it + 1 == cfg.iterations:
                policy.save_training_state(ckpt, opt, it + 1)
    finally:
        if venv is not None:
            venv.close()


def _round_chunks(cfg: PostTrainConfig, tgt: list, budget_chunks: int) -> int:
    """How many chunks this round's rollouts run: the targets' length (1.5 x the longest with
    event alignment, since a slower rollout may need more; else the shortest), capped by the
    step budget and ``max_chunks``."""
    T_tgt = [int(t["targets"].shape[0]) for t in tgt]
    if cfg.time_alignment == "events":  # a slower rollout may need more chunks than its target
        return min(int(np.ceil(1.5 * max(T_tgt))), budget_chunks, cfg.max_chunks or 10**9)
    return min(min(T_tgt), budget_chunks, cfg.max_chunks or 10**9)


def _collect_round(cfg: PostTrainConfig, venv, policy, base, bundle, it: int, start_it: int, chosen, tgt, slots,
                   task_ids, T: int):
    """Reset the simulators to the chosen init states, roll the policy out for ``T`` chunks (its
    noise seeded by the iteration), fit the state normaliser on the first round, and align the
    rollouts to their targets. Returns ``(ro, batch, keep)``; ``batch`` is ``None`` (the round
    skipped) when fewer than 2 rollouts ran without errors."""
    venv.reset([dict(seed=s) for s in chosen])
    policy.reset()
    policy.seed(cfg.seed * 100_003 + it)  # flow-matching noise: same rollouts after a resume
    with torch_threads(1):  # the simulator workers own the cores during rollouts
        ro = rollout(venv, policy, T, cfg.camera, tuple(base.cameras), relabel=cfg.expert_relabel,
                     record_inputs=cfg.adapter == "lora")
    if it == start_it and not policy.state_norm_fitted:
        policy.fit_state_norm(ro["states"][ro["valid"]])
    batch = aligned_batch(ro, tgt, slots, task_ids, cfg, T)
    if ro.get("relabels") is not None:
        batch.expert_chunks = torch.as_tensor(bundle.normalize_actions(torch.from_numpy(ro["relabels"])),
                                              dtype=torch.float32)
    keep = batch.valid.any(1) & ro["valid"][:, 0]
    if int(keep.sum()) < 2:
        log.warning("iteration %d: fewer than 2 rollouts without errors (%s); skipped", it, ro["errors"])
        return ro, None, keep
    return ro, batch.select(keep), keep


def _update_round(cfg: PostTrainConfig, rng, batches: list, policy, bundle, params, opt, action_space):
    """This round's optimiser steps on the replayed batches (``updates_per_round`` random stored
    rounds after the fresh one, else ``epochs_per_rollout`` passes). Returns ``(m, gn,
    schedule)``: the fresh rollouts' metrics before the updates, the last gradient norm, the
    batches stepped on."""
    policy.residual.train()
    m = gn = None
    if cfg.updates_per_round > 0:  # random stored rounds; the fresh one first, for the curves
        picks = rng.integers(0, len(batches), size=cfg.updates_per_round - 1).tolist()
        schedule = [batches[0]] + [batches[i] for i in picks]
    else:
        schedule = [b for _ in range(cfg.epochs_per_rollout) for b in batches]
    for b in schedule:
        loss, mb = stage2_step(policy.residual, bundle.f_a, b, policy.state_norm(), tau=cfg.tau,
                               bidirectional=cfg.bidirectional, delta_l2=cfg.delta_l2,
                               contrast=cfg.contrast, temporal_negatives=cfg.temporal_negatives,
                               action_space=action_space, action_decoder=bundle.g_a,
                               chunk_fn=policy.combined_chunk if cfg.adapter == "lora" else None)
        m = m or mb  # metrics of the fresh rollouts before this round's updates
        opt.zero_grad()
        loss.backward()
        gn = torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
        opt.step()
    policy.residual.eval()
    return m, gn, schedule


def _save_artifacts(cfg: PostTrainConfig, out: Path, policy, pool: dict, targets: dict, task_ids: list,
                    started: float) -> dict:
    """Save the policy folder, the curves plot, ``metrics.json`` and the manifest; returns the metrics."""
    curves = [json.loads(line) for line in (out / CURVES).read_text().splitlines()] if (out / CURVES).exists() else []
    policy.save(out / "policy", base_source=cfg.policy)
    plot_curves(curves, out / "curves.png")
    metrics = summarize_curves(curves)
    metrics["targets"] = cfg.targets
    metrics["imagined_target_cos"] = {str(t): imagined_target_similarity([targets[(t, s)]["targets"] for s in pool[t]])
                                      for t in task_ids}
    metrics["wall_s"] = time.time() - started
    write_json(out / "metrics.json", metrics)
    write_manifest(out, stage="post-train", config=cfg, inputs={"policy": cfg.policy, "wm": cfg.wm, "align": cfg.align},
                   metrics=metrics, started=started)
    return metrics


def check_expert(benchmark: str, task_ids: list) -> None:
    """``targets=demo`` needs a scripted expert for every task; raise before any simulator starts.

    Raises:
        World2ActError: names the tasks without an expert.
    """
    from world2act.experts import supported_tasks

    ok = {str(t) for t in supported_tasks(benchmark)}
    missing = [t for t in task_ids if str(t) not in ok]
    if missing:
        raise World2ActError(f"post-train: targets=demo needs a scripted expert, and {benchmark} tasks {missing} have none "
                             f"(supported: {sorted(ok)[:12]}); use targets=imagined")


def build_targets(cfg: PostTrainConfig, wm, bundle, pool: dict, out: Path, *, size, cameras, chunk_size: int) -> dict:
    """Target trajectory of every (task, init-state seed), computed once and cached on disk.

    ``targets=imagined``: the world model's imagination (:func:`imagine_targets`), cached in
    ``out/imagined/``; ``targets=demo``: the scripted expert's own video (:func:`demo_targets`),
    cached in ``out/demo_targets/``.

    Returns:
        ``{(task, seed): {"targets": [T, D], "anchor": int | None, "expert_chunks": [T, K, A] | None}}``.
    """
    from world2act.data import stitch_views, write_video
    from world2act.envs import make_env

    folder = out / ("imagined" if cfg.targets == "imagined" else "demo_targets")
    folder.mkdir(exist_ok=True)
    key = target_cache_key(cfg)
    result: dict = {}
    for task, seeds in pool.items():
        todo = [s for s in seeds if _cached_key(folder / f"{task}_{s}.safetensors") != key]
        if todo:
            env = make_env(cfg.benchmark, task, camera_size=size, cameras=cameras)
            try:
                for s in progress_bar(todo, desc=f"{folder.name} task {task}", leave=False):
                    if cfg.targets == "imagined":
                        env.reset(seed=s)
                        frames = env.render(tuple(wm.config.cameras), tuple(wm.config.image_size))
                        first = stitch_views(frames, tuple(wm.config.cameras), wm.config.layout)
                        res = imagine_targets(wm, bundle, first, env.instruction, steps=cfg.imagine_steps, seed=s,
                                              prompts=cfg.wm_prompts)
                        tensors = {"targets": res["targets"].contiguous()}
                        meta = {"prompts": json.dumps(res["prompts"]), "instruction": env.instruction}
                    else:
                        res = demo_targets(wm, bundle, env, s, sigma=cfg.demo_sigma, chunk_size=chunk_size)
                        tensors = {"targets": res["targets"].contiguous(), "expert_chunks": res["expert_chunks"].contiguous()}
                        meta = {"instruction": env.instruction, "success": str(res["success"]), "steps": str(res["steps"])}
                    meta["anchor"] = json.dumps(res["anchor"])
                    meta["cache_key"] = key
                    with atomic_path(folder / f"{task}_{s}.safetensors") as tmp:
                        save_file(tensors, str(tmp), metadata=meta)
                    if s == seeds[0]:
                        write_video(folder / f"{task}_{s}.mp4", res["video"], fps=max(1, int(round(wm.config.fps))))
            finally:
                env.close()
        for s in seeds:
            from safetensors import safe_open

            path = str(folder / f"{task}_{s}.safetensors")
            with safe_open(path, "pt") as f:
                meta = f.metadata() or {}
            t = load_file(path)
            result[(task, s)] = {"targets": t["targets"], "expert_chunks": t.get("expert_chunks"),
                                 "anchor": json.loads(meta.get("anchor", "null"))}
    return result


def target_cache_key(cfg: PostTrainConfig) -> str:
    """What a cached target depends on: its kind, the world model and Stage-1 folders (their
    weight files' sizes and times), σ or the sampling steps. A cached file with another key is
    recomputed."""
    import hashlib

    stamp = []
    for folder in (cfg.wm, cfg.align):
        for p in sorted(Path(folder).rglob("*.safetensors")):
            if "cache" in p.parts or "checkpoint" in p.parts:
                continue
            st = p.stat()
            stamp.append((str(p.resolve()), st.st_size, int(st.st_mtime)))
    blob = json.dumps({"targets": cfg.targets, "sigma": cfg.demo_sigma, "steps": cfg.imagine_steps, "files": stamp,
                       **({"wm_prompts": cfg.wm_prompts} if cfg.wm_prompts != "skills" else {})})
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _cached_key(path: Path) -> str | None:
    if not path.is_file():
        return None
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        return (f.metadata() or {}).get("cache_key")


def slot_tasks(task_ids: list, iteration: int, num_envs: int, mixing: str) -> list:
    """The task of each of the ``num_envs`` rollouts of one iteration.

    ``single``: all the same task, cycling through ``task_ids`` by iteration (the paper).
    ``mixed``: env slot i gets ``task_ids[i % n]`` (every task in every update, fixed slots so
    no simulator is rebuilt).
    """
    if mixing == "single":
        return [task_ids[iteration % len(task_ids)]] * num_envs
    if mixing == "mixed":
        return [task_ids[i % len(task_ids)] for i in range(num_envs)]
    raise ValueError(f"task_mixing must be 'single' or 'mixed', got {mixing!r}")


def choose_init_states(rng: np.random.Generator, pool: dict, slots: list) -> list[int]:
    """One post-training init-state seed per slot, without repeats within a task."""
    chosen: list[int] = [0] * len(slots)
    for task in dict.fromkeys(slots):
        idx = [i for i, t in enumerate(slots) if t == task]
        if len(idx) > len(pool[task]):
            raise World2ActError(f"post-train: {len(idx)} rollouts of task {task} per update but only "
                                 f"{len(pool[task])} init states (raise init_states_per_task)")
        for i, s in zip(idx, rng.choice(pool[task], size=len(idx), replace=False).tolist()):
            chosen[i] = int(s)
    return chosen


def aligned_batch(ro: dict, tgt: list[dict], slots: list, task_ids: list, cfg: PostTrainConfig, T: int) -> RolloutBatch:
    """Pair each rollout chunk with its target chunk (:func:`align_indices`) into a :class:`RolloutBatch`."""
    N = len(tgt)
    D = tgt[0]["targets"].shape[-1]
    targets = torch.zeros(N, T, D)
    ok = torch.zeros(N, T, dtype=torch.bool)
    has_expert = all(t.get("expert_chunks") is not None for t in tgt)
    expert = torch.zeros(N, T, *ro["base_chunks"].shape[-2:]) if has_expert else None
    for i, t in enumerate(tgt):
        anchor = closure_anchor(ro["widths"][i], ro["valid"][i].numpy(), cfg.benchmark) if cfg.time_alignment == "events" else None
        idx, good = align_indices(T, int(t["targets"].shape[0]), anchor, t.get("anchor"), cfg.time_alignment)
        targets[i] = t["targets"][idx]
        ok[i] = torch.from_numpy(good)
        if has_expert:
            expert[i] = t["expert_chunks"][idx]
    groups = torch.tensor([task_ids.index(s) for s in slots])
    return RolloutBatch(images=ro["images"], states=ro["states"], base_chunks=ro["base_chunks"], targets=targets,
                        valid=ro["valid"] & ok, groups=groups, expert_chunks=expert, base_inputs=ro.get("base_inputs"))


def executed_action_space(bundle):
    """Normalised chunk → the normalised form of the action the simulator executes (un-normalise,
    clip to the action box [-1, 1], normalise again); differentiable inside the box."""
    def space(x: torch.Tensor) -> torch.Tensor:
        return bundle.normalize_actions(bundle.unnormalize_actions(x).clamp(-1.0, 1.0))
    return space


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
    keys = ["loss", "pos_cos", "neg_cos", "delta_abs"]
    keys += [k for k in ("neg_cos_same_task", "expert_err_base", "expert_err", "toward_expert",
                                   "grad_toward_expert", "decoded_err", "decoded_toward_expert") if k in curves[-1]]
    out = {
        "iterations": len(curves),
        "optimizer_steps": int(sum(c.get("optimizer_steps", 1) for c in curves)),
        **{f"{k}_first": mean(k, first) for k in keys},
        **{f"{k}_last": mean(k, last) for k in keys},
        "rollout_success_rate_first": mean("rollout_success_rate", first),
        "rollout_success_rate_last": mean("rollout_success_rate", last),
    }
    out["cos_gap_last"] = out["pos_cos_last"] - out["neg_cos_last"]
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
