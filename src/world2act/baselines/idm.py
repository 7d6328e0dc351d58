"""Inverse dynamics model (IDM) for the DreamGen baseline (Jang et al. 2025).

Given the observation images at the start of an action chunk and ``K`` control steps later,
the IDM predicts the ``K`` actions executed in between (and, optionally, the proprioceptive
state at the first frame). It is trained on the demonstrations and then labels the world
model's imagined videos (:mod:`world2act.baselines.dreamgen`).

Network (small, our own): per camera, the two frames and their difference are stacked into
9 channels (``[a, b, b - a]``, each in [-1, 1]) and go through four stride-2 convolutions
(GroupNorm, GELU) down to a ``H/16 × W/16`` grid, flattened into one feature vector (spatial
layout kept: where the gripper moved matters); the cameras' vectors are concatenated and an
MLP trunk feeds two linear heads: the action chunk ``[K, A]`` in the normaliser's min/max
units ([-1, 1] over the demonstrations' range) and the state at the first frame (mean/std
units). Loss: MSE on both (state weighted by ``state_loss_weight``); a regression head rather
than DreamGen's diffusion head (see docs/baselines.md).

Folder (``world2act dreamgen --out DIR`` writes ``DIR/idm/``): ``config.json``
(:class:`IDMConfig` plus a ``training`` record), ``model.safetensors``,
``normalizer.safetensors`` (``action`` min/max, ``observation.state`` mean/std),
``metrics.json``, ``curve.json``, ``manifest.json``.
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
from torch import nn

from world2act import World2ActError
from world2act.envs.registry import benchmark_spec
from world2act.utils.config import from_dict as config_from_dict, opt

log = logging.getLogger(__name__)

TYPE = "world2act-idm"
CONFIG_FILE = "config.json"
MODEL_FILE = "model.safetensors"
NORMALIZER_FILE = "normalizer.safetensors"


@dataclasses.dataclass
class IDMConfig:
    """Shapes and sizes of the inverse dynamics model (saved as ``config.json``).

    Attributes:
        action_dim: ``A``, actions per control step.
        state_dim: ``S``, size of ``observation.state`` (the state head's output).
        chunk_size: ``K``, control steps between the two frames = actions predicted.
        cameras: views read, in order (for DreamGen: the world model's cameras, the views its
            imagination shows).
        image_size: ``(H, W)`` of each view (multiples of 16; for DreamGen the world model's
            per-view size, so demonstrations are seen at the resolution imagination has).
        channels: widths of the four stride-2 convolutions.
        hidden: width of the per-camera projection and of the MLP trunk.
        predict_state: also estimate ``observation.state`` at the first frame.
    """

    action_dim: int
    state_dim: int
    chunk_size: int
    cameras: tuple[str, ...] = benchmark_spec("libero_object").default_cameras  # ("agentview", "wrist")
    image_size: tuple[int, int] = (64, 64)
    channels: tuple[int, ...] = (16, 32, 64, 128)
    hidden: int = 256
    predict_state: bool = True
    type: str = TYPE

    def __post_init__(self) -> None:
        self.cameras = tuple(self.cameras)
        self.image_size = tuple(int(v) for v in self.image_size)  # type: ignore[assignment]
        self.channels = tuple(int(c) for c in self.channels)
        for name in ("action_dim", "state_dim", "chunk_size", "hidden"):
            if int(getattr(self, name)) <= 0:
                raise World2ActError(f"IDM config: {name} must be positive, got {getattr(self, name)}")
        if len(self.channels) != 4 or any(c <= 0 or c % 8 for c in self.channels):
            raise World2ActError(f"IDM config: channels must be 4 multiples of 8, got {list(self.channels)}")
        if len(self.image_size) != 2 or any(s < 16 or s % 16 for s in self.image_size):
            raise World2ActError(f"IDM config: image_size {self.image_size} must be two multiples of 16")
        if not self.cameras:
            raise World2ActError("IDM config: at least one camera is needed")

    @classmethod
    def from_dict(cls, d: dict, where: str = CONFIG_FILE) -> "IDMConfig":
        """Build from ``config.json``'s dict (types coerced: JSON lists become tuples).

        Raises:
            World2ActError: an unknown key (listing the valid ones) or a bad value, naming ``where``.
        """
        return config_from_dict(cls, d, where)


@dataclasses.dataclass
class IDMTrainConfig:
    """How the IDM is trained on the demonstrations (``world2act dreamgen`` key ``idm``).

    Attributes:
        steps / batch_size / lr / weight_decay / warmup_steps: AdamW, linear warm-up then
            cosine decay to 10 % of ``lr`` (the base policy's schedule).
        augment_shift: random shift of both frames by the same offset, in pixels (0 = off).
        state_loss_weight: weight of the state head's MSE beside the actions'.
        heldout_fraction: share of demonstration episodes held out for the reported MSE
            (at least one when there are two or more episodes; 0 = none).
        max_eval_pairs: at most this many held-out frame pairs are scored.
        channels / hidden / predict_state: network sizes (:class:`IDMConfig`).
    """

    steps: int = opt(1500, "IDM optimiser steps (default 1500)", flag="--idm-steps")
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 1e-4
    warmup_steps: int = 50
    augment_shift: int = 2
    state_loss_weight: float = 0.5
    heldout_fraction: float = 0.1
    max_eval_pairs: int = 2048
    channels: tuple[int, ...] = (16, 32, 64, 128)
    hidden: int = 256
    predict_state: bool = True

    def __post_init__(self) -> None:
        self.channels = tuple(int(c) for c in self.channels)
        for name in ("steps", "batch_size", "max_eval_pairs"):
            if int(getattr(self, name)) <= 0:
                raise World2ActError(f"dreamgen: idm.{name} must be positive, got {getattr(self, name)}")
        if self.lr <= 0 or self.warmup_steps < 0 or self.augment_shift < 0 or self.state_loss_weight < 0:
            raise World2ActError("dreamgen: idm.lr must be > 0 and idm.warmup_steps, augment_shift, "
                                 "state_loss_weight ≥ 0")
        if not 0 <= self.heldout_fraction < 1:
            raise World2ActError(f"dreamgen: idm.heldout_fraction must be in [0, 1), got {self.heldout_fraction}")


# ---------------------------------------------------------------------------- network
class PairEncoder(nn.Module):
    """Two frames of one camera ``[B, 3, H, W]`` each (in [-1, 1]) → a feature ``[B, hidden]``."""

    def __init__(self, channels: tuple[int, ...], image_size: tuple[int, int], hidden: int):
        super().__init__()
        chans = [9, *channels]
        layers: list[nn.Module] = []
        for i in range(4):
            k = 5 if i == 0 else 3
            layers += [nn.Conv2d(chans[i], chans[i + 1], k, stride=2, padding=k // 2),
                       nn.GroupNorm(8, chans[i + 1]), nn.GELU()]
        self.conv = nn.Sequential(*layers)
        h, w = image_size[0] // 16, image_size[1] // 16
        self.proj = nn.Sequential(nn.Linear(channels[-1] * h * w, hidden), nn.GELU())

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return self.proj(self.conv(torch.cat([a, b, b - a], 1)).flatten(1))


class IDMNet(nn.Module):
    """The network only (no files, no normalisation): see the module docstring."""

    def __init__(self, cfg: IDMConfig):
        super().__init__()
        self.cfg = cfg
        self.cams = nn.ModuleList([PairEncoder(cfg.channels, cfg.image_size, cfg.hidden) for _ in cfg.cameras])
        self.trunk = nn.Sequential(nn.Linear(cfg.hidden * len(cfg.cameras), cfg.hidden), nn.GELU(),
                                   nn.Linear(cfg.hidden, cfg.hidden), nn.GELU())
        self.action_head = nn.Linear(cfg.hidden, cfg.chunk_size * cfg.action_dim)
        self.state_head = nn.Linear(cfg.hidden, cfg.state_dim) if cfg.predict_state else None

    def forward(self, first: list[torch.Tensor], last: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Normalised chunk ``[B, K, A]`` and state ``[B, S]`` (None without a state head) from
        the first and last frames, one ``[B, 3, H, W]`` tensor per camera in ``cfg.cameras`` order."""
        h = self.trunk(torch.cat([enc(a, b) for enc, a, b in zip(self.cams, first, last)], 1))
        chunk = self.action_head(h).view(-1, self.cfg.chunk_size, self.cfg.action_dim)
        return chunk, (self.state_head(h) if self.state_head is not None else None)


def resize_frames(frames: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """uint8 ``[N, H, W, 3]`` → uint8 ``[N, h, w, 3]`` (bilinear, antialiased; unchanged if equal)."""
    frames = np.asarray(frames)
    if tuple(frames.shape[1:3]) == tuple(size):
        return frames
    out = []
    for i in range(0, len(frames), 256):
        x = torch.from_numpy(np.ascontiguousarray(frames[i:i + 256])).permute(0, 3, 1, 2).float()
        x = F.interpolate(x, size=tuple(size), mode="bilinear", antialias=True, align_corners=False)
        out.append(x.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy())
    return np.concatenate(out) if out else np.zeros((0, *size, 3), np.uint8)


# ---------------------------------------------------------------------------- model + files
class InverseDynamicsModel:
    """A trained IDM: config, normaliser and network.

    Args:
        config: :class:`IDMConfig`.
        normalizer: :class:`~world2act.policies.normalizer.Normalizer` with ``action`` and
            ``observation.state``.
        net: the network (a fresh one when None).
    """

    def __init__(self, config: IDMConfig, normalizer, net: IDMNet | None = None, device: str = "cpu"):
        self.config = config
        self.normalizer = normalizer
        self.device = torch.device(device)
        self.net = (net or IDMNet(config)).to(self.device).eval()

    def _tensors(self, frames: dict[str, np.ndarray]) -> list[torch.Tensor]:
        from world2act.policies.flow_policy import images_to_tensor

        missing = [c for c in self.config.cameras if c not in frames]
        if missing:
            raise World2ActError(f"IDM: frames lack camera(s) {missing}; it reads {list(self.config.cameras)}")
        return [images_to_tensor(frames[c], self.config.image_size, self.device) for c in self.config.cameras]

    @torch.no_grad()
    def predict(self, first: dict[str, np.ndarray], last: dict[str, np.ndarray],
                batch_size: int = 64) -> tuple[np.ndarray, np.ndarray | None]:
        """Action chunks between ``first`` and ``last`` (camera -> uint8 ``[B, H, W, 3]``, resized
        to the IDM's size if needed).

        Returns:
            (chunks ``[B, K, A]`` float32 in dataset units, states ``[B, S]`` float32 in dataset
            units at the first frame, or None without a state head).
        """
        self.net.eval()
        n = len(next(iter(first.values())))
        chunks, states = [], []
        for i in range(0, n, batch_size):
            a = self._tensors({c: v[i:i + batch_size] for c, v in first.items()})
            b = self._tensors({c: v[i:i + batch_size] for c, v in last.items()})
            ch, st = self.net(a, b)
            chunks.append(self.normalizer.unnormalize("action", ch).float().cpu().numpy())
            if st is not None:
                states.append(self.normalizer.unnormalize("observation.state", st).float().cpu().numpy())
        K, A = self.config.chunk_size, self.config.action_dim
        ch_np = np.concatenate(chunks) if chunks else np.zeros((0, K, A), np.float32)
        st_np = (np.concatenate(states) if states else np.zeros((0, self.config.state_dim), np.float32)) \
            if self.config.predict_state else None
        return ch_np, st_np

    def save(self, folder: str | Path, extra_config: dict | None = None) -> Path:
        """Write ``config.json``, ``model.safetensors`` and ``normalizer.safetensors`` atomically."""
        from safetensors.torch import save_file

        from world2act.utils.io import atomic_path, write_json

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        with atomic_path(folder / MODEL_FILE) as tmp:
            save_file({k: v.detach().cpu().contiguous() for k, v in self.net.state_dict().items()}, str(tmp),
                      metadata={"format": TYPE})
        self.normalizer.save(folder / NORMALIZER_FILE)
        cfg = dataclasses.asdict(self.config)
        if extra_config:
            cfg["training"] = extra_config
        write_json(folder / CONFIG_FILE, cfg)
        return folder

    @classmethod
    def load(cls, folder: str | Path, device: str = "cpu") -> "InverseDynamicsModel":
        """Load a folder written by :meth:`save`.

        Raises:
            World2ActError: a missing file, another type, or weights that do not fit the config.
        """
        from safetensors.torch import load_file

        from world2act.policies.normalizer import Normalizer
        from world2act.utils.io import read_json

        folder = Path(folder)
        raw = dict(read_json(folder / CONFIG_FILE))
        raw.pop("training", None)
        if raw.get("type") != TYPE:
            raise World2ActError(f"{folder / CONFIG_FILE}: type {raw.get('type')!r} is not {TYPE!r}")
        cfg = IDMConfig.from_dict(raw, str(folder / CONFIG_FILE))
        for f in (MODEL_FILE, NORMALIZER_FILE):
            if not (folder / f).is_file():
                raise World2ActError(f"IDM folder {folder}: missing {f}")
        net = IDMNet(cfg)
        try:
            net.load_state_dict(load_file(str(folder / MODEL_FILE)))
        except (RuntimeError, OSError) as e:
            raise World2ActError(f"{folder / MODEL_FILE}: weights do not fit {folder / CONFIG_FILE} "
                                 f"({str(e).splitlines()[0]})") from None
        return cls(cfg, Normalizer.load(folder / NORMALIZER_FILE), net, device=device)


# ---------------------------------------------------------------------------- training
def episode_bounds(ep_end: np.ndarray) -> list[tuple[int, int]]:
    """``[(start, end)]`` of each episode of a :class:`~world2act.policies.train_base.Demos`
    from its per-frame ``ep_end`` (episodes are stored back to back)."""
    ends = sorted(set(int(e) for e in np.asarray(ep_end)))
    return list(zip([0] + ends[:-1], ends))


def pair_starts(bounds: list[tuple[int, int]], K: int) -> np.ndarray:
    """Rows ``t`` whose frame ``t + K`` lies in the same episode (``t + K ≤ end − 1``): the
    frame pairs ``(t, t + K)`` with the ``K`` actions ``t .. t + K − 1`` between them."""
    parts = [np.arange(s, e - K) for s, e in bounds if e - K > s]
    return np.concatenate(parts).astype(np.int64) if parts else np.zeros(0, np.int64)


def split_episodes(n: int, fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """(train, held-out) episode indices: ``ceil(fraction · n)`` held out (at least 1 when
    ``n ≥ 2`` and ``fraction > 0``; never all), drawn with ``seed``."""
    held_n = min(n - 1, max(1, math.ceil(fraction * n))) if fraction > 0 and n >= 2 else 0
    perm = np.random.default_rng(seed).permutation(n)
    held = sorted(int(i) for i in perm[:held_n])
    return [i for i in range(n) if i not in held], held


def train_idm(tcfg: IDMTrainConfig, demos, idm_cfg: IDMConfig, out: str | Path, *, seed: int = 0,
              device: str = "cpu") -> tuple[InverseDynamicsModel, dict]:
    """Train an IDM on demonstration frame pairs and write its folder to ``out``.

    Args:
        tcfg: training settings. demos: a :class:`~world2act.policies.train_base.Demos`
            holding every camera of ``idm_cfg``. idm_cfg: the network to build.

    Returns:
        (the model, metrics): ``heldout_action_mse`` and ``mean_action_mse`` (the training
        chunks' per-step mean as the prediction) in normalised units ([-1, 1] over the demos'
        range) and in dataset units, their ratio, the state head's MSE against the mean state,
        pair and episode counts, steps, minutes.

    Raises:
        World2ActError: the demos lack a camera or have no episode longer than ``K`` steps.
    """
    from world2act.policies.normalizer import Normalizer
    from world2act.utils.io import write_json

    started = time.time()
    K = idm_cfg.chunk_size
    missing = [c for c in idm_cfg.cameras if c not in demos.images]
    if missing:
        raise World2ActError(f"IDM: the demonstrations lack camera(s) {missing}")
    bounds = episode_bounds(demos.ep_end)
    train_eps, held_eps = split_episodes(len(bounds), tcfg.heldout_fraction, seed)
    train_starts = pair_starts([bounds[i] for i in train_eps], K)
    held_starts = pair_starts([bounds[i] for i in held_eps], K)
    if len(train_starts) == 0:
        raise World2ActError(f"IDM: no training demonstration is longer than one chunk ({K} steps + 1 frame)")
    imgs = {c: resize_frames(demos.images[c], idm_cfg.image_size) for c in idm_cfg.cameras}
    rows = np.unique((train_starts[:, None] + np.arange(K)[None]).ravel())  # frames the IDM trains on
    normalizer = Normalizer.fit_arrays({"observation.state": demos.states[rows], "action": demos.actions[rows]})
    torch.manual_seed(seed)
    net = IDMNet(idm_cfg).to(device)
    curve, loss_ema = _train_idm_net(tcfg, net, idm_cfg, imgs, normalizer, demos, train_starts, seed, device)
    model = InverseDynamicsModel(idm_cfg, normalizer, net, device=device)

    # ---- held-out score against the mean-action baseline
    metrics: dict = {"train_episodes": len(train_eps), "heldout_episodes": len(held_eps),
                     "heldout_episode_ids": held_eps, "train_pairs": int(len(train_starts)),
                     "heldout_pairs": int(len(held_starts)), "steps": tcfg.steps, "final_loss": loss_ema}
    if len(held_starts):
        _heldout_metrics(metrics, tcfg, model, idm_cfg, imgs, normalizer, demos, train_starts, held_starts, seed)
    else:
        log.warning("IDM: no held-out episode (fewer than 2 demonstrations or heldout_fraction 0): no held-out MSE")
    metrics["train_minutes"] = round((time.time() - started) / 60, 3)
    out = Path(out)
    model.save(out, extra_config={k: v for k, v in metrics.items() if not isinstance(v, list)})
    write_json(out / "metrics.json", metrics)
    write_json(out / "curve.json", curve)
    return model, metrics


def _idm_batch(idm_cfg: IDMConfig, imgs: dict, normalizer, demos, starts: np.ndarray, gen: torch.Generator | None,
               shift: int, device: str):
    """The frame pairs ``(t, t + K)`` of ``starts`` per camera (one random shift for both
    frames), the normalised action chunks between them and the normalised states at ``t``:
    ``(a, b, acts, state)``."""
    from world2act.policies.flow_policy import images_to_tensor
    from world2act.policies.train_base import random_shift

    K = idm_cfg.chunk_size
    a, b = [], []
    for c in idm_cfg.cameras:
        x = torch.cat([images_to_tensor(imgs[c][starts], idm_cfg.image_size, device),
                       images_to_tensor(imgs[c][starts + K], idm_cfg.image_size, device)], 1)
        if shift and gen is not None:
            x = random_shift(x, shift, gen)  # one offset for both frames: the motion is kept
        a.append(x[:, :3])
        b.append(x[:, 3:])
    acts = normalizer.normalize("action", torch.from_numpy(demos.actions[starts[:, None] + np.arange(K)[None]]))
    state = normalizer.normalize("observation.state", torch.from_numpy(demos.states[starts]))
    return a, b, acts.to(device), state.to(device)


def _train_idm_net(tcfg: IDMTrainConfig, net, idm_cfg: IDMConfig, imgs: dict, normalizer, demos,
                   train_starts: np.ndarray, seed: int, device: str) -> tuple[list[dict], float | None]:
    """The training steps (action MSE, plus the weighted state MSE when the net predicts the
    state); leaves ``net`` in eval mode. Returns ``(curve, loss_ema)``."""
    from world2act.policies.train_base import _lr_at
    from world2act.utils.progress import progress_bar

    opt = torch.optim.AdamW(net.parameters(), lr=tcfg.lr, weight_decay=tcfg.weight_decay, betas=(0.9, 0.95))
    curve: list[dict] = []
    loss_ema = None
    net.train()
    for step in progress_bar(range(tcfg.steps), desc="idm", unit="step", leave=False):
        rng = np.random.default_rng([seed, 7, step])
        gen = torch.Generator().manual_seed(int(rng.integers(2**62)))
        a, b, acts, state = _idm_batch(idm_cfg, imgs, normalizer, demos, rng.choice(train_starts, tcfg.batch_size),
                                       gen, tcfg.augment_shift, device)
        for g in opt.param_groups:
            g["lr"] = _lr_at(step, tcfg)
        pred, pst = net(a, b)
        loss = F.mse_loss(pred, acts)
        if pst is not None and tcfg.state_loss_weight > 0:
            loss = loss + tcfg.state_loss_weight * F.mse_loss(pst, state)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        opt.step()
        lv = float(loss.detach())
        loss_ema = lv if loss_ema is None else 0.98 * loss_ema + 0.02 * lv
        if (step + 1) % 25 == 0 or step + 1 == tcfg.steps:
            curve.append({"step": step + 1, "loss": loss_ema})
    net.eval()
    return curve, loss_ema


def _heldout_metrics(metrics: dict, tcfg: IDMTrainConfig, model, idm_cfg: IDMConfig, imgs: dict, normalizer, demos,
                     train_starts: np.ndarray, held_starts: np.ndarray, seed: int) -> None:
    """Add the held-out action (and state) MSE against the mean-action (mean-state) baseline to
    ``metrics``, normalised and in dataset units, on at most ``max_eval_pairs`` pairs."""
    K = idm_cfg.chunk_size
    if len(held_starts) > tcfg.max_eval_pairs:
        held_starts = np.sort(np.random.default_rng(seed).choice(held_starts, tcfg.max_eval_pairs, replace=False))
    chunks, states = model.predict({c: imgs[c][held_starts] for c in idm_cfg.cameras},
                                   {c: imgs[c][held_starts + K] for c in idm_cfg.cameras})
    truth = demos.actions[held_starts[:, None] + np.arange(K)[None]]
    train_truth = demos.actions[train_starts[:, None] + np.arange(K)[None]]
    mean_chunk = train_truth.mean(0, keepdims=True)
    nz = lambda x: normalizer.normalize("action", torch.from_numpy(np.array(x, np.float32))).numpy()  # noqa: E731
    mse = float(((nz(chunks) - nz(truth)) ** 2).mean())
    base = float(((nz(np.broadcast_to(mean_chunk, truth.shape)) - nz(truth)) ** 2).mean())
    metrics.update({
        "heldout_action_mse": mse, "mean_action_mse": base, "mse_ratio_to_mean": mse / base if base > 0 else float("nan"),
        "heldout_action_mse_dataset_units": float(((chunks - truth) ** 2).mean()),
        "mean_action_mse_dataset_units": float(((mean_chunk - truth) ** 2).mean()),
        "heldout_action_mse_per_dim": ((chunks - truth) ** 2).mean((0, 1)).tolist(),
        "mean_action_mse_per_dim": ((mean_chunk - truth) ** 2).mean((0, 1)).tolist(),
    })
    if states is not None:
        ns = lambda x: normalizer.normalize("observation.state", torch.from_numpy(np.array(x, np.float32))).numpy()  # noqa: E731
        st_truth = demos.states[held_starts]
        st_mean = demos.states[train_starts].mean(0, keepdims=True)
        metrics["heldout_state_mse"] = float(((ns(states) - ns(st_truth)) ** 2).mean())
        metrics["mean_state_mse"] = float(((ns(np.broadcast_to(st_mean, st_truth.shape)) - ns(st_truth)) ** 2).mean())
