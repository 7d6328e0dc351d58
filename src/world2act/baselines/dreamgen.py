"""``world2act dreamgen``: the DreamGen baseline (Jang et al. 2025; the paper's Tables 1-2, Fig. 5b).

DreamGen turns a video world model's imagination into training data through pixels:

1. **IDM**: an inverse dynamics model (:mod:`world2act.baselines.idm`) is trained on the
   demonstrations: the frames at a chunk's start and ``K`` steps later → the ``K`` actions.
2. **Pseudo-labels**: the world model imagines the SAME trajectories that World2Act's Stage 2
   uses: for every post-training init state (:func:`world2act.posttrain.loop.posttrain_seeds`)
   the first frame is rendered in the world model's stitched layout, the instruction is cut
   into skill prompts and :meth:`WorldModel.rollout` generates the task with the init state's
   seed, exactly as ``post-train`` does (same world model, seeds and ``imagine_steps`` → the
   same videos). The decoded video (one frame every ``s`` control steps) is cut into frame
   pairs ``(i, i + K/s)`` at every frame, each pair is labelled by the IDM, and overlapping
   predictions of a control step are averaged (GR00T-Dreams' IDM dump does the same).
3. **Fine-tuning**: the base policy's own weights are fine-tuned with its own flow-matching
   training step (:func:`world2act.policies.train_base.batch_loss` / ``optimizer_step``) on
   batches that mix real demonstration chunks and pseudo-labelled chunks
   (``finetune.pseudo_fraction`` of each batch), then saved as a normal policy folder.

The imagined frames are un-stitched into the policy's cameras
(:func:`world2act.data.unstitch_views`) and resized to its image size. Their state is unknown:
with ``pseudo_state=idm`` (default) the IDM's state head estimates ``observation.state`` from
the frames (the policy then sees a state consistent with the image, as at evaluation; frame 0
gets the simulator's true state at the init state), with ``pseudo_state=mean`` the
demonstrations' mean state is used (the state token then carries no information on those
samples). docs/baselines.md discusses the choice.

Writes under ``--out``: ``idm/`` (the IDM folder, its held-out MSE), ``pseudo/`` (one
``<task>_<seed>.safetensors`` per imagined trajectory: the decoded video, the IDM's chunk and
state predictions, the per-step labels; ``labels.json``; ``strip.png``, a few imagined frames
with their labels), ``policy/`` (loadable by ``world2act eval``), ``curve.json``,
``metrics.json`` and ``manifest.json``. Resumable with ``--resume``: a finished IDM whose
config matches and imagined videos already on disk are reused (labels are redone when the
IDM changed).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import time
from pathlib import Path

import numpy as np
import torch

from world2act import World2ActError
from world2act.baselines.idm import IDMConfig, IDMTrainConfig, InverseDynamicsModel, resize_frames, train_idm
from world2act.posttrain.config import PostTrainConfig
from world2act.utils.config import opt

log = logging.getLogger(__name__)

PSEUDO_STATES = ("idm", "mean")


@dataclasses.dataclass
class FinetuneConfig:
    """Fine-tuning the base policy on real + pseudo-labelled data (key ``finetune``).

    Attributes:
        steps: optimiser steps.
        batch_size / lr / weight_decay / warmup_steps: AdamW with linear warm-up and cosine
            decay to 10 % of ``lr`` (the base's schedule; ``lr`` lower than training from
            scratch: the weights start from the base).
        pseudo_fraction: the mixing ratio: share of every batch drawn from the pseudo-labelled
            imagined samples (the rest are real demonstration chunks). 0 = fine-tune on real
            data only (a control for "more steps on the demos"), 1 = pseudo-labelled only.
        augment_shift: random image shift in pixels, as in ``train-base``.
        ema_decay: EMA of the weights (saved weights are the EMA; 0 = off).
    """

    steps: int = opt(1000, "fine-tuning optimiser steps (default 1000)")
    batch_size: int = 64
    lr: float = 1e-4
    weight_decay: float = 1e-4
    warmup_steps: int = 50
    pseudo_fraction: float = opt(0.5, "share of each fine-tuning batch from pseudo-labelled data (default 0.5)")
    augment_shift: int = 4
    ema_decay: float = 0.999

    def __post_init__(self) -> None:
        if self.steps <= 0 or self.batch_size <= 0 or self.lr <= 0 or self.warmup_steps < 0:
            raise World2ActError("dreamgen: finetune.steps, batch_size and lr must be positive, warmup_steps ≥ 0")
        if not 0 <= self.pseudo_fraction <= 1:
            raise World2ActError(f"dreamgen: finetune.pseudo_fraction must be in [0, 1], got {self.pseudo_fraction}")
        if not 0 <= self.ema_decay < 1:
            raise World2ActError(f"dreamgen: finetune.ema_decay must be in [0, 1), got {self.ema_decay}")


@dataclasses.dataclass
class DreamGenConfig:
    """Everything ``world2act dreamgen`` needs (YAML keys = field names).

    Attributes:
        policy: base policy folder (the built-in flow policy: its weights are fine-tuned).
        wm: world-model folder (the one World2Act's Stage 2 imagines with).
        dataset: demonstration dataset(s) (LeRobot, comma-separated for several): trains the
            IDM and is the real half of the fine-tuning batches.
        benchmark / tasks: whose post-training init states are imagined.
        init_states_per_task: imagined trajectories per task (the budget; ``post-train``'s
            ``--init-states``: the same seeds and the same videos).
        imagine_steps: world-model sampling steps per clip (``post-train``'s default).
        episodes_per_task: demonstrations used per task (0 = all).
        pseudo_state: state given to pseudo-labelled samples: ``idm`` (the IDM's estimate from
            the frames; the true state at frame 0) or ``mean`` (the demonstrations' mean).
        ensemble: average the IDM's overlapping chunk predictions per control step (pairs
            start at every decoded frame) before cutting chunks; False = each chunk is the
            raw prediction of its own pair.
        strip_frames: imagined frames shown in ``pseudo/strip.png``.
        idm: :class:`~world2act.baselines.idm.IDMTrainConfig`.
        finetune: :class:`FinetuneConfig`.
        seed: RNG seed (IDM init and batches, fine-tuning batches and flow noise).
    """

    policy: str = opt("", "base policy folder (built-in flow policy; its weights are fine-tuned)")
    wm: str = opt("", "world-model folder (the one Stage 2 imagines with)")
    dataset: str = opt("", "demonstrations (LeRobot; comma-separated for several): IDM training + real half of the batches")
    benchmark: str = opt("libero_object", "benchmark whose post-training init states are imagined (default libero_object)")
    tasks: list[str] = opt(help="task ids / names, comma-separated", factory=lambda: ["0"])
    init_states_per_task: int = opt(PostTrainConfig.init_states_per_task, "imagined trajectories per task "
                                    "(post-train's --init-states; default 8)", flag="--init-states")
    imagine_steps: int = opt(PostTrainConfig.imagine_steps, "world-model sampling steps per clip (default: post-train's, 10)")
    episodes_per_task: int = 0
    pseudo_state: str = "idm"
    ensemble: bool = True
    strip_frames: int = 6
    idm: IDMTrainConfig = dataclasses.field(default_factory=IDMTrainConfig)
    finetune: FinetuneConfig = dataclasses.field(default_factory=FinetuneConfig)
    seed: int = 0

    def __post_init__(self) -> None:
        self.tasks = [str(t) for t in self.tasks]
        if self.init_states_per_task < 1 or self.imagine_steps < 1:
            raise World2ActError("dreamgen: init_states_per_task and imagine_steps must be ≥ 1")
        if self.episodes_per_task < 0:
            raise World2ActError(f"dreamgen: episodes_per_task must be ≥ 0, got {self.episodes_per_task}")
        if self.pseudo_state not in PSEUDO_STATES:
            raise World2ActError(f"dreamgen: pseudo_state must be one of {', '.join(PSEUDO_STATES)}, got {self.pseudo_state!r}")


# ---------------------------------------------------------------------------- frame pairs and labels
def chunk_frame_pairs(num_frames: int, frame_stride: int, chunk_size: int) -> np.ndarray:
    """Frame pairs of an imagined video that span one action chunk.

    Frame ``i`` of a world-model video is the observation before control step ``s·i``
    (:mod:`world2act.worldmodel.alignment`), so a chunk of ``K`` steps starting at frame ``i``
    ends at frame ``i + K/s`` (``K = 4·s`` → 4 frames later, one latent frame).

    Args:
        num_frames: decoded frames ``F`` of the video.
        frame_stride: ``s``, control steps between decoded frames.
        chunk_size: ``K``, a multiple of ``s``.

    Returns:
        int ``[P, 2]``: ``(first, last)`` frame of every pair, one per start frame
        ``0 .. F-1-K/s`` (empty when the video is shorter than one chunk).

    Raises:
        World2ActError: ``K`` is not a positive multiple of ``s``.
    """
    if frame_stride < 1 or chunk_size < frame_stride or chunk_size % frame_stride:
        raise World2ActError(f"chunk size {chunk_size} is not a positive multiple of the world model's frame "
                             f"stride {frame_stride}: a chunk would end between two imagined frames")
    gap = chunk_size // frame_stride
    first = np.arange(max(0, num_frames - gap), dtype=np.int64)
    return np.stack([first, first + gap], 1) if len(first) else np.zeros((0, 2), np.int64)


def ensemble_labels(chunks: np.ndarray, first_frames: np.ndarray, frame_stride: int,
                    num_steps: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-step labels from overlapping chunk predictions.

    Args:
        chunks: ``[P, K, A]`` predicted chunks; chunk ``p`` covers control steps
            ``s·first_frames[p] .. s·first_frames[p] + K - 1``.
        first_frames: ``[P]`` start frame of each chunk.
        frame_stride: ``s``.
        num_steps: ``L``, control steps of the video (``s·(F - 1)``).

    Returns:
        (actions ``[L, A]``: the mean of the predictions covering each step (0 where none),
        count ``[L]`` int: how many predictions cover it, spread ``[L, A]``: their standard
        deviation, 0 where fewer than two).
    """
    chunks = np.asarray(chunks, np.float64)
    P, K, A = chunks.shape if chunks.ndim == 3 else (0, 0, 0)
    total = np.zeros((num_steps, A or 1))
    sq = np.zeros_like(total)
    count = np.zeros(num_steps, np.int64)
    for p in range(P):
        s0 = int(first_frames[p]) * frame_stride
        hi = min(num_steps, s0 + K)
        if hi <= s0:
            continue
        total[s0:hi] += chunks[p, :hi - s0]
        sq[s0:hi] += chunks[p, :hi - s0] ** 2
        count[s0:hi] += 1
    c = np.maximum(count, 1)[:, None]
    mean = total / c
    var = np.where(count[:, None] > 1, np.maximum(sq / c - mean ** 2, 0.0), 0.0)
    return mean.astype(np.float32), count, np.sqrt(var).astype(np.float32)


def pseudo_chunks(pred_chunks: np.ndarray, pairs: np.ndarray, frame_stride: int, num_steps: int,
                  ensemble: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The training chunk of every pair's start frame.

    Returns:
        (chunks ``[P, K, A]`` float32, per-step labels ``[L, A]``, per-step spread ``[L, A]``):
        with ``ensemble`` chunk ``p`` is cut from the averaged per-step labels, else it is the
        raw prediction of pair ``p`` (the per-step arrays are then still the averages, for
        the record).
    """
    actions, _, spread = ensemble_labels(pred_chunks, pairs[:, 0], frame_stride, num_steps)
    if not ensemble or len(pairs) == 0:
        return np.asarray(pred_chunks, np.float32), actions, spread
    K = pred_chunks.shape[1]
    steps = pairs[:, :1] * frame_stride + np.arange(K)[None]
    return actions[steps], actions, spread


# ---------------------------------------------------------------------------- checks
def check_components(cfg: DreamGenConfig, policy, wc, spec) -> None:
    """Raise :class:`World2ActError` naming both sides of the first mismatch between the base
    policy, the world model config ``wc``, the dataset spec and the benchmark."""
    from world2act.envs import check_cameras

    pol, wmn, dsn = f"policy {cfg.policy}", f"world model {cfg.wm}", f"dataset {cfg.dataset}"
    pairs = [(f"{pol} action_dim", policy.action_dim, f"{dsn} action_dim", spec.action_dim),
             (f"{pol} state_dim", policy.state_dim, f"{dsn} state_dim", spec.state_dim)]
    for left, lv, right, rv in pairs:
        if int(lv) != int(rv):
            raise World2ActError(f"mismatched components: {left} = {lv} but {right} = {rv}")
    K, s = int(policy.chunk_size), int(wc.frame_stride)
    if K < s or K % s:
        raise World2ActError(f"mismatched components: {pol} chunk_size = {K} is not a multiple of {wmn} frame_stride "
                             f"= {s} (a chunk must start and end on imagined frames)")
    missing = [c for c in policy.cameras if c not in wc.cameras]
    if missing:
        raise World2ActError(f"mismatched components: {pol} cameras = {list(policy.cameras)} but {wmn} imagines "
                             f"{list(wc.cameras)} (missing {missing})")
    missing = [c for c in wc.cameras if c not in spec.cameras]
    if missing:
        raise World2ActError(f"mismatched components: {wmn} cameras = {list(wc.cameras)} but {dsn} has "
                             f"{list(spec.cameras)} (missing {missing}; the IDM learns from them)")
    try:
        check_cameras(cfg.benchmark, wc.cameras)
    except World2ActError as e:
        raise World2ActError(f"mismatched components: {wmn} cameras = {list(wc.cameras)} cannot be rendered on "
                             f"{cfg.benchmark} ({e})") from None
    if spec.benchmark and policy.benchmark:
        from world2act.policies.base import benchmark_family

        if benchmark_family(spec.benchmark) != benchmark_family(policy.benchmark):
            raise World2ActError(f"mismatched components: {dsn} is from {spec.benchmark} but {pol} was trained "
                                 f"for {policy.benchmark}")


def check_posttrain_seeds(benchmark: str, tasks: list[str], n: int) -> dict:
    """``{task id: post-training init-state seeds}`` (``post-train``'s pool for ``--init-states n``).

    Raises:
        World2ActError: one line, for a benchmark without seeded post-training resets (only the
            registered benchmarks have a post-training seed range; e.g. a suite that exists only
            as official init states) or an unknown task.
    """
    from world2act.envs import BENCHMARKS, resolve_tasks
    from world2act.posttrain.loop import posttrain_seeds

    if benchmark not in BENCHMARKS:
        raise World2ActError(f"dreamgen: benchmark {benchmark} has no post-training init-state seeds (seeded resets "
                             f"exist for {', '.join(BENCHMARKS)})")
    task_ids = resolve_tasks(benchmark, ",".join(tasks))
    try:
        return {t: posttrain_seeds(benchmark, t, n) for t in task_ids}
    except (World2ActError, ValueError) as e:
        raise World2ActError(f"dreamgen: benchmark {benchmark} has no post-training init-state seeds ({e})") from None


# ---------------------------------------------------------------------------- imagination
def imagine_video(wm, env, seed: int, steps: int) -> dict:
    """Imagine one post-training trajectory as ``post-train`` does (``build_targets`` +
    ``imagine_targets``): reset to ``seed``, render the world model's cameras at its view size,
    stitch them in its layout, decompose the instruction, roll out with ``seed``.

    Returns:
        dict with ``video`` uint8 ``[F, H, W, 3]`` (stitched, decoded), ``prompts``,
        ``instruction`` and ``state0`` (the simulator's ``observation.state`` at the init state).
    """
    from world2act.posttrain.loop import decompose_instruction
    from world2act.worldmodel.data import stitch

    wc = wm.config
    env.reset(seed=seed)
    views = env.render(tuple(wc.cameras), tuple(wc.image_size))
    first = stitch(views, tuple(wc.cameras), wc.layout)
    state0 = np.asarray(env.proprio(), np.float32)
    prompts = wm.clip_prompts(decompose_instruction(env.instruction))
    video, _ = wm.rollout(first, prompts, num_inference_steps=steps, seed=seed)
    return {"video": np.asarray(video), "prompts": prompts, "instruction": env.instruction, "state0": state0}


def label_video(idm: InverseDynamicsModel, video: np.ndarray, wc) -> dict:
    """IDM predictions for every chunk-spanning frame pair of a stitched imagined video.

    Returns:
        dict with ``pairs`` ``[P, 2]``, ``pred_chunks`` ``[P, K, A]`` and ``pred_states``
        ``[P, S]`` (state at each pair's first frame; absent without a state head), dataset units.
    """
    from world2act.data import unstitch_views

    views = unstitch_views(video, tuple(wc.cameras), wc.layout)
    pairs = chunk_frame_pairs(len(video), int(wc.frame_stride), idm.config.chunk_size)
    first = {c: views[c][pairs[:, 0]] for c in idm.config.cameras}
    last = {c: views[c][pairs[:, 1]] for c in idm.config.cameras}
    chunks, states = idm.predict(first, last)
    out = {"pairs": pairs, "pred_chunks": chunks}
    if states is not None:
        out["pred_states"] = states
    return out


def _file_hash(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:16]


def _imagine_key(cfg: DreamGenConfig, wc, task, seed: int) -> str:
    blob = json.dumps({"wm": str(Path(cfg.wm).resolve()), "wm_config": dataclasses.asdict(wc),
                       "steps": cfg.imagine_steps, "benchmark": cfg.benchmark, "task": str(task), "seed": seed},
                      sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def build_pseudo(cfg: DreamGenConfig, wm, wc, idm: InverseDynamicsModel, idm_key: str, pool: dict, folder: Path,
                 *, camera_size, cameras) -> list[dict]:
    """Imagine (or reuse) and label every (task, seed) trajectory; one safetensors file each.

    ``camera_size`` / ``cameras``: the simulator's settings, as ``post-train`` builds it (the
    policy's image size; the policy's cameras then the world model's).

    Returns:
        per trajectory: ``task``, ``seed``, ``instruction``, ``prompts``, ``video``,
        ``pairs``, ``pred_chunks``, ``pred_states`` (or None), ``state0``.
    """
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file
    from world2act.utils.progress import progress_bar

    from world2act.envs import make_env
    from world2act.utils.io import atomic_path

    folder.mkdir(parents=True, exist_ok=True)
    trajs = []
    for task, seeds in pool.items():
        env = None
        try:
            for s in progress_bar(seeds, desc=f"imagine+label task {task}", leave=False):
                path = folder / f"{task}_{s}.safetensors"
                key = _imagine_key(cfg, wc, task, s)
                meta, tensors = {}, {}
                if path.is_file():
                    with safe_open(str(path), "pt") as f:
                        meta = dict(f.metadata() or {})
                    if meta.get("imagine_key") == key:
                        tensors = {k: v.numpy() for k, v in load_file(str(path)).items()}
                if not tensors:  # imagine
                    if env is None:
                        env = make_env(cfg.benchmark, task, camera_size=camera_size, cameras=cameras)
                    res = imagine_video(wm, env, s, cfg.imagine_steps)
                    tensors = {"video": res["video"], "state0": res["state0"]}
                    meta = {"imagine_key": key, "instruction": res["instruction"], "prompts": json.dumps(res["prompts"]),
                            "task": str(task), "seed": str(s)}
                if meta.get("idm_key") != idm_key or "pred_chunks" not in tensors:  # (re)label
                    lab = label_video(idm, tensors["video"], wc)
                    tensors.update(lab)
                    if "pred_states" not in lab:  # the new IDM has no state head
                        tensors.pop("pred_states", None)
                    acts, count, spread = ensemble_labels(lab["pred_chunks"], lab["pairs"][:, 0], int(wc.frame_stride),
                                                          int(wc.frame_stride) * (len(tensors["video"]) - 1))
                    tensors.update({"actions": acts, "count": count, "spread": spread})
                    meta["idm_key"] = idm_key
                    with atomic_path(path) as tmp:
                        save_file({k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in tensors.items()}, str(tmp),
                                  metadata=meta)
                trajs.append({"task": task, "seed": s, "instruction": meta["instruction"],
                              "prompts": json.loads(meta["prompts"]), "video": tensors["video"],
                              "pairs": tensors["pairs"].astype(np.int64), "pred_chunks": tensors["pred_chunks"],
                              "pred_states": tensors.get("pred_states"), "state0": tensors["state0"],
                              "spread": tensors["spread"], "count": tensors["count"]})
        finally:
            if env is not None:
                env.close()
    return trajs


@dataclasses.dataclass
class PseudoSamples:
    """Pseudo-labelled training samples, one per imagined frame that starts a full chunk.

    Attributes:
        images: policy camera -> uint8 ``[M, H, W, 3]`` at the policy's image size.
        states: ``[M, S]`` float32 (see ``pseudo_state``). chunks: ``[M, K, A]`` float32,
            dataset units, clipped to the base policy's action range.
        task_index: ``[M]`` into ``tasks``. tasks: instruction strings.
        clipped_fraction: share of label elements that were outside the action range.
    """

    images: dict[str, np.ndarray]
    states: np.ndarray
    chunks: np.ndarray
    task_index: np.ndarray
    tasks: list[str]
    clipped_fraction: float

    def __len__(self) -> int:
        return int(self.chunks.shape[0])


def assemble_samples(trajs: list[dict], wc, policy, *, ensemble: bool, pseudo_state: str) -> PseudoSamples:
    """Un-stitch, resize and label the imagined frames into :class:`PseudoSamples` for ``policy``."""
    from world2act.data import unstitch_views

    s = int(wc.frame_stride)
    norm = policy.normalizer
    mean_state = norm.unnormalize("observation.state", torch.zeros(1, policy.state_dim)).numpy()[0].astype(np.float32)
    imgs: dict[str, list] = {c: [] for c in policy.cameras}
    states, chunks, tidx, tasks = [], [], [], []
    for tr in trajs:
        pairs = tr["pairs"]
        if len(pairs) == 0:
            continue
        L = s * (len(tr["video"]) - 1)
        ch, _, _ = pseudo_chunks(tr["pred_chunks"], pairs, s, L, ensemble)
        views = unstitch_views(tr["video"][pairs[:, 0]], tuple(wc.cameras), wc.layout)
        for c in policy.cameras:
            imgs[c].append(resize_frames(views[c], policy.image_size))
        if pseudo_state == "idm" and tr.get("pred_states") is not None:
            st = np.array(tr["pred_states"], np.float32)
            st[pairs[:, 0] == 0] = tr["state0"]  # the init state's true proprioception
        else:
            st = np.broadcast_to(mean_state, (len(pairs), policy.state_dim)).copy()
        states.append(st)
        chunks.append(ch)
        if tr["instruction"] not in tasks:
            tasks.append(tr["instruction"])
        tidx.append(np.full(len(pairs), tasks.index(tr["instruction"]), np.int64))
    if not chunks:
        K, A = policy.chunk_size, policy.action_dim
        return PseudoSamples({c: np.zeros((0, *policy.image_size, 3), np.uint8) for c in policy.cameras},
                             np.zeros((0, policy.state_dim), np.float32), np.zeros((0, K, A), np.float32),
                             np.zeros(0, np.int64), [], 0.0)
    raw = torch.from_numpy(np.concatenate(chunks).astype(np.float32))
    n = norm.normalize("action", raw)
    clipped = float((n.abs() > 1.0 + 1e-6).float().mean())
    labels = norm.unnormalize("action", n.clamp(-1.0, 1.0)).float().numpy()
    return PseudoSamples({c: np.concatenate(v) for c, v in imgs.items()}, np.concatenate(states).astype(np.float32),
                         labels, np.concatenate(tidx), tasks, clipped)


def pseudo_stats(trajs: list[dict], samples: PseudoSamples, demos, idm: InverseDynamicsModel) -> dict:
    """Label statistics for ``metrics.json``: counts, per-dimension label mean/std next to the
    demonstrations', the share clipped to the action range, the IDM's disagreement between
    overlapping pairs, and (with a state head) its state error on the decoded first frame."""
    out: dict = {"trajectories": len(trajs), "frames": int(sum(len(t["video"]) for t in trajs)),
                 "pairs": int(sum(len(t["pairs"]) for t in trajs)), "samples": len(samples),
                 "clipped_fraction": samples.clipped_fraction}
    if len(samples):
        a = samples.chunks.reshape(-1, samples.chunks.shape[-1])
        out["label_mean"] = a.mean(0).tolist()
        out["label_std"] = a.std(0).tolist()
    out["demo_action_mean"] = demos.actions.mean(0).tolist()
    out["demo_action_std"] = demos.actions.std(0).tolist()
    multi = [t["spread"][t["count"] > 1] for t in trajs if (t["count"] > 1).any()]
    if multi:
        sp = np.concatenate(multi)
        out["ensemble_spread_mean"] = float(sp.mean())
        out["ensemble_spread_over_demo_std"] = float((sp / np.maximum(demos.actions.std(0), 1e-6)).mean())
    st = [(t["pred_states"][0], t["state0"]) for t in trajs if t.get("pred_states") is not None and len(t["pairs"])]
    if st:
        norm = idm.normalizer
        est = norm.normalize("observation.state", torch.from_numpy(np.stack([e for e, _ in st]).astype(np.float32)))
        true = norm.normalize("observation.state", torch.from_numpy(np.stack([t for _, t in st]).astype(np.float32)))
        out["state_mse_frame0"] = float(((est - true) ** 2).mean())
    return out


def plot_strip(tr: dict, wc, path: Path, n_frames: int, action_names: list[str] | None = None) -> None:
    """A few imagined frames of one trajectory with the labels of the chunk each one starts,
    above the per-step labels (mean over overlapping IDM predictions ± their spread)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from world2act.utils.io import atomic_path

    pairs, chunks = tr["pairs"], tr["pred_chunks"]
    if len(pairs) == 0:
        return
    s = int(wc.frame_stride)
    show = np.unique(np.linspace(0, len(pairs) - 1, min(n_frames, len(pairs))).round().astype(int))
    A = chunks.shape[-1]
    names = action_names or [f"a{i}" for i in range(A)]
    fig = plt.figure(figsize=(2.6 * len(show), 5.2))
    gs = fig.add_gridspec(2, len(show), height_ratios=[1.3, 1])
    for k, p in enumerate(show):
        ax = fig.add_subplot(gs[0, k])
        ax.imshow(tr["video"][pairs[p, 0]])
        ax.set_axis_off()
        m = chunks[p].mean(0)
        txt = "\n".join(" ".join(f"{names[d]}={m[d]:+.2f}" for d in range(i, min(A, i + 2))) for i in range(0, A, 2))
        ax.set_title(f"frame {pairs[p, 0]} (step {s * pairs[p, 0]})\n{txt}", fontsize=7)
    ax = fig.add_subplot(gs[1, :])
    L = len(tr["spread"])
    acts, _, _ = ensemble_labels(chunks, pairs[:, 0], s, L)
    t = np.arange(L)
    for d in range(A):
        ax.plot(t, acts[:, d], lw=1, label=names[d])
        ax.fill_between(t, acts[:, d] - tr["spread"][:, d], acts[:, d] + tr["spread"][:, d], alpha=0.15)
    for p in show:
        ax.axvline(s * pairs[p, 0], color="k", lw=0.5, ls=":")
    ax.set(xlabel="control step", ylabel="IDM label", title=f"{tr['instruction']} (seed {tr['seed']})")
    ax.legend(fontsize=6, ncol=min(A, 8), loc="upper right")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)


# ---------------------------------------------------------------------------- fine-tuning
def finetune(policy, demos, pseudo: PseudoSamples, fcfg: FinetuneConfig, *, seed: int, device: str = "cpu") -> tuple:
    """Fine-tune a copy of ``policy``'s network on real + pseudo-labelled chunks with the base
    policy's own training step; returns (FlowPolicy with the EMA weights, metrics, curve)."""
    from world2act.utils.progress import progress_bar

    from world2act.policies.flow_policy import FlowPolicy, FlowPolicyNet
    from world2act.policies.train_base import _lr_at, batch_loss, optimizer_step, sample_batch
    from world2act.utils.training import ModuleEMA

    started = time.time()
    pcfg = policy.config
    cams = tuple(policy.cameras)
    K = int(policy.chunk_size)
    net = FlowPolicyNet(pcfg).to(device)
    net.load_state_dict(policy.net.state_dict())
    ema = FlowPolicyNet(pcfg).to(device)
    ema.load_state_dict(policy.net.state_dict())
    ema.requires_grad_(False)
    ema = ModuleEMA(net, ema, fcfg.ema_decay)
    opt = torch.optim.AdamW(net.parameters(), lr=fcfg.lr, weight_decay=fcfg.weight_decay, betas=(0.9, 0.95))
    real = dataclasses.replace(demos, images={c: resize_frames(demos.images[c], policy.image_size) for c in cams})
    tasks = list(dict.fromkeys(list(real.tasks) + list(pseudo.tasks)))
    lang_all = policy.embed_tasks(tasks)
    real_map = torch.tensor([tasks.index(t) for t in real.tasks])
    pseudo_map = torch.tensor([tasks.index(t) for t in pseudo.tasks] or [0])
    n_p = int(round(fcfg.batch_size * fcfg.pseudo_fraction)) if len(pseudo) else 0
    n_r = fcfg.batch_size - n_p
    curve: list[dict] = []
    loss_ema = None
    net.train()
    for step in progress_bar(range(fcfg.steps), desc="dreamgen fine-tune", unit="step", leave=False):
        rng = np.random.default_rng([seed, 11, step])
        gen = torch.Generator().manual_seed(int(rng.integers(2**62)))
        rb = sample_batch(real, rng.integers(0, len(real), n_r), K)
        pi = rng.integers(0, max(1, len(pseudo)), n_p)
        batch = {"images": {c: np.concatenate([rb["images"][c], pseudo.images[c][pi]]) for c in cams},
                 "states": np.concatenate([rb["states"], pseudo.states[pi]]).astype(np.float32),
                 "actions": np.concatenate([rb["actions"], pseudo.chunks[pi]]).astype(np.float32),
                 "mask": np.concatenate([rb["mask"], np.ones((n_p, K), bool)])}
        lang = lang_all[torch.cat([real_map[torch.from_numpy(rb["task_index"])],
                                   pseudo_map[torch.from_numpy(pseudo.task_index[pi])]])]
        for g in opt.param_groups:
            g["lr"] = _lr_at(step, fcfg)
        loss = batch_loss(net, policy.normalizer, batch, lang, cameras=cams, image_size=pcfg.image_size,
                          augment_shift=fcfg.augment_shift, generator=gen, device=device)
        optimizer_step(net, ema, opt, loss)
        lv = float(loss.detach())
        loss_ema = lv if loss_ema is None else 0.98 * loss_ema + 0.02 * lv
        if (step + 1) % 25 == 0 or step + 1 == fcfg.steps:
            curve.append({"step": step + 1, "loss": loss_ema, "lr": _lr_at(step, fcfg)})
    metrics = {"steps": fcfg.steps, "final_loss": loss_ema, "batch_real": n_r, "batch_pseudo": n_p,
               "real_frames": len(real), "pseudo_samples": len(pseudo),
               "train_minutes": round((time.time() - started) / 60, 3)}
    return FlowPolicy(pcfg, policy.normalizer, ema.shadow, device=device), metrics, curve


# ---------------------------------------------------------------------------- run
def run(cfg: DreamGenConfig, out: str | Path, *, device: str = "cpu", resume: bool = False,
        overwrite: bool = False) -> dict:
    """Train the IDM, pseudo-label the imagined trajectories, fine-tune the base; see the module docstring.

    Returns:
        the metrics written to ``metrics.json``.

    Raises:
        World2ActError: a missing input, components that disagree (action/state dims, chunk
            size vs frame stride, cameras, benchmark), a benchmark without post-training seeds
            or an instruction without skills; all checked before ``out`` is touched.
    """
    from world2act.policies.train_base import load_demos
    from world2act.utils.io import prepare_out_dir, write_json
    from world2act.utils.manifest import config_hash, write_manifest
    from world2act.utils.seeding import seed_everything

    started = time.time()
    pool, task_ids, policy, wm_dir, wc, wm = _check_inputs(cfg, device)
    out = prepare_out_dir(out, resume=resume, overwrite=overwrite)
    seed_everything(cfg.seed)

    # ---- 1. IDM on the demonstrations
    timings: dict[str, float] = {}
    t_load = time.time()
    cams = tuple(dict.fromkeys(list(policy.cameras) + list(wc.cameras)))
    demos = load_demos(cfg.dataset, cams, cfg.episodes_per_task)
    timings["load_demos"] = round(time.time() - t_load, 2)
    idm, idm_metrics, idm_key = _idm_phase(cfg, out, policy, wc, demos, timings, resume, device)
    # ---- 2. imagine + pseudo-label (cached per trajectory)
    trajs, samples, stats = _pseudo_phase(cfg, out, wm, wm_dir, wc, idm, idm_key, pool, policy, cams, demos,
                                          timings, device)
    # ---- 3. fine-tune the base on real + pseudo-labelled chunks
    ft_metrics = _finetune_phase(cfg, out, policy, demos, samples, trajs, idm_key, timings, started, resume, device)

    metrics = {"idm": idm_metrics, "pseudo": stats, "finetune": ft_metrics,
               "budget": {"tasks": [str(x) for x in task_ids], "init_states_per_task": cfg.init_states_per_task,
                          "imagined_trajectories": len(trajs), "imagine_steps": cfg.imagine_steps},
               "idm_key": idm_key, "config_hash": config_hash(cfg), "timings_s": timings,
               "wall_s": round(time.time() - started, 1)}
    write_json(out / "metrics.json", metrics)
    write_manifest(out, stage="dreamgen", config=cfg,
                   inputs={"policy": cfg.policy, "wm": cfg.wm, "dataset": cfg.dataset}, metrics=metrics, started=started)
    return metrics


def _check_inputs(cfg: DreamGenConfig, device: str):
    """Phase 0, the cheap checks: required inputs, post-training seeds, a flow base policy, the
    world-model folder and config, the datasets, component agreement and decomposable
    instructions. Nothing heavy is loaded (bar a diffusers world model, whose config comes with
    its weights) and ``out`` is untouched. Returns ``(pool, task_ids, policy, wm_dir, wc, wm)``,
    ``wm`` being ``None`` unless it had to be loaded here."""
    from world2act.data import LeRobotDataset
    from world2act.envs import task_info
    from world2act.policies.flow_policy import FlowPolicy
    from world2act.policies.io import load_policy, read_policy_config
    from world2act.posttrain.loop import decompose_instruction
    from world2act.worldmodel import WorldModel

    for name in ("policy", "wm", "dataset"):
        if not getattr(cfg, name):
            raise World2ActError(f"dreamgen: --{name} is required")
    pool = check_posttrain_seeds(cfg.benchmark, cfg.tasks, cfg.init_states_per_task)
    task_ids = list(pool)
    ptype = read_policy_config(Path(cfg.policy)).get("type")
    if ptype != "flow":
        raise World2ActError(f"dreamgen: --policy {cfg.policy} is a {ptype!r} policy; DreamGen fine-tunes the weights "
                             "of the built-in flow policy (world2act train-base)")
    policy = load_policy(cfg.policy, benchmark=cfg.benchmark, device=device)
    assert isinstance(policy, FlowPolicy)
    wm_dir = Path(cfg.wm)
    if not wm_dir.is_dir():
        raise World2ActError(f"--wm {wm_dir}: world-model folder not found")
    from world2act.worldmodel.model import read_config

    wc = read_config(wm_dir)
    wm = None
    if wc is None:  # a diffusers folder: the config comes with the weights
        wm = WorldModel.load(wm_dir, device=device)
        wc = wm.config
    paths = [p.strip() for p in cfg.dataset.split(",") if p.strip()]
    for p in paths:
        if not Path(p).is_dir():
            raise World2ActError(f"--dataset {p}: no such folder")
    spec = LeRobotDataset(paths[0]).spec
    check_components(cfg, policy, wc, spec)
    for t in task_ids:
        instr = task_info(cfg.benchmark, t).instruction
        try:
            decompose_instruction(instr)
        except World2ActError as e:
            raise World2ActError(f"dreamgen: task {t}'s instruction {instr!r} cannot be decomposed into skills ({e})") from None
    return pool, task_ids, policy, wm_dir, wc, wm


def _idm_phase(cfg: DreamGenConfig, out: Path, policy, wc, demos, timings: dict, resume: bool, device: str):
    """Phase 1: the inverse-dynamics model on the demonstrations, reused from ``out/idm`` when its
    manifest matches (``resume``), else trained and recorded. Returns ``(idm, idm_metrics, idm_key)``."""
    from world2act.utils.manifest import manifest_matches, write_manifest

    K = int(policy.chunk_size)
    t = cfg.idm
    idm_cfg = IDMConfig(action_dim=policy.action_dim, state_dim=policy.state_dim, chunk_size=K,
                        cameras=tuple(wc.cameras), image_size=tuple(wc.image_size), channels=t.channels,
                        hidden=t.hidden, predict_state=t.predict_state)
    idm_record = {"idm": dataclasses.asdict(t), "model": dataclasses.asdict(idm_cfg), "dataset": cfg.dataset,
                  "episodes_per_task": cfg.episodes_per_task, "seed": cfg.seed}
    idm_dir = out / "idm"
    if resume and manifest_matches(idm_dir, idm_record) and (idm_dir / "model.safetensors").is_file():
        idm = InverseDynamicsModel.load(idm_dir, device=device)
        from world2act.utils.io import read_json

        idm_metrics = read_json(idm_dir / "metrics.json")
        log.info("dreamgen: IDM in %s is up to date, reused", idm_dir)
    else:
        t0 = time.time()
        idm, idm_metrics = train_idm(t, demos, idm_cfg, idm_dir, seed=cfg.seed, device=device)
        write_manifest(idm_dir, stage="dreamgen-idm", config=idm_record, inputs={"dataset": cfg.dataset},
                       metrics=idm_metrics, started=t0)
        timings["idm"] = round(time.time() - t0, 2)
    idm_key = _file_hash(idm_dir / "model.safetensors")
    log.info("dreamgen: IDM held-out action MSE %.4f vs mean-action %.4f (normalised units)",
             idm_metrics.get("heldout_action_mse", float("nan")), idm_metrics.get("mean_action_mse", float("nan")))
    return idm, idm_metrics, idm_key


def _pseudo_phase(cfg: DreamGenConfig, out: Path, wm, wm_dir: Path, wc, idm, idm_key: str, pool, policy, cams,
                  demos, timings: dict, device: str):
    """Phase 2: imagine the post-training rollouts and pseudo-label them with the IDM (cached per
    trajectory under ``out/pseudo``), assemble the training samples, plot a strip and write
    ``pseudo/labels.json``. Returns ``(trajs, samples, stats)``."""
    from world2act.utils.io import write_json
    from world2act.worldmodel import WorldModel

    t0 = time.time()
    if wm is None:
        wm = WorldModel.load(wm_dir, device=device)
    wm.eval()
    trajs = build_pseudo(cfg, wm, wc, idm, idm_key, pool, out / "pseudo", camera_size=tuple(policy.image_size),
                         cameras=cams)
    timings["imagine_and_label"] = round(time.time() - t0, 2)
    samples = assemble_samples(trajs, wc, policy, ensemble=cfg.ensemble, pseudo_state=cfg.pseudo_state)
    stats = pseudo_stats(trajs, samples, demos, idm)
    if trajs:
        from world2act.data.lerobot import default_names

        plot_strip(trajs[0], wc, out / "pseudo" / "strip.png", cfg.strip_frames,
                   default_names(cfg.benchmark, "action", policy.action_dim))
    write_json(out / "pseudo" / "labels.json", {
        "stats": stats,
        "trajectories": [{"task": str(tr["task"]), "seed": tr["seed"], "instruction": tr["instruction"],
                          "prompts": tr["prompts"], "frames": len(tr["video"]), "pairs": len(tr["pairs"]),
                          "label_mean": tr["pred_chunks"].reshape(-1, policy.action_dim).mean(0).tolist()
                          if len(tr["pairs"]) else None,
                          "file": f"{tr['task']}_{tr['seed']}.safetensors"} for tr in trajs]})
    if len(samples) == 0 and cfg.finetune.pseudo_fraction > 0:
        log.warning("dreamgen: the imagined videos are shorter than one chunk: no pseudo-labelled sample, "
                    "fine-tuning on the demonstrations only")
    return trajs, samples, stats


def _finetune_phase(cfg: DreamGenConfig, out: Path, policy, demos, samples, trajs, idm_key: str, timings: dict,
                    started: float, resume: bool, device: str) -> dict:
    """Phase 3: fine-tune the base on real + pseudo-labelled chunks into ``out/policy`` (reused
    when its manifest matches and ``resume``), writing ``curve.json``. Returns its metrics."""
    from world2act.utils.io import write_json
    from world2act.utils.manifest import manifest_matches, write_manifest

    pol_dir = out / "policy"
    pol_record = {"config": dataclasses.asdict(cfg), "idm_key": idm_key,
                  "pseudo": [f"{tr['task']}_{tr['seed']}" for tr in trajs]}
    if resume and manifest_matches(pol_dir, pol_record) and (pol_dir / "model.safetensors").is_file():
        from world2act.utils.io import read_json

        ft_metrics = read_json(pol_dir / "manifest.json").get("metrics", {})
        log.info("dreamgen: fine-tuned policy in %s is up to date, reused", pol_dir)
    else:
        t0 = time.time()
        tuned, ft_metrics, curve = finetune(policy, demos, samples, cfg.finetune, seed=cfg.seed, device=device)
        timings["finetune"] = round(time.time() - t0, 2)
        tuned.save(pol_dir, extra_config={"method": "dreamgen", "base": str(cfg.policy), "wm": str(cfg.wm),
                                          "dataset": cfg.dataset, **ft_metrics})
        write_json(out / "curve.json", curve)
        write_manifest(pol_dir, stage="dreamgen-policy", config=pol_record, metrics=ft_metrics, started=started)
    return ft_metrics


# ---------------------------------------------------------------------------- CLI
Config, RUN_OPTIONS = DreamGenConfig, ("resume", "overwrite")


def main(cfg: DreamGenConfig, args) -> int:
    from world2act.utils.seeding import resolve_device, set_torch_threads

    set_torch_threads()
    m = run(cfg, args.out, device=resolve_device(args.device), resume=args.resume, overwrite=args.overwrite)
    i = m["idm"]
    print(f"dreamgen policy: {Path(args.out) / 'policy'}  (IDM held-out MSE {i.get('heldout_action_mse', float('nan')):.4f} "
          f"vs mean-action {i.get('mean_action_mse', float('nan')):.4f}; {m['pseudo']['samples']} pseudo-labelled "
          f"samples from {m['pseudo']['trajectories']} imagined trajectories)")
    return 0
