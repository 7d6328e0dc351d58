"""The Stage-1 artifact: f_v, f_a, g_a, the fitted action normaliser and their config.

Folder layout (written by :meth:`AlignmentBundle.save`)::

    config.json              AdapterConfig (dims, world-model info)
    model.safetensors        f_v.* / f_a.* / g_a.* weights
    normalizer.safetensors   action mean / std ([A] each, raw units)
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from world2act import World2ActError
from world2act.align.modules import ActionAdapter, ActionDecoder, ActionNormalizer, VideoAdapter
from world2act.envs.registry import benchmark_spec
from world2act.utils.io import atomic_path, read_json, write_json

CONFIG = "config.json"
WEIGHTS = "model.safetensors"
NORMALIZER = "normalizer.safetensors"


@dataclasses.dataclass
class AdapterConfig:
    """Shapes of the Stage-1 networks and the world-model facts they depend on.

    Attributes:
        action_dim: A. chunk_size: K, actions per latent frame (= 4·frame_stride with the Wan
        VAE). latent_dim: D. latent_channels: C. latent_size: (H', W') of a latent frame.
        frame_stride, num_frames, cameras, layout: the world model's clip convention.
        wm: path of the world model the adapters were fitted to. latent_source: ``denoised``
        (x0 prediction at noise ``sigma`` for the ground-truth clip) or ``generated``.
        variant: the contrastive loss used (Table S3 name).
    """

    action_dim: int = 7
    chunk_size: int = 16
    latent_dim: int = 32
    latent_channels: int = 16
    latent_size: tuple[int, int] = (8, 8)
    frame_stride: int = 4
    num_frames: int = 17
    cameras: tuple[str, ...] = benchmark_spec("libero_object").default_cameras  # ("agentview", "wrist")
    layout: str = ""
    wm: str = ""
    latent_source: str = "denoised"
    sigma: float = 0.0
    variant: str = "bi_infonce"

    # short names used in the paper's notation
    @property
    def A(self) -> int:  # noqa: N802
        return self.action_dim

    @property
    def K(self) -> int:  # noqa: N802
        return self.chunk_size

    @property
    def D(self) -> int:  # noqa: N802
        return self.latent_dim

    @property
    def C(self) -> int:  # noqa: N802
        return self.latent_channels

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["latent_size"] = list(self.latent_size)
        d["cameras"] = list(self.cameras)
        return d

    @classmethod
    def from_dict(cls, d: dict, where: str = CONFIG) -> "AdapterConfig":
        """Build from ``adapters.json``'s dict (a ``format`` key is ignored; JSON lists become tuples).

        Raises:
            World2ActError: an unknown key (listing the valid ones) or a bad value, naming ``where``.
        """
        from world2act.utils.config import from_dict

        return from_dict(cls, {k: v for k, v in d.items() if k != "format"}, where)


class AlignmentBundle(nn.Module):
    """Frozen-or-trainable Stage-1 networks plus the action normaliser (what Stage 2 loads).

    An ``nn.Module``: ``parameters()`` are those of f_v, f_a, g_a (in that order);
    ``state_dict()`` also holds the normaliser's ``normalizer.mean`` / ``normalizer.std``
    buffers; ``to`` / ``train`` / ``eval`` act on all of it.

    Attributes:
        f_v: :class:`VideoAdapter` ``[B, T, C, H', W'] -> [B, T, D]``.
        f_a: :class:`ActionAdapter` ``[B, T, K, A] -> [B, T, D]`` (normalised actions).
        g_a: :class:`ActionDecoder` ``[B, T, D] -> [B, T, K, A]`` (normalised actions).
        normalizer: :class:`ActionNormalizer`.
        config: :class:`AdapterConfig`.
    """

    def __init__(self, config: AdapterConfig, seed: int | None = None):
        super().__init__()
        if seed is not None:
            torch.manual_seed(seed)
        self.config = config
        self.f_v = VideoAdapter(config.latent_channels, config.latent_dim)
        self.f_a = ActionAdapter(config.action_dim, config.chunk_size, config.latent_dim)
        self.g_a = ActionDecoder(config.latent_dim, config.action_dim, config.chunk_size)
        self.normalizer = ActionNormalizer(config.action_dim)

    # ------------------------------------------------------------------ helpers
    def adapters(self) -> dict[str, nn.Module]:
        """``{"f_v": ..., "f_a": ..., "g_a": ...}`` (before this was an ``nn.Module``: ``modules()``)."""
        return {"f_v": self.f_v, "f_a": self.f_a, "g_a": self.g_a}

    def freeze(self) -> "AlignmentBundle":
        """Eval mode and ``requires_grad=False`` on every parameter (Stage 2 uses frozen f_v, f_a)."""
        self.eval()
        self.requires_grad_(False)
        return self

    def normalize_actions(self, actions: torch.Tensor) -> torch.Tensor:
        """Raw actions ``[..., A]`` → normalised units (the space f_a and g_a work in)."""
        return self.normalizer.normalize(actions)

    def unnormalize_actions(self, actions: torch.Tensor) -> torch.Tensor:
        """Normalised actions ``[..., A]`` → raw environment units."""
        return self.normalizer.unnormalize(actions)

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False, *, where: str = WEIGHTS):
        """``nn.Module.load_state_dict``; a dict without ``normalizer.*`` keys (``model.safetensors``)
        keeps the current normaliser. Raises ``World2ActError`` naming ``where`` when the weights do not fit."""
        sd = dict(state_dict)
        if not any(k.startswith("normalizer.") for k in sd):
            sd.update({f"normalizer.{k}": v for k, v in self.normalizer.state_dict().items()})
        try:
            return super().load_state_dict(sd, strict=strict, assign=assign)
        except RuntimeError as e:
            raise World2ActError(f"{where}: weights do not fit its config ({' '.join(str(e).split())[:400]})") from None

    # ------------------------------------------------------------------ files
    def save(self, directory: str | Path, extra: dict | None = None) -> Path:
        """Write ``config.json``, ``model.safetensors``, ``normalizer.safetensors`` atomically."""
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        sd = {k: v.detach().cpu().contiguous() for k, v in self.state_dict().items() if not k.startswith("normalizer.")}
        with atomic_path(d / WEIGHTS) as tmp:
            save_file(sd, str(tmp), metadata={"format": "world2act-align"})
        with atomic_path(d / NORMALIZER) as tmp:
            save_file({"mean": self.normalizer.mean.detach().cpu().contiguous(),
                       "std": self.normalizer.std.detach().cpu().contiguous()}, str(tmp))
        write_json(d / CONFIG, {**self.config.to_dict(), **(extra or {}), "format": "world2act-align"})
        return d

    @classmethod
    def load(cls, directory: str | Path, device: str | torch.device = "cpu") -> "AlignmentBundle":
        """Load a bundle written by :meth:`save` (e.g. ``world2act align --out DIR``).

        Raises:
            World2ActError: the folder or one of its three files is missing or does not fit.
        """
        d = Path(directory)
        if not d.is_dir():
            raise World2ActError(f"{d}: alignment folder not found (run `world2act align` first)")
        for f in (CONFIG, WEIGHTS, NORMALIZER):
            if not (d / f).is_file():
                raise World2ActError(f"{d}: missing {f}; not a `world2act align` output folder")
        raw = read_json(d / CONFIG)
        extra_keys = {"format", "extra"}
        cfg = AdapterConfig.from_dict({k: v for k, v in raw.items() if k not in extra_keys
                                       and k in {f.name for f in dataclasses.fields(AdapterConfig)}}, str(d / CONFIG))
        b = cls(cfg)
        b.load_state_dict(load_file(str(d / WEIGHTS)), where=str(d / WEIGHTS))
        norm = load_file(str(d / NORMALIZER))
        if "mean" not in norm or "std" not in norm or norm["mean"].shape != (cfg.action_dim,):
            raise World2ActError(f"{d / NORMALIZER}: expected mean/std of shape [{cfg.action_dim}]")
        b.normalizer.mean.copy_(norm["mean"])
        b.normalizer.std.copy_(norm["std"])
        b.extra = {k: v for k, v in raw.items() if k not in {f.name for f in dataclasses.fields(AdapterConfig)}}
        return b.to(device).eval()

    def __repr__(self) -> str:
        c = self.config
        return f"AlignmentBundle(A={c.A}, K={c.K}, D={c.D}, C={c.C}, latent_size={c.latent_size}, variant={c.variant})"
