"""The built-in base policy: a small language-conditioned visuomotor flow-matching policy.

In the spirit of GR00T's action expert (the paper's base VLA, Sec. 5.1): observations are
encoded once into a token sequence, and a flow-matching action head (a small transformer
decoder that cross-attends to those tokens) integrates a velocity field from Gaussian noise to
an action chunk of ``K`` steps (K = 8 by default, executed open loop).

Observation tokens (``d = d_model``):

* per camera (agent view and wrist): a 4-layer CNN (widths 16/32/64/d, stride 2 each, GroupNorm, GELU) turning a
  ``64×64`` image into a ``4×4`` grid of ``d``-dim tokens, plus a learned position/camera
  embedding — spatial tokens keep object positions for grasping;
* the instruction: all-MiniLM-L6-v2 pooled embedding (384-d, :mod:`world2act.text`) → 1 token;
* proprioception ``observation.state`` (normalised, mean/std) → MLP → 1 token;

then a transformer encoder. The action head: noisy chunk ``x_t`` ``[B, K, A]`` → linear +
chunk-position + flow-time embedding → transformer decoder (self-attention over the K action
tokens, cross-attention to the observation tokens) → velocity ``[B, K, A]``.

Flow matching (rectified flow): ``x_t = (1 - t)·x_0 + t·x_1`` with ``x_0 ~ N(0, I)`` and
``x_1`` the normalised action chunk (min/max → [-1, 1]); the loss is
``‖v_θ(x_t, t | o) - (x_1 - x_0)‖²``; sampling integrates ``dx/dt = v_θ`` with ``flow_steps``
Euler steps from ``t = 0`` to 1.
"""
from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from world2act import World2ActError
from world2act.envs.registry import benchmark_spec
from world2act.policies.base import Policy, check_obs
from world2act.policies.normalizer import FILENAME as NORMALIZER_FILE
from world2act.policies.normalizer import Normalizer
from world2act.utils.config import from_dict as config_from_dict

TYPE = "flow"
MODEL_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
TEXT_DIM = 384


@dataclasses.dataclass
class FlowPolicyConfig:
    """Shapes and sizes of the built-in flow-matching policy (saved as ``config.json``).

    Attributes:
        benchmark: benchmark the policy was trained on (e.g. ``"libero_object"``).
        action_dim: ``A``. state_dim: ``S``.
        chunk_size: ``K`` actions per chunk (default 8).
        cameras: cameras read, in order (default agent view + wrist).
        image_size: ``(H, W)`` input images (multiples of 16; 64×64 by default).
        d_model / n_heads / enc_layers / dec_layers / ffn_dim / dropout: transformer sizes.
        cnn_channels: widths of the first three conv layers (the fourth outputs ``d_model``).
        flow_steps: Euler steps at inference.
        text_model: name of the instruction encoder (for the record).
    """

    benchmark: str | None
    action_dim: int
    state_dim: int
    chunk_size: int = 8
    cameras: tuple[str, ...] = benchmark_spec("libero_object").default_cameras  # ("agentview", "wrist")
    image_size: tuple[int, int] = (64, 64)
    d_model: int = 128
    cnn_channels: tuple[int, ...] = (16, 32, 64)
    n_heads: int = 4
    enc_layers: int = 2
    dec_layers: int = 3
    ffn_dim: int = 256
    dropout: float = 0.0
    flow_steps: int = 10
    text_model: str = "all-MiniLM-L6-v2"
    type: str = TYPE

    def __post_init__(self) -> None:
        self.cameras = tuple(self.cameras)
        self.cnn_channels = tuple(int(c) for c in self.cnn_channels)
        if len(self.cnn_channels) != 3 or any(c <= 0 or c % 8 for c in self.cnn_channels):
            raise World2ActError(f"flow policy config: cnn_channels must be 3 multiples of 8, got {self.cnn_channels}")
        self.image_size = tuple(int(x) for x in self.image_size)  # type: ignore[assignment]
        for name in ("action_dim", "state_dim", "chunk_size", "d_model", "n_heads", "enc_layers",
                     "dec_layers", "ffn_dim", "flow_steps"):
            if int(getattr(self, name)) <= 0:
                raise World2ActError(f"flow policy config: {name} must be positive, got {getattr(self, name)}")
        if self.d_model % self.n_heads:
            raise World2ActError(f"flow policy config: d_model {self.d_model} not divisible by n_heads {self.n_heads}")
        if any(s % 16 or s < 16 for s in self.image_size):
            raise World2ActError(f"flow policy config: image_size {self.image_size} must be multiples of 16")
        if not self.cameras:
            raise World2ActError("flow policy config: at least one camera is needed")

    @classmethod
    def from_dict(cls, d: dict, where: str = CONFIG_FILE) -> "FlowPolicyConfig":
        """Build from ``config.json``'s dict (types coerced: JSON lists become tuples).

        Raises:
            World2ActError: an unknown key (listing the valid ones) or a bad value, naming ``where``.
        """
        return config_from_dict(cls, d, where)


# ---------------------------------------------------------------------------- network
class ConvEncoder(nn.Module):
    """uint8-derived image ``[N, 3, H, W]`` in [-1, 1] → tokens ``[N, (H/16)·(W/16), d]``."""

    def __init__(self, d: int, channels: tuple[int, ...] = (16, 32, 64)):
        super().__init__()
        chans = [3, *channels, d]
        layers: list[nn.Module] = []
        for i in range(4):
            k = 5 if i == 0 else 3
            layers += [nn.Conv2d(chans[i], chans[i + 1], k, stride=2, padding=k // 2),
                       nn.GroupNorm(8, chans[i + 1]), nn.GELU()]
        self.net = nn.Sequential(*layers)
        self.proj = nn.Linear(d, d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.net(x)  # [N, d, h, w]
        return self.proj(f.flatten(2).transpose(1, 2))


def time_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    """Sinusoidal embedding of flow time ``t`` ``[B]`` in [0, 1] → ``[B, dim]``."""
    half = dim // 2
    freqs = torch.exp(-math.log(1000.0) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    ang = (t.float() * 1000.0)[:, None] * freqs[None]
    return torch.cat([ang.sin(), ang.cos()], dim=-1)


class FlowPolicyNet(nn.Module):
    """The network only (no files, no normalisation): see the module docstring.

    Inputs are already normalised: images ``{cam: [B, 3, H, W]}`` in [-1, 1], state ``[B, S]``
    (mean/std), instruction embedding ``[B, 384]``; actions ``[B, K, A]`` in [-1, 1] units.
    """

    def __init__(self, cfg: FlowPolicyConfig):
        super().__init__()
        self.cfg = cfg
        d = cfg.d_model
        H, W = cfg.image_size
        n_img = (H // 16) * (W // 16)
        self.cams = nn.ModuleList([ConvEncoder(d, cfg.cnn_channels) for _ in cfg.cameras])
        self.img_pos = nn.Parameter(torch.randn(len(cfg.cameras), n_img, d) * 0.02)
        self.lang = nn.Sequential(nn.Linear(TEXT_DIM, d), nn.GELU(), nn.Linear(d, d))
        self.state = nn.Sequential(nn.Linear(cfg.state_dim, d), nn.GELU(), nn.Linear(d, d))
        self.type_emb = nn.Parameter(torch.randn(2, d) * 0.02)  # lang, state
        enc_layer = nn.TransformerEncoderLayer(d, cfg.n_heads, cfg.ffn_dim, cfg.dropout, activation="gelu",
                                               batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(enc_layer, cfg.enc_layers, enable_nested_tensor=False)
        self.enc_norm = nn.LayerNorm(d)
        self.act_in = nn.Linear(cfg.action_dim, d)
        self.act_pos = nn.Parameter(torch.randn(cfg.chunk_size, d) * 0.02)
        self.time = nn.Sequential(nn.Linear(d, d), nn.GELU(), nn.Linear(d, d))
        dec_layer = nn.TransformerDecoderLayer(d, cfg.n_heads, cfg.ffn_dim, cfg.dropout, activation="gelu",
                                               batch_first=True, norm_first=True)
        self.decoder = nn.TransformerDecoder(dec_layer, cfg.dec_layers)
        self.out_norm = nn.LayerNorm(d)
        self.act_out = nn.Linear(d, cfg.action_dim)
        nn.init.zeros_(self.act_out.weight)
        nn.init.zeros_(self.act_out.bias)

    def encode(self, images: list[torch.Tensor], state: torch.Tensor, lang: torch.Tensor) -> torch.Tensor:
        """Observation tokens ``[B, N, d]`` (images in ``cfg.cameras`` order, each ``[B, 3, H, W]``)."""
        toks = [enc(img) + self.img_pos[i] for i, (enc, img) in enumerate(zip(self.cams, images))]
        toks.append((self.lang(lang) + self.type_emb[0])[:, None])
        toks.append((self.state(state) + self.type_emb[1])[:, None])
        return self.enc_norm(self.encoder(torch.cat(toks, 1)))

    def velocity(self, x_t: torch.Tensor, t: torch.Tensor, memory: torch.Tensor) -> torch.Tensor:
        """Velocity ``[B, K, A]`` at noisy chunk ``x_t`` ``[B, K, A]``, flow time ``t`` ``[B]``."""
        te = self.time(time_embedding(t, self.cfg.d_model))[:, None]
        h = self.act_in(x_t) + self.act_pos[None] + te
        h = self.decoder(h, memory)
        return self.act_out(self.out_norm(h))

    def loss(self, memory: torch.Tensor, actions: torch.Tensor, *, mask: torch.Tensor | None = None,
             generator: torch.Generator | None = None) -> torch.Tensor:
        """Flow-matching loss for target chunks ``actions`` ``[B, K, A]`` (normalised).

        Args:
            mask: ``[B, K]`` bool, False for padded steps past the episode end (excluded).
        """
        B = actions.shape[0]
        x0 = torch.randn(actions.shape, generator=generator, device=actions.device)
        t = torch.rand(B, generator=generator, device=actions.device)
        x_t = (1 - t)[:, None, None] * x0 + t[:, None, None] * actions
        err = (self.velocity(x_t, t, memory) - (actions - x0)).pow(2).mean(-1)  # [B, K]
        if mask is None:
            return err.mean()
        m = mask.float()
        return (err * m).sum() / m.sum().clamp(min=1)

    @torch.no_grad()
    def sample(self, memory: torch.Tensor, noise: torch.Tensor, steps: int) -> torch.Tensor:
        """Euler integration from ``noise`` ``[B, K, A]`` at t=0 to a chunk at t=1."""
        x = noise
        dt = 1.0 / steps
        for i in range(steps):
            t = torch.full((x.shape[0],), i * dt, device=x.device)
            x = x + dt * self.velocity(x, t, memory)
        return x


def images_to_tensor(img: Any, size: tuple[int, int], device: str | torch.device = "cpu") -> torch.Tensor:
    """uint8 ``[B, H, W, 3]`` → float ``[B, 3, h, w]`` in [-1, 1], resized to ``size`` if needed."""
    x = torch.as_tensor(np.asarray(img), device=device).permute(0, 3, 1, 2).float().div_(127.5).sub_(1.0)
    if tuple(x.shape[-2:]) != tuple(size):
        x = F.interpolate(x, size=tuple(size), mode="bilinear", antialias=True, align_corners=False)
    return x


# ---------------------------------------------------------------------------- policy
class FlowPolicy(Policy):
    """The built-in base policy behind the :class:`~world2act.policies.base.Policy` contract.

    Args:
        config: :class:`FlowPolicyConfig`.
        normalizer: fitted :class:`Normalizer` with ``observation.state`` and ``action``.
        net: the network (a fresh one from ``config`` when None).
        device: torch device.
    """

    def __init__(self, config: FlowPolicyConfig, normalizer: Normalizer, net: FlowPolicyNet | None = None,
                 device: str = "cpu"):
        super().__init__()
        self.config = config
        self.normalizer = normalizer
        self.device = torch.device(device)
        self.net = (net or FlowPolicyNet(config)).to(self.device).eval()
        self.action_dim = config.action_dim
        self.state_dim = config.state_dim
        self.chunk_size = config.chunk_size
        self.cameras = tuple(config.cameras)
        self.image_size = tuple(config.image_size)  # type: ignore[assignment]
        self.benchmark = config.benchmark
        self.name = "flow"
        self._text_cache: dict[str, torch.Tensor] = {}
        for key, dim in (("action", config.action_dim), ("observation.state", config.state_dim)):
            if normalizer.modes.get(key, "identity") != "identity" and normalizer.dim(key) != dim:
                raise World2ActError(f"mismatched normaliser: {key} has {normalizer.dim(key)} dims, config says {dim}")

    # ------------------------------------------------------------------ inputs
    def embed_tasks(self, tasks: list[str]) -> torch.Tensor:
        """Pooled MiniLM instruction embeddings ``[B, 384]`` (cached per string)."""
        missing = [t for t in dict.fromkeys(tasks) if t not in self._text_cache]
        if missing:
            from world2act.text import get_text_encoder

            emb = get_text_encoder().pooled(missing)
            for t, e in zip(missing, emb):
                self._text_cache[t] = e.detach().clone()
        return torch.stack([self._text_cache[t] for t in tasks]).to(self.device)

    def encode_obs(self, obs: dict) -> torch.Tensor:
        """Observation tokens ``[B, N, d]`` for a batched LeRobot observation."""
        check_obs(obs, cameras=self.cameras, state_dim=self.state_dim)
        imgs = [images_to_tensor(obs[f"observation.images.{c}"], self.image_size, self.device) for c in self.cameras]
        state = self.normalizer.normalize("observation.state",
                                          torch.as_tensor(np.asarray(obs["observation.state"], dtype=np.float32),
                                                          device=self.device))
        return self.net.encode(imgs, state, self.embed_tasks(list(obs["task"])))

    # ------------------------------------------------------------------ contract
    @torch.no_grad()
    def predict_normalized_chunk(self, obs: dict, noise: torch.Tensor | None = None) -> torch.Tensor:
        """Action chunk ``[B, K, A]`` in normalised units ([-1, 1] box), for Stage 2.

        Args:
            noise: initial flow noise ``[B, K, A]``; drawn from the policy's seeded generator
                (see :meth:`seed`) when None.
        """
        memory = self.encode_obs(obs)
        B = memory.shape[0]
        if noise is None:
            noise = torch.randn((B, self.chunk_size, self.action_dim), generator=self._generator)
        return self.net.sample(memory, noise.to(self.device), self.config.flow_steps)

    def to_env_actions(self, normalized: torch.Tensor) -> torch.Tensor:
        """Normalised chunk ``[B, K, A]`` → environment units, clipped to [-1, 1] (CPU float32)."""
        return self.normalizer.unnormalize("action", normalized).clamp(-1.0, 1.0).float().cpu()

    @torch.no_grad()
    def predict_action_chunk(self, obs: dict) -> torch.Tensor:
        """Action chunk ``[B, K, A]`` float32 in environment units (LIBERO: OSC deltas in [-1, 1])."""
        return self.to_env_actions(self.predict_normalized_chunk(obs))

    # ------------------------------------------------------------------ files
    def save(self, folder: str | Path, extra_config: dict | None = None) -> Path:
        """Write ``config.json``, ``model.safetensors`` and ``normalizer.safetensors`` atomically."""
        from safetensors.torch import save_file

        from world2act.utils.io import atomic_path, write_json

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().cpu().contiguous() for k, v in self.net.state_dict().items()}
        with atomic_path(folder / MODEL_FILE) as tmp:
            save_file(state, str(tmp), metadata={"format": "world2act-flow-policy-v1"})
        self.normalizer.save(folder / NORMALIZER_FILE)
        cfg = dataclasses.asdict(self.config)
        if extra_config:
            cfg["training"] = extra_config
        write_json(folder / CONFIG_FILE, cfg)
        return folder

    @classmethod
    def load(cls, folder: str | Path, *, benchmark: str | None = None, device: str = "cpu") -> "FlowPolicy":
        """Load a folder written by :meth:`save`.

        Raises:
            World2ActError: a missing file, a config/weights/normaliser mismatch (names the file).
        """
        from safetensors.torch import load_file

        from world2act.utils.io import read_json

        folder = Path(folder)
        raw = dict(read_json(folder / CONFIG_FILE))
        raw.pop("training", None)
        if raw.get("type") != TYPE:
            raise World2ActError(f"{folder / CONFIG_FILE}: type {raw.get('type')!r} is not {TYPE!r}")
        cfg = FlowPolicyConfig.from_dict(raw, str(folder / CONFIG_FILE))
        for f in (MODEL_FILE, NORMALIZER_FILE):
            if not (folder / f).is_file():
                raise World2ActError(f"policy folder {folder}: missing {f} (expected config.json, {MODEL_FILE}, {NORMALIZER_FILE})")
        normalizer = Normalizer.load(folder / NORMALIZER_FILE)
        net = FlowPolicyNet(cfg)
        try:
            state = load_file(str(folder / MODEL_FILE))
        except Exception as e:  # noqa: BLE001
            raise World2ActError(f"{folder / MODEL_FILE}: unreadable weights ({type(e).__name__}: {e})") from None
        expected = net.state_dict()
        missing = sorted(set(expected) - set(state))
        unexpected = sorted(set(state) - set(expected))
        bad_shape = sorted(k for k in set(expected) & set(state) if expected[k].shape != state[k].shape)
        if missing or unexpected or bad_shape:
            detail = "; ".join(s for s in (
                f"missing {missing[:3]}" if missing else "", f"unexpected {unexpected[:3]}" if unexpected else "",
                f"shape mismatch {[(k, tuple(state[k].shape), tuple(expected[k].shape)) for k in bad_shape[:3]]}" if bad_shape else "",
            ) if s)
            raise World2ActError(f"{folder / MODEL_FILE}: weights do not match {folder / CONFIG_FILE} ({detail})")
        net.load_state_dict(state)
        return cls(cfg, normalizer, net, device=device)


def _load(path: Path, *, benchmark: str | None = None, device: str = "cpu") -> FlowPolicy:
    return FlowPolicy.load(path, benchmark=benchmark, device=device)


def _register() -> None:
    from world2act.policies.io import register_policy_type

    register_policy_type(TYPE, _load)


_register()
