"""The world model: Cosmos-Predict2 Video2World (diffusers components) with our training/latents API.

Paper Sec. 3.3 (skill-compositional inference) and appendix A (Cosmos-Predict2 backbone). The
components are diffusers' ``CosmosTransformer3DModel`` (denoiser), ``AutoencoderKLWan`` (causal
video VAE: 4x time; 8x space for the real checkpoint, 4x for the ``small`` config) and
``FlowMatchEulerDiscreteScheduler`` with the Karras sigma schedule that
``Cosmos2VideoToWorldPipeline`` uses.

Noise parameterisation (identical to ``Cosmos2VideoToWorldPipeline``): with normalised latents
``x0`` and EDM noise level ``sigma``, the flow-matching time is ``t = sigma / (1 + sigma)``, the
transformer sees ``z_t = (1 - t) x0 + t eps`` (and the clean conditioning latent frame 0 with
time ``t_cond = 1e-4 / (1 + 1e-4)`` and ``condition_mask = 1``) and predicts the velocity
``v = eps - x0``; the denoiser's clean estimate is ``x0_hat = z_t - t v``. Training minimises
``|| v_hat - (eps - x0) ||^2`` over the non-conditioning latent frames (rectified flow).

Latent layout returned by the public API: ``[B, T', C, H', W']`` (time first); diffusers'
internal layout ``[B, C, T', H', W']`` is used inside. Latents are normalised with the VAE's
``latents_mean``/``latents_std`` (the pipeline's ``output_type="latent"`` convention).
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import torch
from torch import nn

from world2act import World2ActError
from world2act.worldmodel.alignment import check_cond_frames, num_pixel_frames
from world2act.worldmodel.configs import WorldModelConfig, get_config

CONFIG_NAME = "config.json"
MARKER = "world2act.WorldModel"


def read_config(wm_dir: str | os.PathLike) -> WorldModelConfig | None:
    """A world-model folder's config without loading its weights (cheap input checks).

    Returns None when the folder holds no ``config.json`` written by :class:`WorldModel`
    (e.g. a plain diffusers checkpoint)."""
    from world2act.utils.io import read_json

    p = Path(wm_dir) / CONFIG_NAME
    if p.is_file():
        meta = read_json(p)
        if meta.get("_class") == MARKER:
            return WorldModelConfig.from_dict(meta["config"])
    return None


def _scheduler(cfg: WorldModelConfig):
    from diffusers import FlowMatchEulerDiscreteScheduler

    s = FlowMatchEulerDiscreteScheduler(use_karras_sigmas=True)
    s.register_to_config(sigma_max=cfg.sigma_max, sigma_min=cfg.sigma_min, sigma_data=1.0,
                         final_sigmas_type="sigma_min")
    return s


def build_transformer(cfg: WorldModelConfig):
    """A freshly initialised ``CosmosTransformer3DModel`` for ``cfg`` (``in_channels = C + 1``)."""
    from diffusers import CosmosTransformer3DModel

    return CosmosTransformer3DModel(
        in_channels=cfg.latent_channels + 1, out_channels=cfg.latent_channels, num_attention_heads=cfg.num_heads,
        attention_head_dim=cfg.head_dim, num_layers=cfg.num_layers, mlp_ratio=cfg.mlp_ratio,
        text_embed_dim=cfg.text_embed_dim, adaln_lora_dim=cfg.adaln_lora_dim, max_size=cfg.max_size,
        patch_size=cfg.patch_size, rope_scale=cfg.rope_scale, concat_padding_mask=cfg.concat_padding_mask,
        extra_pos_embed_type=None)


def build_vae(cfg: WorldModelConfig):
    """A freshly initialised ``AutoencoderKLWan``: 4x temporal compression (the last two of the
    ``len(vae_dim_mult) - 1`` down-sampling stages also halve time), ``cfg.vae_spatial_compression``
    spatial compression, identity latent normalisation (fitted after training); with
    ``cfg.vae_residual`` the Wan 2.2 residual blocks (``is_residual=True``), same latent shapes.

    Raises:
        World2ActError: widths the residual shortcuts cannot split evenly (diffusers' ValueError,
            with the config's name and VAE fields).
    """
    from diffusers import AutoencoderKLWan

    c = cfg.latent_channels
    stages = len(cfg.vae_dim_mult) - 1
    try:
        return AutoencoderKLWan(base_dim=cfg.vae_base_dim, z_dim=c, dim_mult=list(cfg.vae_dim_mult),
                                num_res_blocks=cfg.vae_num_res_blocks, is_residual=cfg.vae_residual,
                                temperal_downsample=[False] * (stages - 2) + [True, True],
                                latents_mean=[0.0] * c, latents_std=[1.0] * c)
    except ValueError as e:
        raise World2ActError(f"world-model config {cfg.name!r}: cannot build its VAE (vae_base_dim={cfg.vae_base_dim}, "
                             f"vae_dim_mult={list(cfg.vae_dim_mult)}, vae_residual={cfg.vae_residual}): {e}") from e


def check_vae(vae, cfg: WorldModelConfig, where: str) -> None:
    """Raise ``World2ActError`` naming ``where`` if ``vae`` does not fit ``cfg`` (latent channels
    or spatial compression)."""
    z, stages = vae.config.z_dim, len(vae.config.dim_mult) - 1
    if z != cfg.latent_channels or 2 ** stages != cfg.vae_spatial_compression:
        raise World2ActError(f"{where}: VAE has z_dim={z} and {2 ** stages}x spatial compression, the world-model "
                             f"config wants latent_channels={cfg.latent_channels} and "
                             f"{cfg.vae_spatial_compression}x (vae_dim_mult={list(cfg.vae_dim_mult)})")


class T5Prompts:
    """T5 prompt embeddings for a ``text_encoder="t5"`` world model (Cosmos-Predict2's text
    conditioning): precomputed embeddings first, else a local T5 encoder loaded on first use.

    Args:
        folder: a folder holding ``text_encoder/`` and ``tokenizer/`` (transformers format, e.g.
            the Cosmos-Predict2-2B checkpoint), or None.
        table: ``{prompt: [L, D]}`` precomputed embeddings (``"*"`` stands for any prompt), or None.
        max_length: tokens per prompt ``L``.
    """

    def __init__(self, folder: str | os.PathLike | None = None, table: dict | None = None, max_length: int = 512):
        has_t5 = folder is not None and (Path(folder) / "text_encoder").is_dir() and (Path(folder) / "tokenizer").is_dir()
        self.folder = Path(folder).resolve() if has_t5 else None
        self.table = table
        self.max_length = int(max_length)
        self._t5 = None  # (tokenizer, encoder), loaded on first use
        self._t5_device = None

    def __call__(self, prompts: list[str], device, dtype) -> torch.Tensor:
        """Embeddings ``[B, L, D]`` (padding zeroed) for ``prompts``.

        Raises:
            World2ActError: a prompt missing from the table and no T5 folder to encode it.
        """
        table = self.table
        if table is not None and ("*" in table or all(p in table for p in prompts)):
            return torch.stack([table.get(p, table.get("*")) for p in prompts]).to(device, dtype)
        if self.folder is None:
            if table is not None:
                raise World2ActError(f"prompt_embeds.safetensors has no embeddings for "
                                     f"{[p for p in prompts if p not in table]} and there is no text_encoder/")
            raise World2ActError("this world model uses T5 text embeddings but no text_encoder/ and tokenizer/ "
                                 "folders (or prompt_embeds.safetensors) are available; pass prompt_embeds "
                                 "[B, L, 1024] computed elsewhere")
        if self._t5 is None:
            from transformers import AutoTokenizer, T5EncoderModel

            self._t5 = (AutoTokenizer.from_pretrained(self.folder / "tokenizer"),
                        T5EncoderModel.from_pretrained(self.folder / "text_encoder").eval())
        tok, enc = self._t5
        if self._t5_device != str(device):  # move once, not on every call
            enc.to(device)
            self._t5_device = str(device)
        t = tok(list(prompts), padding="max_length", max_length=self.max_length, truncation=True, return_tensors="pt")
        mask = t.attention_mask.bool().to(device)
        with torch.no_grad():
            emb = enc(t.input_ids.to(device), attention_mask=mask).last_hidden_state
        return (emb * mask[..., None]).to(dtype)


def _read_embed_table(path: Path) -> dict | None:
    """``{prompt: [L, D]}`` from ``path/prompt_embeds.safetensors`` (tensor ``embeds`` [N, L, D],
    metadata ``prompts``: a JSON list of N strings; ``"*"`` is used for any prompt), or None."""
    f = Path(path) / "prompt_embeds.safetensors"
    if not f.is_file():
        return None
    from safetensors import safe_open

    with safe_open(str(f), "pt") as h:
        prompts = json.loads((h.metadata() or {}).get("prompts", "[]"))
        emb = h.get_tensor("embeds")
    if emb.ndim != 3 or len(prompts) != emb.shape[0]:
        raise World2ActError(f"{f}: needs tensor 'embeds' [N, L, D] and metadata 'prompts' (a JSON list of N strings)")
    return {str(p): emb[i] for i, p in enumerate(prompts)}


def motion_weights(x0: torch.Tensor, w: float) -> torch.Tensor:
    """Per-position loss weights ``[B, 1, T'-1, H', W']`` toward what moves in a clip.

    ``m[j] = mean_c |x0[:, :, j] - x0[:, :, j-1]|`` (latent frames ``j >= 1``, the ones the loss
    scores), normalised by its mean over the clip; the weight is ``1 + w * m``, renormalised to
    mean 1 per clip so that the loss scale (and the learning rate's meaning) does not change with
    ``w``. Static background positions get ``1 / (1 + w)``, a position with ``k`` times the
    clip's mean change ``(1 + w k) / (1 + w)``. No gradient flows through the weights.

    Args:
        x0: clean normalised latents ``[B, C, T', H', W']``.
        w: the motion weight (``>= 0``; 0 gives all ones).
    """
    if w < 0:
        raise World2ActError(f"motion_weight must be >= 0, got {w}")
    x0 = x0.detach()
    m = (x0[:, :, 1:] - x0[:, :, :-1]).abs().mean(dim=1, keepdim=True)
    m = m / m.mean(dim=(2, 3, 4), keepdim=True).clamp(min=1e-8)
    wt = 1.0 + w * m
    return wt / wt.mean(dim=(2, 3, 4), keepdim=True)


class _NearestResize:
    """The one torchvision call ``CosmosTransformer3DModel`` makes with ``concat_padding_mask=True``
    (``transforms.functional.resize(mask, size, interpolation=NEAREST)``), done with
    ``torch.nn.functional.interpolate(mode="nearest")``, which is what torchvision runs for tensors."""

    class InterpolationMode:
        NEAREST = "nearest"

    class functional:  # noqa: N801 (torchvision's name)
        @staticmethod
        def resize(x, size, interpolation="nearest"):
            if interpolation != "nearest":
                raise World2ActError(f"padding-mask resize: only nearest interpolation is provided, got {interpolation}")
            return torch.nn.functional.interpolate(x, size=list(size), mode="nearest")


def _padding_mask_resize() -> None:
    """Give diffusers' Cosmos transformer its padding-mask resize when torchvision is not installed
    (it is banned on these machines: the registry's wheel needs CUDA libraries). With torchvision
    present, its own transform is used."""
    import diffusers.models.transformers.transformer_cosmos as tc

    if getattr(tc, "transforms", None) is None:
        tc.transforms = _NearestResize


class WorldModel(nn.Module):
    """Cosmos-Predict2 Video2World world model (Skill-WM or Base-WM, paper Sec. 3.3, 5.3).

    Attributes:
        config: the :class:`WorldModelConfig` (``num_frames``, ``frame_stride``, ``image_size``
            per view, ``cameras``, ``layout``, ``fps``, ``latent_channels``, ``latent_size``).
        transformer: ``CosmosTransformer3DModel``; vae: ``AutoencoderKLWan``; scheduler:
            ``FlowMatchEulerDiscreteScheduler`` (Karras sigmas, as the pipeline sets it).
        prompt_windows: optional ``{prompt: typical number of clips}`` learned from training
            data (used by ``imagine`` to give long skills several clips).
    """

    def __init__(self, config: WorldModelConfig, transformer=None, vae=None, scheduler=None,
                 t5_prompts: T5Prompts | None = None):
        super().__init__()
        self.config = config
        self.transformer = transformer if transformer is not None else build_transformer(config)
        self.vae = vae if vae is not None else build_vae(config)
        self.scheduler = scheduler if scheduler is not None else _scheduler(config)
        self.prompt_windows: dict[str, int] = {}
        # where T5 prompt embeddings come from (text_encoder="t5" only); load() points it at the checkpoint
        self.t5_prompts = t5_prompts if t5_prompts is not None else T5Prompts(max_length=config.text_max_length)

    # ------------------------------------------------------------------ construction / files
    @classmethod
    def from_config(cls, name_or_config="tiny", **overrides) -> "WorldModel":
        """A randomly initialised model from a preset name (``tiny``, ``small``,
        ``cosmos-predict2-2b``), a dict or a :class:`WorldModelConfig`."""
        return cls(get_config(name_or_config, **overrides))

    @property
    def device(self) -> torch.device:
        return next(self.transformer.parameters()).device

    @property
    def latent_channels(self) -> int:
        return self.config.latent_channels

    @property
    def latent_size(self) -> tuple[int, int]:
        return self.config.latent_size

    def clip_prompts(self, skills: list[str], clips_per_skill: int | None = None) -> list[str]:
        """One prompt per generated clip: each skill repeated ``clips_per_skill`` times, or as
        many times as its training clips spanned 17-frame windows (``prompt_windows``, default 1)."""
        return [p for p in skills for _ in range(max(1, int(clips_per_skill or self.prompt_windows.get(p, 1))))]

    def save(self, path: str | os.PathLike, *, save_vae: bool = True) -> None:
        """Write the diffusers folder layout: ``config.json`` (our config), ``model_index.json``,
        ``transformer/``, ``vae/``, ``scheduler/`` (safetensors weights)."""
        from diffusers import __version__ as dv

        from world2act.utils.io import write_json

        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        self.transformer.save_pretrained(path / "transformer", safe_serialization=True)
        if save_vae:
            self.vae.save_pretrained(path / "vae", safe_serialization=True)
        self.scheduler.save_pretrained(path / "scheduler")
        write_json(path / "model_index.json", {
            "_class_name": "Cosmos2VideoToWorldPipeline", "_diffusers_version": dv,
            "transformer": ["diffusers", "CosmosTransformer3DModel"], "vae": ["diffusers", "AutoencoderKLWan"],
            "scheduler": ["diffusers", "FlowMatchEulerDiscreteScheduler"], "text_encoder": [None, None],
            "tokenizer": [None, None], "safety_checker": [None, None]})
        meta = {"_class": MARKER, "config": self.config.to_dict(), "prompt_windows": self.prompt_windows}
        src = self.t5_prompts.folder
        if src is not None and src != path.resolve():
            meta["text_encoder_from"] = str(src)  # T5 stays in the pretrained folder
        write_json(path / CONFIG_NAME, meta)
        table = self.t5_prompts.table
        if table:
            from safetensors.torch import save_file

            keys = list(table)
            save_file({"embeds": torch.stack([table[k] for k in keys]).contiguous()},
                      str(path / "prompt_embeds.safetensors"), metadata={"prompts": json.dumps(keys)})

    @classmethod
    def load(cls, path: str | os.PathLike, device: str = "cpu", *, config: str | None = None,
             overrides: dict | None = None, dtype: "str | torch.dtype | None" = None) -> "WorldModel":
        """Load a world model folder written by :meth:`save`, or a diffusers Cosmos-Predict2
        Video2World folder (``model_index.json`` + ``transformer/`` + ``vae/``; then ``config``
        names the preset, default ``cosmos-predict2-2b``).

        ``overrides`` replace config fields that do not change the weights (``image_size``,
        ``num_frames``, ``layout``, ``num_inference_steps``, ...), e.g. a small resolution for a
        CPU smoke run of the 2B. ``dtype`` is the transformer's dtype; default: float32 for our
        folders, bfloat16 (the released checkpoint's, half the memory) for a diffusers folder.
        A ``prompt_embeds.safetensors`` in the folder supplies precomputed text embeddings
        (see :meth:`encode_prompts`).

        Raises:
            World2ActError: ``path`` is not a folder, or is not a world model (names what is missing).
        """
        from diffusers import AutoencoderKLWan, CosmosTransformer3DModel

        from world2act.utils.io import read_json

        path = Path(path)
        if not path.is_dir():
            raise World2ActError(f"{path}: world-model folder not found")
        missing = []
        ours = (path / CONFIG_NAME).is_file() and read_json(path / CONFIG_NAME).get("_class") == MARKER
        if not ours and not (path / "model_index.json").is_file():
            missing.append(f"{CONFIG_NAME} (world2act world-model config) or model_index.json (diffusers pipeline)")
        for sub in ("transformer", "vae"):
            if not (path / sub / "config.json").is_file():
                missing.append(f"{sub}/config.json")
            if not any((path / sub).glob("*.safetensors")) if (path / sub).is_dir() else True:
                missing.append(f"{sub}/*.safetensors")
        if missing:
            raise World2ActError(f"{path}: not a world-model folder; missing {', '.join(missing)}")
        prompt_windows = {}
        if ours:
            meta = read_json(path / CONFIG_NAME)
            cfg = WorldModelConfig.from_dict(meta["config"])
            prompt_windows = meta.get("prompt_windows", {})
        else:
            cfg = get_config(config or "cosmos-predict2-2b")
            if dtype is None:
                dtype = torch.bfloat16
        if overrides:
            cfg = get_config(cfg, **overrides)
        if isinstance(dtype, str):
            dtype = getattr(torch, dtype)
        try:
            transformer = CosmosTransformer3DModel.from_pretrained(path / "transformer", torch_dtype=dtype)
            vae = AutoencoderKLWan.from_pretrained(path / "vae")
        except (OSError, ValueError, RuntimeError) as e:
            raise World2ActError(f"{path}: cannot load world-model weights ({str(e).splitlines()[0]})") from None
        tc = transformer.config
        if tc.in_channels != cfg.latent_channels + 1:
            raise World2ActError(f"{path}: transformer in_channels={tc.in_channels} does not match "
                                 f"latent_channels={cfg.latent_channels} in the config")
        check_vae(vae, cfg, str(path))
        model = cls(cfg, transformer, vae, _scheduler(cfg))
        model.prompt_windows = {str(k): int(v) for k, v in prompt_windows.items()}
        model.t5_prompts = T5Prompts(Path(meta["text_encoder_from"]) if ours and meta.get("text_encoder_from") else path,
                                     _read_embed_table(path), cfg.text_max_length)
        return model.to(device).eval()

    # ------------------------------------------------------------------ text
    def encode_prompts(self, prompts: list[str]) -> torch.Tensor:
        """Prompt token embeddings ``[B, L, D]`` (padding zeroed; D = ``text_embed_dim``).

        ``minilm``: all-MiniLM-L6-v2 token embeddings (offline). ``t5``: :attr:`t5_prompts`
        (the loaded folder's ``prompt_embeds.safetensors``, else its ``text_encoder/`` + ``tokenizer/``).

        Raises:
            World2ActError: empty/missing prompts, or T5 needed but not available locally.
        """
        if not prompts or any((not isinstance(p, str)) or not p.strip() for p in prompts):
            raise World2ActError(f"prompts must be non-empty strings, got {prompts!r}")
        if self.config.text_encoder == "minilm":
            from world2act.text import get_text_encoder

            emb, _ = get_text_encoder(self.config.text_max_length).tokens(list(prompts))
            return emb.to(self.device)
        return self.t5_prompts(prompts, self.device, self.transformer.dtype)

    # ------------------------------------------------------------------ video <-> latents
    def check_video(self, video, where: str = "video") -> torch.Tensor:
        """Validate and convert a stitched video to float ``[B, 3, T, H, W]`` in [-1, 1].

        Accepts uint8 ``[B, T, H, W, 3]`` / ``[T, H, W, 3]`` (numpy or torch) or float in [-1, 1].

        Raises:
            World2ActError: wrong rank, channel count, resolution, or frame count (1 + 4n).
        """
        v = torch.as_tensor(np.asarray(video) if not torch.is_tensor(video) else video)
        if v.ndim == 4:
            v = v[None]
        h, w = self.config.frame_size
        if v.ndim != 5 or v.shape[-1] != 3:
            raise World2ActError(f"{where}: expected [B, T, H, W, 3] RGB frames, got shape {tuple(v.shape)}")
        if tuple(v.shape[2:4]) != (h, w):
            raise World2ActError(f"{where}: frames are {v.shape[2]}x{v.shape[3]}, this world model takes {h}x{w} "
                                 f"(views {self.config.image_size} stitched {self.config.layout})")
        if (v.shape[1] - 1) % 4:
            raise World2ActError(f"{where}: {v.shape[1]} frames; the causal VAE needs 1 + 4n frames")
        v = v.to(self.device)
        v = v.float() / 127.5 - 1.0 if v.dtype == torch.uint8 else v.float()
        return v.permute(0, 4, 1, 2, 3).contiguous()

    def _norm_stats(self, dtype=torch.float32):
        c = self.config.latent_channels
        mean = torch.tensor(self.vae.config.latents_mean, dtype=dtype, device=self.device).view(1, c, 1, 1, 1)
        std = torch.tensor(self.vae.config.latents_std, dtype=dtype, device=self.device).view(1, c, 1, 1, 1)
        return mean, std

    def _encode_raw(self, video) -> torch.Tensor:
        x = self.check_video(video).to(self.vae.dtype)
        mean, std = self._norm_stats()
        z = self.vae.encode(x).latent_dist.mode().float()
        return (z - mean) / std  # [B, C, T', H', W']

    @torch.no_grad()
    def _encode_raw_batched(self, videos, batch: int = 8) -> torch.Tensor:
        """Normalised latents ``[N, C, T', H', W']`` (diffusers layout, CPU) of uint8 clips ``[N, T, H, W, 3]``."""
        return torch.cat([self._encode_raw(videos[i:i + batch]).cpu() for i in range(0, len(videos), batch)])

    @torch.no_grad()
    def encode(self, video) -> torch.Tensor:
        """Normalised latents ``[B, T', C, H', W']`` of a stitched video (uint8 ``[B, T, H, W, 3]``;
        posterior mode)."""
        return self._encode_raw(video).permute(0, 2, 1, 3, 4)

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> np.ndarray:
        """uint8 video ``[B, T, H, W, 3]`` (T = 4(T'-1)+1) from normalised latents ``[B, T', C, H', W']``
        (or ``[T', C, H', W']`` -> ``[T, H, W, 3]``)."""
        single = latents.ndim == 4
        z = (latents[None] if single else latents).permute(0, 2, 1, 3, 4).to(self.device).float()
        mean, std = self._norm_stats()
        x = self.vae.decode((z * std + mean).to(self.vae.dtype)).sample.float()
        v = ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 4, 1).cpu().numpy()
        return v[0] if single else v

    # ------------------------------------------------------------------ denoiser
    def _t_cond(self) -> float:
        s = self.config.sigma_conditioning
        return s / (1.0 + s)

    def velocity(self, z: torch.Tensor, t: torch.Tensor, embeds: torch.Tensor,
                 num_cond: int = 1, denoiser: torch.nn.Module | None = None) -> torch.Tensor:
        """Transformer velocity prediction ``[B, C, T', H', W']``.

        Args:
            z: noisy latents ``[B, C, T', H', W']`` whose first ``num_cond`` frames are the clean
                conditioning latents.
            t: flow-matching time ``[B]`` in [0, 1] for the generated frames.
            embeds: text embeddings ``[B, L, D]``.
            denoiser: the module to call instead of ``self.transformer`` (training passes its
                accelerate-prepared, possibly DDP-wrapped copy so gradients synchronise).
        """
        b, _, tl, h, w = z.shape
        ind = torch.zeros(1, 1, tl, 1, 1, device=z.device, dtype=z.dtype)
        ind[:, :, :num_cond] = 1.0
        timestep = ind * self._t_cond() + (1 - ind) * t.view(b, 1, 1, 1, 1).to(z.dtype)
        cond_mask = ind.expand(b, 1, tl, h, w)
        fh, fw = self.config.frame_size
        padding_mask = z.new_zeros(1, 1, fh, fw)
        if self.transformer.config.concat_padding_mask:
            _padding_mask_resize()
        dtype = self.transformer.dtype
        net = denoiser if denoiser is not None else self.transformer
        return net(hidden_states=z.to(dtype), timestep=timestep.to(dtype),
                                encoder_hidden_states=embeds.to(dtype), fps=self.config.fps,
                                condition_mask=cond_mask.to(dtype), padding_mask=padding_mask.to(dtype),
                                return_dict=False)[0].float()

    def flow_matching_loss(self, x0: torch.Tensor, embeds: torch.Tensor, t: torch.Tensor | None = None,
                           noise: torch.Tensor | None = None, generator: torch.Generator | None = None,
                           p_mean: float = 0.0, p_std: float = 1.6, reduce: bool = True,
                           motion_weight: float = 0.0, denoiser: torch.nn.Module | None = None,
                           num_cond: int = 1) -> torch.Tensor:
        """Rectified-flow loss matching the pipeline's sampler (appendix A training).

        Args:
            x0: clean normalised latents ``[B, C, T', H', W']`` (frame 0 = conditioning frame).
            embeds: ``[B, L, D]`` text embeddings (zeros = unconditional).
            t: ``[B]`` flow time; default ``sigmoid(N(p_mean, p_std))`` (= log-normal EDM sigma).
            motion_weight: ``w >= 0``; each latent position's squared error is weighted by
                :func:`motion_weights` (``1 + w`` times the normalised temporal change of ``x0``,
                renormalised to mean 1 per clip), so moving pixels (the arm) count more than the
                static background. 0 = the plain unweighted loss.
            denoiser: as :meth:`velocity` (default ``self.transformer``).
            num_cond: clean conditioning latent frames (1 = the first frame, the paper's
                Video2World; 2 = the first 5 frames, Cosmos-Predict2's multi-frame conditioning).
        Returns:
            mean squared velocity error over latent frames ``>= num_cond`` (scalar, or ``[B]`` if
            not reduce).
        Raises:
            World2ActError: ``num_cond`` outside ``1 .. T'-1``.
        """
        b, n = x0.shape[0], check_cond_frames(num_cond, x0.shape[2], "num_cond")
        if t is None:
            t = torch.sigmoid(p_mean + p_std * torch.randn(b, generator=generator, device=x0.device))
        if noise is None:
            noise = torch.randn(x0.shape, generator=generator, device=x0.device)
        tt = t.view(b, 1, 1, 1, 1)
        z = (1 - tt) * x0 + tt * noise
        z = torch.cat([x0[:, :, :n], z[:, :, n:]], dim=2)
        v = self.velocity(z, t, embeds, num_cond=n, denoiser=denoiser)
        sq = (v[:, :, n:] - (noise - x0)[:, :, n:]).pow(2)
        if motion_weight:
            sq = sq * motion_weights(x0, motion_weight)[:, :, n - 1:]
        err = sq.mean(dim=(1, 2, 3, 4))
        return err.mean() if reduce else err

    @torch.no_grad()
    def denoised_latents(self, video, prompts: list[str], sigma: float, seed: int = 0,
                         prompt_embeds: torch.Tensor | None = None) -> torch.Tensor:
        """The denoiser's x0 prediction ``[B, T', C, H', W']`` for a ground-truth clip at noise ``sigma``.

        This is what the authors' Stage 1 uses as the WM video latent (paper Sec. 4.1): encode
        the clip, noise latent frames ``>= 1`` to EDM level ``sigma`` (``t = sigma/(1+sigma)``),
        keep frame 0 clean as the conditioning frame, and return ``x0_hat = z_t - t v_hat``
        (frame 0 = the clean conditioning latent).

        Args:
            video: stitched uint8 ``[B, T, H, W, 3]`` (or float in [-1, 1]), T = ``num_frames``
                (any 1 + 4n works).
            prompts: B prompt strings (ignored if ``prompt_embeds`` given).
            sigma: EDM noise level >= 0 (0.0 -> t = 0; the sampler spans 0.002..80).
        Raises:
            World2ActError: bad video shape, prompt count mismatch, negative sigma.
        """
        if sigma < 0:
            raise World2ActError(f"sigma must be >= 0, got {sigma}")
        x0 = self._encode_raw(video)
        b = x0.shape[0]
        if prompt_embeds is None:
            if len(prompts) != b:
                raise World2ActError(f"{len(prompts)} prompts for {b} videos")
            prompt_embeds = self.encode_prompts(prompts)
        g = torch.Generator(device="cpu").manual_seed(seed)
        noise = torch.randn(x0.shape, generator=g).to(x0.device)
        t = torch.full((b,), sigma / (1.0 + sigma), device=x0.device)
        tt = t.view(b, 1, 1, 1, 1)
        z = torch.cat([x0[:, :, :1], ((1 - tt) * x0 + tt * noise)[:, :, 1:]], dim=2)
        v = self.velocity(z, t, prompt_embeds)
        x0_hat = torch.cat([x0[:, :, :1], (z - tt * v)[:, :, 1:]], dim=2)
        return x0_hat.permute(0, 2, 1, 3, 4)

    # ------------------------------------------------------------------ sampling
    @torch.no_grad()
    def sample(self, cond_latent: torch.Tensor, embeds: torch.Tensor, num_inference_steps: int | None = None,
               guidance_scale: float | None = None, generator: torch.Generator | None = None,
               neg_embeds: torch.Tensor | None = None, latents: torch.Tensor | None = None,
               progress: bool = False) -> torch.Tensor:
        """Video2World sampling, step for step as ``Cosmos2VideoToWorldPipeline`` (Euler on the
        Karras sigma schedule, clean conditioning frame, optional classifier-free guidance).

        Args:
            cond_latent: normalised conditioning latents ``[B, C, n, H', W']``: n = 1 (one frame,
                the paper's Video2World) or more (the first 1 + 4(n−1) frames; the transformer
                should have been trained with ``cond_frames >= n``).
            embeds: ``[B, L, D]``; neg_embeds: unconditional embeddings (default zeros).
            latents: optional initial noise ``[B, C, T', H', W']`` (unit variance).
        Returns:
            normalised latents ``[B, C, T', H', W']`` (frames ``< n`` = ``cond_latent``).
        Raises:
            World2ActError: n not in ``1 .. T'-1``.
        """
        cfg = self.config
        steps = num_inference_steps or cfg.num_inference_steps
        g = cfg.guidance_scale if guidance_scale is None else guidance_scale
        b, c, n, h, w = cond_latent.shape
        check_cond_frames(n, cfg.num_latent_frames, "sample: conditioning latent frames")
        shape = (b, c, cfg.num_latent_frames, h, w)
        if latents is None:
            latents = torch.randn(shape, generator=generator)
        x = latents.to(self.device).float() * self.scheduler.config.sigma_max
        sched = self.scheduler
        sched.set_timesteps(sigmas=torch.linspace(0, 1, steps, dtype=torch.float64), device=self.device)
        sched.sigmas[-1] = sched.sigmas[-2]
        if g > 1.0 and neg_embeds is None:
            if cfg.text_encoder != "minilm":  # the pipeline's default negative prompt, through T5 or the table
                from diffusers.pipelines.cosmos.pipeline_cosmos2_video2world import DEFAULT_NEGATIVE_PROMPT

                neg_embeds = self.encode_prompts([DEFAULT_NEGATIVE_PROMPT] * b).to(embeds)
            else:
                neg_embeds = torch.zeros_like(embeds)
        cond = cond_latent.to(x)
        it = sched.timesteps
        if progress:
            from world2act.utils.progress import progress_bar

            it = progress_bar(it, desc="sampling", leave=False)
        for i, ts in enumerate(it):
            sig = sched.sigmas[i].to(torch.float32)
            t = sig / (sig + 1)
            z = torch.cat([cond, (x * (1 - t))[:, :, n:]], dim=2)
            tb = t.expand(b).to(x.device)
            x0 = x * (1 - t) - t * self.velocity(z, tb, embeds, num_cond=n)
            x0 = torch.cat([cond, x0[:, :, n:]], dim=2)
            if g > 1.0:
                x0u = x * (1 - t) - t * self.velocity(z, tb, neg_embeds, num_cond=n)
                x0u = torch.cat([cond, x0u[:, :, n:]], dim=2)
                x0 = x0 + g * (x0 - x0u)
            eps = (x - x0) / sig
            x = sched.step(eps, ts, x, return_dict=False)[0].float()
        return torch.cat([cond, x[:, :, n:]], dim=2)

    @torch.no_grad()
    def generate_clip(self, first_frame, prompt: str, num_inference_steps: int | None = None, seed: int = 0,
                      guidance_scale: float | None = None, prompt_embeds: torch.Tensor | None = None):
        """One Video2World clip from a stitched uint8 frame ``[H, W, 3]``, or from the first
        ``1 + 4(n−1)`` frames ``[1 + 4(n−1), H, W, 3]`` (n conditioning latent frames).

        Returns:
            (video uint8 ``[T, H, W, 3]``, normalised latents ``[T', C, H', W']``) with
            T = ``num_frames``; the first ``1 + 4(n−1)`` frames are the decoded conditioning frames.
        Raises:
            World2ActError: a frame stack whose length is not 1 + 4k.
        """
        frame = np.asarray(first_frame)
        if frame.ndim == 3:
            frame = frame[None]
        if frame.ndim != 4 or (len(frame) - 1) % 4:
            raise World2ActError(f"first_frame: expected [H, W, 3] or [1 + 4k, H, W, 3], got shape {frame.shape}")
        cond = self._encode_raw(frame[None])  # [1, C, n, H', W']
        emb = prompt_embeds if prompt_embeds is not None else self.encode_prompts([prompt])
        gen = torch.Generator(device="cpu").manual_seed(seed)
        lat = self.sample(cond, emb, num_inference_steps, guidance_scale, gen)
        lat_t = lat.permute(0, 2, 1, 3, 4)[0]
        return self.decode(lat_t), lat_t

    @torch.no_grad()
    def rollout(self, first_frame, prompts: list[str], num_inference_steps: int | None = None, seed: int = 0,
                guidance_scale: float | None = None, progress: bool = False, cond_frames: int = 1):
        """Skill-compositional generation (paper Sec. 3.3, Fig. 2b).

        One clip per prompt; clip k+1 is conditioned on the last decoded frame of clip k. The
        shared boundary frame is kept once: clip k >= 1 contributes its frames 1..T-1 and latent
        frames 1..T'-1 (its latent frame 0 re-encodes the previous clip's last frame).
        With ``cond_frames = n > 1`` (a transformer trained with ``train-wm cond_frames >= n``)
        clip k >= 1 is conditioned on the last ``1 + 4(n−1)`` frames of clip k (n latent frames)
        and contributes its frames ``1 + 4(n−1)..T-1`` and latent frames ``n..T'-1``: each clip
        after the first adds ``T' − n`` latent frames instead of ``T' − 1``, and latent frame j
        still covers control steps ``[16(j-1), 16j)``. The first clip has one real frame.

        Args:
            first_frame: stitched uint8 ``[H, W, 3]``.
            prompts: n >= 1 skill prompts.
            seed: clip k uses seed ``seed + k``.
        Returns:
            video uint8 ``[1 + n(T-1), H, W, 3]`` and normalised latents ``[1 + n(T'-1), C, H', W']``
            (defaults: ``[1 + 16n, ...]`` and ``[1 + 4n, ...]``); latent frame ``j >= 1`` of the
            concatenation covers control steps ``[16(j-1), 16j)`` after the first frame
            (:func:`~world2act.worldmodel.alignment.latent_action_ranges` applies unchanged).
        Raises:
            World2ActError: no prompts, empty prompt, wrong frame size.
        """
        if not prompts:
            raise World2ActError("rollout: need at least one prompt")
        n = check_cond_frames(cond_frames, self.config.num_latent_frames, "rollout: cond_frames")
        overlap = num_pixel_frames(n)  # frames shared with the previous clip
        frame = np.asarray(first_frame)
        h, w = self.config.frame_size
        if frame.shape != (h, w, 3):
            raise World2ActError(f"first_frame: expected shape ({h}, {w}, 3), got {frame.shape}")
        embeds = self.encode_prompts(list(prompts))
        videos, lats = [], []
        from world2act.utils.progress import progress_bar

        for k, p in enumerate(progress_bar(prompts, desc="rollout clips", disable=not progress)):
            v, lat = self.generate_clip(frame, p, num_inference_steps, seed + k, guidance_scale,
                                        prompt_embeds=embeds[k:k + 1])
            videos.append(v if k == 0 else v[overlap:])
            lats.append(lat if k == 0 else lat[n:])
            frame = v[-overlap:]
        return np.concatenate(videos, 0), torch.cat(lats, 0).cpu()
