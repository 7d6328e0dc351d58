"""Named world-model configurations (Cosmos-Predict2 architecture, paper Sec. 3.3 / appendix A).

``tiny`` is for tests (seconds on CPU), ``small`` for the quick preset (trains in < 30 min on 2
CPU cores), ``cosmos-predict2-2b`` mirrors the released Cosmos-Predict2-2B-Video2World checkpoint
(load it with ``--pretrained PATH``; building it from scratch is possible but pointless on CPU).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from world2act import World2ActError
from world2act.envs.registry import benchmark_spec

LAYOUTS = ("1x1", "1x2", "2x2")


@dataclass
class WorldModelConfig:
    """Everything needed to rebuild a :class:`~world2act.worldmodel.WorldModel`.

    Video: clips of ``num_frames`` frames taken every ``frame_stride`` control steps, each frame
    the views of ``cameras`` (each ``image_size`` = (H, W)) stitched with ``layout`` ("1x2":
    side by side; "2x2": the paper's grid, appendix "Multi-view Stitching"; "1x1": one camera).
    Transformer: ``CosmosTransformer3DModel`` with ``num_heads * head_dim`` hidden units.
    VAE: ``AutoencoderKLWan`` with 4x temporal compression, ``latent_channels`` channels and
    ``2 ** (len(vae_dim_mult) - 1)`` spatial compression (8x for the real checkpoint's (1, 2, 4, 4);
    the ``small`` config uses 4x, (1, 2, 2), with 4x4 transformer patches so the token count is the
    same as 8x with 2x2 patches while the VAE keeps four times more spatial detail).
    ``vae_residual`` adds the Wan 2.2 VAE's parameter-free shortcuts (space/time-to-channel
    averaging around each down-sampling block, channel-to-space duplication around each
    up-sampling block; ``AutoencoderKLWan(is_residual=True)``): same latent shapes, and the
    ``small`` VAE trained from scratch reaches a given reconstruction PSNR in fewer steps
    (docs/results.md, world model). The real checkpoint's Wan 2.1 VAE has no shortcuts.
    Text: ``text_encoder`` "minilm" (all-MiniLM-L6-v2 token embeddings, 384-d) or "t5"
    (T5-XXL, 1024-d, the real checkpoint; embeddings computed elsewhere or from a local folder).
    """

    name: str = "small"
    num_frames: int = 17
    frame_stride: int = 4
    image_size: tuple[int, int] = (64, 64)
    cameras: tuple[str, ...] = benchmark_spec("libero_object").default_cameras  # ("agentview", "wrist")
    layout: str = "1x2"
    fps: float = 5.0  # frame rate of a clip: control_hz / frame_stride (20 Hz / 4)
    # transformer
    num_heads: int = 4
    head_dim: int = 64
    num_layers: int = 6
    mlp_ratio: float = 4.0
    adaln_lora_dim: int = 64
    patch_size: tuple[int, int, int] = (1, 2, 2)
    max_size: tuple[int, int, int] = (32, 64, 64)
    rope_scale: tuple[float, float, float] = (1.0, 1.0, 1.0)
    concat_padding_mask: bool = False  # True needs torchvision (real checkpoint only)
    # VAE
    latent_channels: int = 16
    vae_base_dim: int = 16
    vae_dim_mult: tuple[int, ...] = (1, 2, 2, 2)
    vae_num_res_blocks: int = 1
    vae_residual: bool = False  # Wan 2.2 residual down/up blocks (AvgDown3D/DupUp3D shortcuts)
    # text
    text_encoder: str = "minilm"
    text_embed_dim: int = 384
    text_max_length: int = 32
    # sampling (pipeline defaults: 35 steps, guidance 7 for the real model)
    num_inference_steps: int = 10
    guidance_scale: float = 1.0
    sigma_conditioning: float = 1e-4
    sigma_max: float = 80.0
    sigma_min: float = 0.002

    def __post_init__(self):
        self.image_size = tuple(int(v) for v in self.image_size)
        self.cameras = tuple(self.cameras)
        self.patch_size = tuple(int(v) for v in self.patch_size)
        self.max_size = tuple(int(v) for v in self.max_size)
        self.rope_scale = tuple(float(v) for v in self.rope_scale)
        self.vae_dim_mult = tuple(int(v) for v in self.vae_dim_mult)
        if self.layout not in LAYOUTS:
            raise World2ActError(f"world model layout {self.layout!r}: valid layouts are {', '.join(LAYOUTS)}")
        if self.layout == "1x1" and len(self.cameras) != 1:
            raise World2ActError(f"layout 1x1 takes one camera, got {list(self.cameras)}")
        if self.layout == "1x2" and len(self.cameras) != 2:
            raise World2ActError(f"layout 1x2 takes two cameras, got {list(self.cameras)}")
        if self.layout == "2x2" and not 1 <= len(self.cameras) <= 4:
            raise World2ActError(f"layout 2x2 takes 1-4 cameras, got {list(self.cameras)}")
        if self.text_encoder not in ("minilm", "t5"):
            raise World2ActError(f"text_encoder {self.text_encoder!r}: valid are minilm, t5")
        if len(self.vae_dim_mult) < 3:
            raise World2ActError(f"vae_dim_mult {list(self.vae_dim_mult)}: needs >= 3 entries "
                                 "(two down-sampling stages carry the 4x temporal compression)")
        h, w = self.frame_size
        m = self.vae_spatial_compression * self.patch_size[1]
        if h % m or w % m:
            raise World2ActError(f"stitched frame size {h}x{w} must be a multiple of {m} = VAE spatial "
                                 f"compression {self.vae_spatial_compression} x patch {self.patch_size[1]} "
                                 f"(image_size={self.image_size}, layout={self.layout})")
        from world2act.worldmodel.alignment import num_latent_frames

        num_latent_frames(self.num_frames)  # validates 1 + 4n
        if self.frame_stride < 1:
            raise World2ActError(f"frame_stride must be >= 1, got {self.frame_stride}")

    @property
    def frame_size(self) -> tuple[int, int]:
        """(H, W) of a stitched frame: 1x1 (H, W), 1x2 (H, 2W), 2x2 (2H, 2W)."""
        h, w = self.image_size
        return {"1x1": (h, w), "1x2": (h, 2 * w), "2x2": (2 * h, 2 * w)}[self.layout]

    @property
    def vae_spatial_compression(self) -> int:
        """Pixels per latent cell along H and W: ``2 ** (len(vae_dim_mult) - 1)`` (8 for Cosmos)."""
        return 2 ** (len(self.vae_dim_mult) - 1)

    @property
    def latent_size(self) -> tuple[int, int]:
        """(H', W') = stitched frame size / ``vae_spatial_compression``."""
        h, w = self.frame_size
        f = self.vae_spatial_compression
        return h // f, w // f

    @property
    def num_latent_frames(self) -> int:
        """T' = (num_frames - 1) // 4 + 1."""
        return (self.num_frames - 1) // 4 + 1

    @property
    def hidden_size(self) -> int:
        return self.num_heads * self.head_dim

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "WorldModelConfig":
        """Build from a checkpoint's or preset's dict (types coerced: JSON lists become tuples).

        Raises:
            World2ActError: an unknown key (listing the valid ones) or a bad value.
        """
        from world2act.utils.config import from_dict

        return from_dict(cls, d, "world-model config")


PRESETS: dict[str, dict] = {
    # tests: 32x64 frames (two 32x32 views), 2 layers, hidden 64, a ~40k-parameter VAE
    "tiny": dict(name="tiny", image_size=(32, 32), num_heads=2, head_dim=32, num_layers=2,
                 adaln_lora_dim=16, latent_channels=8, vae_base_dim=8, vae_dim_mult=(1, 1, 1, 1),
                 text_max_length=16, num_inference_steps=4),
    # quick preset: 64x128 frames, hidden 256, 6 layers (~8 M params), ~0.7 M-parameter residual
    # VAE with 4x spatial compression (16x32 latents) and 4x4 patches (4x8 tokens per latent frame)
    "small": dict(name="small", vae_dim_mult=(1, 2, 2), vae_residual=True, patch_size=(1, 4, 4)),
    # Cosmos-Predict2-2B-Video2World (704x1280, 93 frames, 35 steps, guidance 7, T5-XXL 1024-d)
    "cosmos-predict2-2b": dict(name="cosmos-predict2-2b", num_frames=93, frame_stride=1, image_size=(352, 640),
                               layout="2x2", fps=16.0, num_heads=16, head_dim=128, num_layers=28,
                               adaln_lora_dim=256, max_size=(128, 240, 240), rope_scale=(1.0, 3.0, 3.0),
                               concat_padding_mask=True, latent_channels=16, vae_base_dim=96,
                               vae_dim_mult=(1, 2, 4, 4), vae_num_res_blocks=2, text_encoder="t5",
                               text_embed_dim=1024, text_max_length=512, num_inference_steps=35,
                               guidance_scale=7.0),
}


def get_config(name_or_config: "str | dict | WorldModelConfig", **overrides) -> WorldModelConfig:
    """A :class:`WorldModelConfig` from a preset name, a dict, or a config (copied).

    Raises:
        World2ActError: unknown preset name (the message lists the valid ones) or bad values.
    """
    if isinstance(name_or_config, WorldModelConfig):
        d = name_or_config.to_dict()
    elif isinstance(name_or_config, dict):
        d = dict(name_or_config)
    elif isinstance(name_or_config, str):
        if name_or_config not in PRESETS:
            raise World2ActError(f"world-model config {name_or_config!r}: valid names are {', '.join(PRESETS)}")
        d = dict(PRESETS[name_or_config])
    else:
        raise World2ActError(f"world-model config: expected a name, dict or WorldModelConfig, got {type(name_or_config).__name__}")
    d.update(overrides)
    return WorldModelConfig.from_dict(d)
