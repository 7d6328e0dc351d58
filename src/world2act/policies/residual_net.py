"""The World2Act residual network π_res (paper Sec. 4.2, Table S6).

Plain PyTorch, no simulator or file handling: :class:`ResidualNet` maps (observation image,
proprioception, base action chunk) to a correction Δa for the whole chunk.

Architecture (Table S6), D = latent dim of Stage 1:

* state encoder: FC(S, 128) – ReLU – FC(128, D) – LayerNorm
* visual encoder: Conv2D(3, 16, k=8, s=4) – ReLU – Conv2D(16, 32, k=4, s=2) – ReLU –
  Conv2D(32, 32, k=3, s=1) – Flatten – FC(·, D) – LayerNorm. (The paper's FC(6272, D) is this
  stack at its image size; here the flatten size is derived from ``image_size``.)
* action token: the frozen Stage-1 action adapter f_a applied to the (normalised) base chunk
* a 2-layer, 4-head self-attention module over the three tokens [state, image, action]
* an MLP on the pooled tokens, then the action decoder g_a (initialised from Stage 1 and
  fine-tuned) giving Δa ``[B, K, A]`` in normalised action units.

Our addition (documented in docs/posttrain.md): a per-action-dimension output gate ``gate``
initialised to zero, so that before any update ``a + Δa == a`` exactly and post-training can
only move the policy away from the base as far as the Stage-2 objective asks (ReZero-style).

How the pooled tokens become Δa is :attr:`ResidualNetConfig.head`:

* ``decoder`` (the paper's Table S6): Δa = gate ⊙ g_a(MLP(h)). At ``gate = 0`` the network
  gets no gradient until the gate grows, and what the gate first scales up is g_a's decoding
  of an untrained latent: a full-size action chunk unrelated to the state (measured in
  docs/results.md: the DAgger oracle's corrections were mostly this noise).
* ``latent`` (ours): the correction lives in Stage 1's latent space. With z = f_a(base chunk),
  Δa = g_a(z + δz) − g_a(z), δz = MLP(h) whose last layer starts at zero, so Δa = 0 exactly
  at the start *and* every weight gets a gradient from the first update; a small δz moves the
  chunk along directions g_a can express.
* ``linear`` (ours): Δa = W·MLP(h) reshaped to ``[K, A]``, W zero-initialised: a plain
  action-space residual head (the control for ``latent``).
"""
from __future__ import annotations

import dataclasses

import torch
from torch import nn

from world2act import World2ActError
from world2act.envs.registry import benchmark_spec


@dataclasses.dataclass
class ResidualNetConfig:
    """Shapes and sizes of :class:`ResidualNet`.

    Attributes:
        state_dim: S, proprioception size.
        action_dim: A.
        chunk_size: K, actions per chunk (must equal Stage 1's actions per latent frame).
        latent_dim: D, Stage-1 latent size (token width).
        image_size: (H, W) of the observation image fed to the visual encoder.
        camera: which ``observation.images.<camera>`` the visual encoder reads.
        num_layers / num_heads: self-attention module (Table S6: 2 layers, 4 heads).
        mlp_hidden: hidden width of the MLP before g_a.
        gate_init: initial value of the output gate (0 = start exactly at the base policy).
        max_delta: trust region, normalised action units: the output is
            ``max_delta · tanh(Δa / max_delta)`` so no action moves further than this from the
            base (0 = unbounded, the paper's residual).
        head: how the pooled tokens become Δa: ``decoder`` (the paper: gate ⊙ g_a(·)),
            ``latent`` (g_a(z + δz) − g_a(z), ours) or ``linear`` (zero-initialised linear map
            to the chunk); see the module docstring. The gate multiplies every head's output;
            with ``latent`` and ``linear`` it starts at 1 whatever ``gate_init`` says, because
            the zero-initialised last layer already makes Δa = 0.
    """

    state_dim: int
    action_dim: int
    chunk_size: int
    latent_dim: int = 32
    image_size: tuple[int, int] = (64, 64)
    camera: str = benchmark_spec("libero_object").default_camera  # "agentview"
    num_layers: int = 2
    num_heads: int = 4
    mlp_hidden: int = 128
    gate_init: float = 0.0
    max_delta: float = 0.0
    head: str = "decoder"

    def __post_init__(self) -> None:
        if self.head not in ("decoder", "latent", "linear"):
            raise World2ActError(f"ResidualNetConfig.head must be decoder, latent or linear, got {self.head!r}")
        for name in ("state_dim", "action_dim", "chunk_size", "latent_dim", "num_layers", "num_heads", "mlp_hidden"):
            if int(getattr(self, name)) <= 0:
                raise World2ActError(f"ResidualNetConfig.{name} must be positive, got {getattr(self, name)}")
        if self.latent_dim % self.num_heads:
            raise World2ActError(f"ResidualNetConfig: latent_dim {self.latent_dim} not divisible by num_heads {self.num_heads}")
        self.image_size = tuple(int(x) for x in self.image_size)  # type: ignore[assignment]
        if min(self.image_size) < 36:
            raise World2ActError(f"ResidualNetConfig.image_size {self.image_size}: the visual encoder needs ≥ 36 px")


class ResidualNet(nn.Module):
    """π_res: (image, state, base chunk) → Δa (paper Sec. 4.2, Table S6).

    Args:
        config: :class:`ResidualNetConfig`.
        action_adapter: the Stage-1 f_a, ``[B, K, A] -> [B, D]``; kept frozen (no gradient to
            its parameters; gradients still flow *through* it where a loss uses it).
        action_decoder: the Stage-1 g_a, ``[B, D] -> [B, K, A]``; copied and fine-tuned.
    """

    def __init__(self, config: ResidualNetConfig, action_adapter: nn.Module, action_decoder: nn.Module):
        super().__init__()
        c = config
        self.config = c
        D = c.latent_dim
        self.state_encoder = nn.Sequential(nn.Linear(c.state_dim, 128), nn.ReLU(), nn.Linear(128, D), nn.LayerNorm(D))
        convs = nn.Sequential(
            nn.Conv2d(3, 16, kernel_size=8, stride=4), nn.ReLU(),
            nn.Conv2d(16, 32, kernel_size=4, stride=2), nn.ReLU(),
            nn.Conv2d(32, 32, kernel_size=3, stride=1), nn.Flatten(),
        )
        with torch.no_grad():
            flat = convs(torch.zeros(1, 3, *c.image_size)).shape[-1]
        self.visual_encoder = nn.Sequential(convs, nn.Linear(flat, D), nn.LayerNorm(D))
        self.action_adapter = action_adapter
        for p in self.action_adapter.parameters():
            p.requires_grad_(False)
        layer = nn.TransformerEncoderLayer(d_model=D, nhead=c.num_heads, dim_feedforward=4 * D, dropout=0.0,
                                           batch_first=True, norm_first=True)
        self.attention = nn.TransformerEncoder(layer, num_layers=c.num_layers, enable_nested_tensor=False)
        self.token_type = nn.Parameter(torch.zeros(3, D))
        self.mlp = nn.Sequential(nn.Linear(3 * D, c.mlp_hidden), nn.GELU(), nn.Linear(c.mlp_hidden, D))
        self.action_decoder = action_decoder
        if c.head == "linear":
            self.to_chunk = nn.Linear(D, c.chunk_size * c.action_dim)
        if c.head in ("latent", "linear"):  # Δa = 0 at the start through the last layer, not the gate
            last = self.to_chunk if c.head == "linear" else self.mlp[-1]
            nn.init.zeros_(last.weight)
            nn.init.zeros_(last.bias)
        gate = 1.0 if c.head in ("latent", "linear") else float(c.gate_init)
        self.gate = nn.Parameter(torch.full((c.action_dim,), gate))

    def forward(self, image: torch.Tensor, state: torch.Tensor, base_chunk: torch.Tensor) -> torch.Tensor:
        """Predict the correction.

        Args:
            image: ``[B, 3, H, W]`` float in [0, 1].
            state: ``[B, S]`` normalised proprioception.
            base_chunk: ``[B, K, A]`` normalised base action chunk.

        Returns:
            Δa ``[B, K, A]`` in normalised action units.
        """
        B, K, A = base_chunk.shape
        if (K, A) != (self.config.chunk_size, self.config.action_dim):
            raise World2ActError(f"residual: base chunk is [{K}, {A}] but the residual expects "
                                 f"[{self.config.chunk_size}, {self.config.action_dim}]")
        self.action_adapter.eval()
        tokens = torch.stack([
            self.state_encoder(state),
            self.visual_encoder(image),
            self.action_adapter(base_chunk),
        ], dim=1) + self.token_type  # [B, 3, D]
        h = self.attention(tokens).flatten(1)  # [B, 3D]
        if self.config.head == "latent":
            z = tokens[:, 2] - self.token_type[2]  # f_a(base chunk), [B, D]
            delta = self.action_decoder(z + self.mlp(h)) - self.action_decoder(z)  # [B, K, A]
        elif self.config.head == "linear":
            delta = self.to_chunk(self.mlp(h)).reshape(B, K, A)
        else:
            delta = self.action_decoder(self.mlp(h))  # [B, K, A]
        delta = delta * self.gate
        if self.config.max_delta > 0:
            m = float(self.config.max_delta)
            delta = m * torch.tanh(delta / m)
        return delta


class ResidualEnsemble(nn.Module):
    """The mean correction of several :class:`ResidualNet` members fitted to the same data with
    different seeds (ours, not in the paper: it averages out fit-to-fit variance, measured as
    large as the gain itself in docs/results.md).

    Each member applies its own trust region, so the mean stays within ``max_delta``.

    Args:
        members: ≥ 1 nets with identical :class:`ResidualNetConfig`; they share one frozen f_a.

    Raises:
        World2ActError: no members, or members whose configs differ.
    """

    def __init__(self, members: list[ResidualNet]):
        super().__init__()
        if not members:
            raise World2ActError("ResidualEnsemble needs at least one member")
        first = dataclasses.asdict(members[0].config)
        for i, m in enumerate(members[1:], 1):
            if dataclasses.asdict(m.config) != first:
                raise World2ActError(f"ResidualEnsemble: member {i}'s config differs from member 0's")
        self.members = nn.ModuleList(members)
        self.config = members[0].config

    @property
    def action_adapter(self) -> nn.Module:
        return self.members[0].action_adapter

    def forward(self, image: torch.Tensor, state: torch.Tensor, base_chunk: torch.Tensor) -> torch.Tensor:
        """Mean Δa ``[B, K, A]`` of the members (inputs as :meth:`ResidualNet.forward`)."""
        return torch.stack([m(image, state, base_chunk) for m in self.members]).mean(0)
