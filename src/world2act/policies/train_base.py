"""``world2act train-base``: train the built-in flow-matching base policy on demonstrations.

Behaviour cloning with a flow-matching action head (see :mod:`world2act.policies.flow_policy`)
on a LeRobot v3 dataset from ``world2act collect``. The whole dataset is held in memory
(64×64 images: ~25 KB per frame for two cameras). Each step samples frames uniformly, takes the
next ``K`` actions (steps past the episode end are masked out of the loss), applies a random
image shift (±``augment_shift`` px, DrQ-style) and takes one AdamW step; an exponential moving
average (EMA) of the weights is what gets saved.

Resumable: ``<out>/checkpoint/`` holds weights, EMA, optimiser state, the normaliser and the
step; with
``--resume`` training continues from there and batches are drawn from ``rng(seed, step)`` so a
resumed run sees the same batches as an uninterrupted one. Ctrl-C saves a checkpoint first.
"""
from __future__ import annotations

import dataclasses
import logging
import math
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from world2act import World2ActError
from world2act.utils.config import opt

log = logging.getLogger(__name__)

CKPT = "checkpoint"


@dataclasses.dataclass
class TrainBaseConfig:
    """Configuration of ``world2act train-base`` (YAML keys = field names).

    Attributes:
        dataset: LeRobot dataset folder (``world2act collect --out``), or several comma-separated.
        steps: optimiser steps (the run also stops at ``max_minutes``).
        batch_size / lr / weight_decay / warmup_steps: AdamW with linear warm-up + cosine decay.
        max_minutes: wall-clock budget in minutes (0 = none); training stops and saves when hit.
        episodes_per_task: use at most this many demonstrations per task (0 = all).
        chunk_size: ``K`` actions per chunk. cameras: cameras to read (empty = the dataset's).
        d_model / enc_layers / dec_layers / flow_steps: model sizes (see FlowPolicyConfig).
        augment_shift: random image shift in pixels (0 = off).
        ema_decay: EMA of weights (0 = off; saved weights are the EMA).
        save_every: checkpoint period in steps. threads: torch threads (0 = all cores).
        seed: random seed.
    """

    dataset: str = opt("", "LeRobot dataset folder (from `world2act collect`)")
    steps: int = opt(4000, "optimiser steps (default 4000)")
    batch_size: int = opt(64, "batch size (default 64)")
    lr: float = opt(3e-4, "peak learning rate (default 3e-4)")
    weight_decay: float = 1e-4
    warmup_steps: int = 200
    max_minutes: float = opt(0.0, "stop and save after this many minutes (default: no limit)")
    episodes_per_task: int = opt(0, "use at most N demonstrations per task (default all)")
    chunk_size: int = opt(8, "actions per chunk K (default 8)")
    cameras: tuple[str, ...] = ()
    d_model: int = 128
    cnn_channels: tuple[int, ...] = (16, 32, 64)
    enc_layers: int = 2
    dec_layers: int = 3
    flow_steps: int = 10
    augment_shift: int = 4
    ema_decay: float = 0.999
    save_every: int = 500
    threads: int = opt(0, "torch threads (default all cores)")
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "chunk_size", "save_every"):
            if int(getattr(self, name)) <= 0:
                raise World2ActError(f"train-base: {name} must be positive, got {getattr(self, name)}")
        if self.lr <= 0:
            raise World2ActError(f"train-base: lr must be positive, got {self.lr}")
        if not 0 <= self.ema_decay < 1:
            raise World2ActError(f"train-base: ema_decay must be in [0, 1), got {self.ema_decay}")
        self.cameras = tuple(self.cameras)


# ---------------------------------------------------------------------------- data
@dataclasses.dataclass
class Demos:
    """All frames of the training demonstrations, concatenated.

    Attributes:
        images: camera -> uint8 ``[N, H, W, 3]``. states: ``[N, S]``. actions: ``[N, A]``.
        ep_end: ``[N]`` index one past the last frame of each frame's episode.
        task_index: ``[N]`` index into ``tasks``. tasks: instruction strings.
    """

    images: dict[str, np.ndarray]
    states: np.ndarray
    actions: np.ndarray
    ep_end: np.ndarray
    task_index: np.ndarray
    tasks: list[str]
    episodes: int
    benchmark: str | None
    fps: float | None

    def __len__(self) -> int:
        return int(self.actions.shape[0])


def load_demos(path: str | Path, cameras: tuple[str, ...] = (), episodes_per_task: int = 0) -> Demos:
    """Read one LeRobot dataset, or several (comma-separated paths with the same spec), into memory.

    Raises:
        World2ActError: a dataset is missing/invalid, has no episodes, lacks a camera, or two
            datasets disagree on action/state size, cameras or image size.
    """
    from world2act.utils.progress import progress_bar

    from world2act.data import LeRobotDataset

    paths = [Path(p.strip()) for p in str(path).split(",") if p.strip()]
    if not paths:
        raise World2ActError("--dataset: no folder given")
    sets = []
    for p in paths:
        if not p.exists():
            raise World2ActError(f"--dataset {p}: no such folder")
        sets.append((p, LeRobotDataset(p)))
    p0, ds0 = sets[0]
    spec = ds0.spec
    cams = tuple(cameras) or tuple(getattr(spec, "cameras", ()) or ())
    if not cams:
        raise World2ActError(f"--dataset {p0}: has no camera streams; the base policy needs images")
    for p, ds in sets:
        missing = [c for c in cams if c not in tuple(ds.spec.cameras)]
        if missing:
            raise World2ActError(f"--dataset {p}: no camera(s) {missing}; it has {list(ds.spec.cameras)}")
        for f in ("action_dim", "state_dim", "image_size"):
            if getattr(ds.spec, f) != getattr(spec, f):
                raise World2ActError(f"--dataset: {p} has {f} {getattr(ds.spec, f)} but {p0} has {getattr(spec, f)}")
        if ds.num_episodes == 0:
            raise World2ActError(f"--dataset {p}: has no episodes")
    per_task: dict[str, int] = {}
    imgs: dict[str, list[np.ndarray]] = {c: [] for c in cams}
    states, actions, ep_end, task_idx = [], [], [], []
    tasks: list[str] = []
    n = 0
    used = 0
    refs = [(ds, i) for _, ds in sets for i in range(ds.num_episodes)]
    for ds, i in progress_bar(refs, desc="loading demos", unit="ep"):
        ep = ds.load_episode(i, cameras=cams)
        if episodes_per_task and per_task.get(ep.task, 0) >= episodes_per_task:
            continue
        per_task[ep.task] = per_task.get(ep.task, 0) + 1
        if ep.task not in tasks:
            tasks.append(ep.task)
        T = len(ep)
        for c in cams:
            if c not in ep.images:
                raise World2ActError(f"--dataset {path}: episode {i} has no images for camera {c!r}")
            imgs[c].append(ep.images[c])
        states.append(np.asarray(ep.states, np.float32))
        actions.append(np.asarray(ep.actions, np.float32))
        ep_end.append(np.full(T, n + T, np.int64))
        task_idx.append(np.full(T, tasks.index(ep.task), np.int64))
        n += T
        used += 1
    return Demos(images={c: np.concatenate(v) for c, v in imgs.items()}, states=np.concatenate(states),
                 actions=np.concatenate(actions), ep_end=np.concatenate(ep_end), task_index=np.concatenate(task_idx),
                 tasks=tasks, episodes=used, benchmark=getattr(spec, "benchmark", None), fps=getattr(spec, "fps", None))


def sample_batch(demos: Demos, idx: np.ndarray, K: int) -> dict[str, np.ndarray]:
    """Frames ``idx`` ``[B]`` → images, states, action chunks ``[B, K, A]`` and mask ``[B, K]``
    (False past the episode end; those steps repeat the last action)."""
    steps = idx[:, None] + np.arange(K)[None]  # [B, K]
    mask = steps < demos.ep_end[idx][:, None]
    steps = np.minimum(steps, demos.ep_end[idx][:, None] - 1)
    return {"images": {c: v[idx] for c, v in demos.images.items()}, "states": demos.states[idx],
            "actions": demos.actions[steps], "mask": mask, "task_index": demos.task_index[idx]}


def random_shift(x: torch.Tensor, pad: int, generator: torch.Generator) -> torch.Tensor:
    """Shift each image of ``x`` ``[B, C, H, W]`` by a random integer offset in ``[-pad, pad]``
    pixels (border replicated), DrQ-style augmentation."""
    if pad <= 0:
        return x
    B, _, H, W = x.shape
    shift = torch.randint(-pad, pad + 1, (B, 2), generator=generator).float()
    theta = torch.zeros(B, 2, 3)
    theta[:, 0, 0] = 1
    theta[:, 1, 1] = 1
    theta[:, 0, 2] = shift[:, 0] * 2 / W
    theta[:, 1, 2] = shift[:, 1] * 2 / H
    grid = F.affine_grid(theta.to(x.device), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="nearest", padding_mode="border", align_corners=False)


# ---------------------------------------------------------------------------- training
def batch_loss(net, normalizer, batch: dict, lang: torch.Tensor, *, cameras: tuple[str, ...],
               image_size: tuple[int, int], augment_shift: int, generator: torch.Generator,
               device: str | torch.device = "cpu") -> torch.Tensor:
    """Flow-matching loss of one batch (the training step's forward pass, shared with fine-tuning
    such as ``world2act dreamgen``).

    Args:
        net: a :class:`~world2act.policies.flow_policy.FlowPolicyNet` in train mode.
        normalizer: the policy's normaliser (``observation.state``, ``action``).
        batch: as :func:`sample_batch` returns it: ``images`` camera -> uint8 ``[B, H, W, 3]``
            (resized to ``image_size`` if needed), ``states`` float32 ``[B, S]`` and ``actions``
            float32 ``[B, K, A]`` in dataset units, ``mask`` bool ``[B, K]``.
        lang: instruction embeddings ``[B, 384]``.
        cameras: the policy's cameras, in its order.
        augment_shift: random image shift in pixels (0 = off), drawn from ``generator``.
    """
    from world2act.policies.flow_policy import images_to_tensor

    imgs = [random_shift(images_to_tensor(batch["images"][c], image_size, device), augment_shift, generator)
            for c in cameras]
    state = normalizer.normalize("observation.state", torch.from_numpy(batch["states"]).to(device))
    acts = normalizer.normalize("action", torch.from_numpy(batch["actions"]).to(device))
    return net.loss(net.encode(imgs, state, lang), acts, mask=torch.from_numpy(batch["mask"]).to(device),
                    generator=generator)


def optimizer_step(net, ema, opt, loss: torch.Tensor, grad_clip: float = 1.0) -> None:
    """Backward, clip the gradient norm, one optimiser step, then one update of the weights' EMA
    (a :class:`world2act.utils.training.ModuleEMA`)."""
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(net.parameters(), grad_clip)
    opt.step()
    ema.update(net)


def _lr_at(step: int, cfg: TrainBaseConfig, time_frac: float = 0.0) -> float:
    """Linear warm-up, then cosine decay to 10 % of ``lr``. The decay follows the larger of the
    step progress and ``time_frac`` (elapsed / ``max_minutes``), so a run stopped by its time
    budget still ends at the low learning rate (such runs are not bit-reproducible)."""
    from world2act.utils.training import cosine_lr_factor

    return cfg.lr * cosine_lr_factor(step, cfg.steps, cfg.warmup_steps, 0.1, progress=time_frac)


def _save_checkpoint(ckpt: Path, net, ema, opt, step: int, elapsed: float, normalizer=None) -> None:
    from world2act.utils.training import save_training_state

    save_training_state(ckpt, model_state=net.state_dict(), optimizer=opt, ema=ema.shadow.state_dict(), step=step,
                        extra={"elapsed_s": elapsed},
                        files={"normalizer.safetensors": normalizer.save} if normalizer is not None else None)


def run(cfg: TrainBaseConfig, out: str | Path, *, device: str = "cpu", resume: bool = False,
        overwrite: bool = False, demos: Demos | None = None, log_with: str = "none") -> dict:
    """Train the base policy and write the policy folder to ``out``.

    ``log_with`` (:mod:`world2act.utils.tracking`) also sends each ``curve.json`` record
    (``train/loss`` = the running loss, ``train/lr``) and the final metrics to a tracker.

    Returns:
        metrics dict (steps, final loss, minutes, demonstrations, frames).

    Raises:
        World2ActError: bad dataset/config, or an ``out`` folder in use without resume/overwrite.
    """
    from world2act.utils.io import prepare_out_dir
    from world2act.utils.seeding import seed_everything, set_torch_threads
    from world2act.utils.tracking import check_backend, make_tracker
    from world2act.utils.training import ModuleEMA

    if not cfg.dataset and demos is None:
        raise World2ActError("train-base: --dataset is required")
    check_backend(log_with)
    started = time.time()
    out = Path(out)
    if demos is None:  # validate input before touching out
        demos = load_demos(cfg.dataset, cfg.cameras, cfg.episodes_per_task)
    out = prepare_out_dir(out, resume=resume, overwrite=overwrite)
    tracker = make_tracker(log_with, out, "train-base", dataclasses.asdict(cfg))
    set_torch_threads(cfg.threads or None)
    seed_everything(cfg.seed)
    pcfg, found, normalizer, net, ema, opt, policy = _build_policy(cfg, demos, out / CKPT, resume, device)
    lang_all = policy.embed_tasks(demos.tasks)  # [n_tasks, 384]
    start_step, prev_elapsed = _resume_state(out / CKPT, found, net, ema, opt)
    ema = ModuleEMA(net, ema, cfg.ema_decay, step=start_step)
    step, loss_ema, stopped, elapsed, curve = _train_loop(cfg, out, demos, pcfg, normalizer, net, ema, opt, lang_all,
                                                          tracker, start_step, prev_elapsed, resume, device)
    return _finish(cfg, out, demos, net, ema, opt, normalizer, policy, tracker, step, loss_ema, stopped, elapsed,
                   curve, started)


def _build_policy(cfg: TrainBaseConfig, demos: Demos, ckpt: Path, resume: bool, device: str):
    """The policy config from the demos, the normaliser (the checkpoint's when resuming, so the
    weights keep their units; else fitted), the network, its EMA copy, the optimiser and the
    policy wrapping the EMA. Returns ``(pcfg, found, normalizer, net, ema, opt, policy)``."""
    from world2act.policies.flow_policy import FlowPolicy, FlowPolicyConfig, FlowPolicyNet
    from world2act.policies.normalizer import Normalizer
    from world2act.utils.training import checkpoint_folder

    cams = tuple(demos.images)
    H, W = next(iter(demos.images.values())).shape[1:3]
    pcfg = FlowPolicyConfig(benchmark=demos.benchmark, action_dim=int(demos.actions.shape[1]),
                            state_dim=int(demos.states.shape[1]), chunk_size=cfg.chunk_size, cameras=cams,
                            image_size=(int(H), int(W)), d_model=cfg.d_model, cnn_channels=cfg.cnn_channels, enc_layers=cfg.enc_layers,
                            dec_layers=cfg.dec_layers, flow_steps=cfg.flow_steps)
    found = checkpoint_folder(ckpt) if resume else None
    if found is not None and (found / "normalizer.safetensors").is_file():  # keep the units the weights were trained in
        normalizer = Normalizer.load(found / "normalizer.safetensors")
    else:
        normalizer = Normalizer.fit_arrays({"observation.state": demos.states, "action": demos.actions})
    net = FlowPolicyNet(pcfg).to(device)
    ema = FlowPolicyNet(pcfg).to(device)
    ema.load_state_dict(net.state_dict())
    ema.requires_grad_(False)
    opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, betas=(0.9, 0.95))
    policy = FlowPolicy(pcfg, normalizer, ema, device=device)
    return pcfg, found, normalizer, net, ema, opt, policy


def _resume_state(ckpt: Path, found, net, ema, opt) -> tuple[int, float]:
    """Load the checkpoint into ``net``, ``ema`` and ``opt`` when one was ``found``; returns
    ``(start_step, prev_elapsed)`` (``(0, 0.0)`` for a fresh run)."""
    from world2act.utils.training import load_training_state

    start_step, prev_elapsed = 0, 0.0
    if found is not None:
        st = load_training_state(ckpt, optimizer=opt)
        try:
            net.load_state_dict(st.model_state)
            ema.load_state_dict(st.ema_state or {})
        except RuntimeError as e:
            raise World2ActError(f"{ckpt}: cannot resume, checkpoint does not fit this config ({str(e).splitlines()[0]})") from None
        start_step, prev_elapsed = st.step, float(st.extra.get("elapsed_s", 0.0))
        log.info("resuming from step %d", start_step)
    return start_step, prev_elapsed


def _train_loop(cfg: TrainBaseConfig, out: Path, demos: Demos, pcfg, normalizer, net, ema, opt, lang_all, tracker,
                start_step: int, prev_elapsed: float, resume: bool, device: str):
    """The training steps from ``start_step`` to ``cfg.steps`` (or until ``max_minutes``), with
    the loss curve, periodic checkpoints, and a checkpoint on Ctrl-C. Returns ``(step, loss_ema,
    stopped, elapsed, curve)``."""
    from world2act.utils.io import read_json, write_json
    from world2act.utils.progress import progress_bar

    ckpt = out / CKPT
    cams = tuple(demos.images)
    K = cfg.chunk_size
    curve: list[dict] = []
    curve_path = out / "curve.json"
    if resume and curve_path.is_file():
        curve = [c for c in read_json(curve_path) if c["step"] < start_step]
    t0 = time.time()
    budget_s = cfg.max_minutes * 60 if cfg.max_minutes > 0 else math.inf
    step = start_step
    loss_ema = None
    net.train()
    bar = progress_bar(total=cfg.steps, initial=start_step, desc="train-base", unit="step")
    stopped = "steps"
    try:
        while step < cfg.steps:
            if prev_elapsed + time.time() - t0 > budget_s:
                stopped = "max_minutes"
                break
            rng = np.random.default_rng([cfg.seed, step])
            gen = torch.Generator().manual_seed(int(rng.integers(2**62)))
            b = sample_batch(demos, rng.integers(0, len(demos), cfg.batch_size), K)
            time_frac = (prev_elapsed + time.time() - t0) / budget_s if math.isfinite(budget_s) else 0.0
            lr_now = _lr_at(step, cfg, time_frac)
            for g in opt.param_groups:
                g["lr"] = lr_now
            loss = batch_loss(net, normalizer, b, lang_all[torch.from_numpy(b["task_index"])], cameras=cams,
                              image_size=pcfg.image_size, augment_shift=cfg.augment_shift, generator=gen, device=device)
            optimizer_step(net, ema, opt, loss)
            step += 1
            lv = float(loss.detach())
            loss_ema = lv if loss_ema is None else 0.98 * loss_ema + 0.02 * lv
            bar.update(1)
            if step % 25 == 0:
                bar.set_postfix(loss=f"{loss_ema:.4f}")
                curve.append({"step": step, "loss": loss_ema, "lr": lr_now,
                              "elapsed_s": round(prev_elapsed + time.time() - t0, 1)})
                tracker.log(curve[-1], step=step, prefix="train/")
            if step % cfg.save_every == 0:
                _save_checkpoint(ckpt, net, ema, opt, step, prev_elapsed + time.time() - t0, normalizer)
                write_json(curve_path, curve)
    except KeyboardInterrupt:
        _save_checkpoint(ckpt, net, ema, opt, step, prev_elapsed + time.time() - t0, normalizer)
        write_json(curve_path, curve)
        log.warning("interrupted at step %d: checkpoint saved, rerun with --resume to continue", step)
        raise
    finally:
        bar.close()  # (the tracker flushes on every log: nothing is lost when this raises)
    elapsed = prev_elapsed + time.time() - t0
    return step, loss_ema, stopped, elapsed, curve


def _finish(cfg: TrainBaseConfig, out: Path, demos: Demos, net, ema, opt, normalizer, policy, tracker, step: int,
            loss_ema, stopped: str, elapsed: float, curve: list, started: float) -> dict:
    """Save the final checkpoint, curve, policy folder, metrics and manifest; close the tracker.
    Returns the metrics."""
    from world2act.utils.io import write_json
    from world2act.utils.manifest import write_manifest

    if stopped == "max_minutes":
        log.warning("train-base: max_minutes=%s cut the run short at step %d of %d; the result depends on the "
                    "machine's load and is not reproducible (give --steps a budget this machine finishes)",
                    cfg.max_minutes, step, cfg.steps)
    _save_checkpoint(out / CKPT, net, ema, opt, step, elapsed, normalizer)
    write_json(out / "curve.json", curve)
    metrics = {"steps": step, "stopped_by": stopped, "final_loss": loss_ema, "train_minutes": round(elapsed / 60, 2),
               "demonstrations": demos.episodes, "frames": len(demos), "tasks": demos.tasks,
               "threads": torch.get_num_threads(), "params": sum(p.numel() for p in net.parameters())}
    policy.save(out, extra_config={"dataset": str(cfg.dataset), **{k: v for k, v in metrics.items() if k != "tasks"}})
    write_json(out / "metrics.json", metrics)
    tracker.log({k: v for k, v in metrics.items() if k in ("final_loss", "train_minutes")}, step=step, prefix="final/")
    tracker.close()
    write_manifest(out, stage="train-base", config=cfg, inputs={"dataset": str(cfg.dataset)}, metrics=metrics,
                   started=started)
    log.info("base policy saved to %s (%d steps, %.1f min, loss %.4f)", out, step, elapsed / 60, loss_ema or float("nan"))
    return metrics


# ---------------------------------------------------------------------------- CLI
Config, RUN_OPTIONS = TrainBaseConfig, ("resume", "overwrite", "log_with")


def main(cfg: TrainBaseConfig, args) -> int:
    from world2act.utils.seeding import resolve_device

    m = run(cfg, args.out, device=resolve_device(args.device), resume=args.resume, overwrite=args.overwrite,
            log_with=args.log_with)
    print(f"base policy: {args.out} ({m['steps']} steps, {m['train_minutes']} min, {m['demonstrations']} demos)")
    return 0
