"""World2Act with LoRA instead of the residual (paper Table S2): low-rank adapters inside the
frozen flow-matching base policy, trained by the same Stage-2 objective.

The base's Linear layers named by ``targets`` get LoRA adapters (the ``peft`` library,
``W x + (α/r)·B A x`` with ``B = 0`` at the start, so the policy starts *exactly* at the base);
every base weight stays frozen. The action chunk is the base's own flow-matching sample —
``sample_steps`` Euler steps from Gaussian noise — so Stage 2's gradient flows through the
whole integration (and the observation encoder when it holds adapters) into the LoRA weights.
The noise of every rollout chunk is kept, so the chunk re-sampled with gradient at update
time is the chunk the simulator executed (before the update moves the adapters).

A post-trained policy folder:

```
config.json              {"type": "lora", "base": "base", "lora": {...LoraAdapterConfig...}, ...}
adapter.safetensors      the LoRA weights only (``lora_A`` / ``lora_B`` of each target)
base/                    copy of the frozen base policy folder (a ``flow`` policy)
```
``world2act eval --policy DIR`` loads it like any other policy. Nothing is unpickled.
"""
from __future__ import annotations

import contextlib
import copy
import dataclasses
import fnmatch
from pathlib import Path

import numpy as np
import torch
from torch import nn

from world2act import World2ActError
from world2act.policies.base import Policy, check_obs
from world2act.policies.flow_policy import FlowPolicy, images_to_tensor
from world2act.policies.io import copy_component, load_policy, register_policy_type
from world2act.utils.io import atomic_path, read_json, write_json

TYPE = "lora"
ADAPTER_FILE = "adapter.safetensors"
#: default LoRA targets: the flow-matching action head (the decoder's feed-forward layers, the
#: action input and output projections). Attention projections are left alone: torch's
#: ``nn.MultiheadAttention`` reads ``out_proj.weight`` directly, so an adapter there would be ignored.
DEFAULT_TARGETS = ("decoder.layers.*.linear1", "decoder.layers.*.linear2", "act_in", "act_out")


@dataclasses.dataclass
class LoraAdapterConfig:
    """The adapters (saved in ``config.json`` under ``"lora"``).

    Attributes:
        rank: LoRA rank r.
        alpha: LoRA α (the update is scaled by α / r); 0 = ``rank`` (scale 1).
        targets: glob patterns over the base network's module names (e.g.
            ``decoder.layers.*.linear1``); each must match at least one ``nn.Linear``.
        sample_steps: Euler steps of the flow-matching sampler, at rollout and update time alike
            (0 = the base policy's own ``flow_steps``).
    """

    rank: int = 8
    alpha: float = 0.0
    targets: tuple[str, ...] = DEFAULT_TARGETS
    sample_steps: int = 0

    def __post_init__(self) -> None:
        self.targets = tuple(str(t) for t in self.targets)
        if int(self.rank) < 1:
            raise World2ActError(f"lora: rank must be ≥ 1, got {self.rank}")
        if int(self.sample_steps) < 0 or float(self.alpha) < 0:
            raise World2ActError("lora: sample_steps and alpha must be ≥ 0")
        if not self.targets:
            raise World2ActError("lora: at least one target module pattern is needed")


def resolve_targets(net: nn.Module, patterns: tuple[str, ...] | list[str]) -> list[str]:
    """Full module names of the ``nn.Linear`` layers of ``net`` matched by the glob ``patterns``.

    Raises:
        World2ActError: a pattern that matches no Linear layer (the message lists them), or a
            match on an attention ``out_proj`` (read directly by ``nn.MultiheadAttention``,
            so an adapter there would never act).
    """
    linears = [n for n, m in net.named_modules() if isinstance(m, nn.Linear)]
    names: list[str] = []
    for pat in patterns:
        hit = [n for n in linears if fnmatch.fnmatchcase(n, pat)]
        if not hit:
            raise World2ActError(f"lora: target {pat!r} matches no Linear layer of the base policy; "
                                 f"Linear layers: {linears}")
        bad = [n for n in hit if n.endswith("out_proj")]
        if bad:
            raise World2ActError(f"lora: target {pat!r} matches attention projections {bad[:3]}: "
                                 "nn.MultiheadAttention reads their weights directly, an adapter there would not act")
        names += [n for n in hit if n not in names]
    return names


@contextlib.contextmanager
def _no_mha_fastpath():
    """torch's fused inference path of TransformerEncoderLayer reads Linear weights directly and
    would skip adapters there; turn it off while the adapted network runs."""
    prev = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        yield
    finally:
        torch.backends.mha.set_fastpath_enabled(prev)


class LoraPolicy(Policy):
    """The frozen base flow policy with trainable LoRA adapters inside a copy of its network.

    Args:
        base: the frozen base :class:`~world2act.policies.flow_policy.FlowPolicy` (never modified:
            the adapters live in a deep copy of its network).
        config: :class:`LoraAdapterConfig`.
        bundle: the Stage-1 ``AlignmentBundle`` (its action normaliser defines Stage 2's
            normalised units); only Stage 2 needs it, evaluation does not.

    Raises:
        World2ActError: the base is not a local flow-matching policy, or a target is invalid.
    """

    name = "base+world2act-lora"

    def __init__(self, base: Policy, config: LoraAdapterConfig, bundle=None):
        super().__init__()
        if not isinstance(base, FlowPolicy):
            raise World2ActError(f"adapter=lora needs a local flow-matching base policy (type 'flow'); got "
                                 f"{type(base).__name__}: LoRA trains weights inside the base, so a served or "
                                 "external base cannot be adapted (use adapter=residual)")
        from peft import LoraConfig, inject_adapter_in_model

        self.base, self.config, self.bundle = base, config, bundle
        if bundle is not None:  # Stage 2's f_a stays frozen, as inside the residual network
            for p in bundle.f_a.parameters():
                p.requires_grad_(False)
        net = copy.deepcopy(base.net)
        for p in net.parameters():
            p.requires_grad_(False)
        self.target_names = resolve_targets(net, config.targets)
        pc = LoraConfig(r=int(config.rank), lora_alpha=float(config.alpha or config.rank), lora_dropout=0.0,
                        target_modules=list(self.target_names), bias="none")
        self.net = inject_adapter_in_model(pc, net).eval()
        for n, p in self.net.named_parameters():
            p.requires_grad_("lora_" in n)
        for attr in ("action_dim", "state_dim", "chunk_size", "cameras", "image_size", "benchmark"):
            setattr(self, attr, getattr(base, attr))
        self.device = base.device
        self.sample_steps = int(config.sample_steps or base.config.flow_steps)
        self.state_norm_fitted = True  # no normaliser of its own: the base's is used
        self.last_inputs: dict[str, torch.Tensor] | None = None

    # ------------------------------------------------------------------ Stage-2 loop interface
    @property
    def residual(self) -> nn.Module:
        """The trainable module (the adapted network; only its ``lora_`` weights require grad),
        under the name Stage 2's loop uses for the residual."""
        return self.net

    def fit_state_norm(self, states: torch.Tensor) -> None:
        """No-op: the adapted base normalises proprioception with its own fitted normaliser."""

    def state_norm(self) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.zeros(int(self.state_dim)), torch.ones(int(self.state_dim))

    def adapter_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.net.parameters() if p.requires_grad]

    # ------------------------------------------------------------------ sampling
    def inputs(self, obs: dict, noise: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """The base's own inputs for a batched observation, as tensors kept for the update:
        ``images`` uint8 ``[B, C, H, W, 3]`` (its cameras in order), ``state`` raw ``[B, S]``,
        ``lang`` ``[B, 384]`` (instruction embeddings), ``noise`` ``[B, K, A]`` (drawn from the
        policy's seeded generator when None)."""
        B = check_obs(obs, cameras=self.cameras, state_dim=self.state_dim)
        imgs = [torch.as_tensor(np.asarray(obs[f"observation.images.{c}"])) for c in self.cameras]
        if len({tuple(i.shape) for i in imgs}) > 1:
            raise World2ActError(f"adapter=lora: the base's cameras {list(self.cameras)} must be rendered at one size, "
                                 f"got {[tuple(i.shape[1:3]) for i in imgs]}")
        if noise is None:
            noise = torch.randn((B, self.chunk_size, self.action_dim), generator=self._generator)
        return {"images": torch.stack(imgs, 1),
                "state": torch.as_tensor(np.asarray(obs["observation.state"], dtype=np.float32)),
                "lang": self.base.embed_tasks(list(obs["task"])).detach().cpu(),
                "noise": noise.float().cpu()}

    def sample_normalized(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        """The adapted policy's chunk ``[B, K, A]`` in the base's normalised action units, from
        :meth:`inputs`; differentiable w.r.t. the adapters when gradients are enabled (the
        ``sample_steps`` Euler steps of the base's flow are unrolled)."""
        dev = self.device
        imgs = [images_to_tensor(inputs["images"][:, c], self.image_size, dev) for c in range(len(self.cameras))]
        state = self.base.normalizer.normalize("observation.state", inputs["state"].to(dev))
        self.net.eval()  # dropout off, whatever the loop sets: the rollout ran in eval mode too
        with _no_mha_fastpath():
            memory = self.net.encode(imgs, state, inputs["lang"].to(dev))
            x = inputs["noise"].to(dev)
            dt = 1.0 / self.sample_steps
            for i in range(self.sample_steps):
                t = torch.full((x.shape[0],), i * dt, device=dev)
                x = x + dt * self.net.velocity(x, t, memory)
        return x

    def _stage_units(self, x: torch.Tensor) -> torch.Tensor:
        """Base-normalised chunk → Stage 1's normalised units (unclamped, differentiable)."""
        if self.bundle is None:
            raise World2ActError("LoraPolicy: Stage-2 units need the Stage-1 bundle (pass bundle=)")
        env = self.base.normalizer.unnormalize("action", x).float().cpu()
        return torch.as_tensor(self.bundle.normalize_actions(env), dtype=torch.float32)

    @torch.no_grad()
    def chunk_parts(self, obs: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """(frozen base chunk, adapted − base), ``[B, K, A]`` each in Stage 1's normalised units,
        from the same noise; the base's inputs are kept in :attr:`last_inputs` for the update."""
        inp = self.inputs(obs)
        adapted = self._stage_units(self.sample_normalized(inp))
        base = self._stage_units(self.base.net.sample(self.base.encode_obs(obs), inp["noise"].to(self.device),
                                                      self.base.config.flow_steps))
        self.last_inputs = inp
        return base, adapted - base

    def combined_chunk(self, batch) -> torch.Tensor:
        """Stage 2's ``chunk_fn``: the adapted chunks ``[N·T, K, A]`` (Stage 1's normalised units,
        the space of base + Δa) re-sampled with gradient from ``batch.base_inputs``."""
        if getattr(batch, "base_inputs", None) is None:
            raise World2ActError("adapter=lora: the rollout batch carries no base_inputs (rollout(record_inputs=True))")
        flat = {k: v.reshape(-1, *v.shape[2:]) for k, v in batch.base_inputs.items()}
        return self._stage_units(self.sample_normalized(flat))

    def to_env_actions(self, actions_norm: torch.Tensor) -> torch.Tensor:
        """Stage-1 normalised ``[B, K, A]`` → environment units, clipped to the action box [-1, 1]."""
        return torch.as_tensor(self.bundle.unnormalize_actions(actions_norm), dtype=torch.float32).clamp(-1.0, 1.0)

    # ------------------------------------------------------------------ contract
    def reset(self) -> None:
        super().reset()
        self.base.reset()

    def seed(self, seed: int) -> None:
        super().seed(seed)
        self.base.seed(seed)

    @torch.no_grad()
    def predict_action_chunk(self, obs: dict) -> torch.Tensor:
        """``[B, K, A]`` float32 in environment units: the adapted base's flow-matching sample."""
        return self.base.to_env_actions(self.sample_normalized(self.inputs(obs)))

    def describe(self) -> dict:
        return {**super().describe(), "adapter": "lora", "rank": self.config.rank, "targets": self.target_names}

    # ------------------------------------------------------------------ files
    def adapter_state(self) -> dict[str, torch.Tensor]:
        """The LoRA weights only (``<module>.lora_A.default.weight`` …)."""
        return {k: v.detach().cpu().clone() for k, v in self.net.state_dict().items() if "lora_" in k}

    def load_adapter_state(self, sd: dict[str, torch.Tensor], where: str) -> None:
        """Load :meth:`adapter_state`.

        Raises:
            World2ActError: the weights do not fit the adapters of the config (names the file).
        """
        mine = self.adapter_state()
        missing, unexpected = sorted(set(mine) - set(sd)), sorted(set(sd) - set(mine))
        bad = sorted(k for k in set(mine) & set(sd) if mine[k].shape != sd[k].shape)
        if missing or unexpected or bad:
            raise World2ActError(f"{where}: LoRA weights do not match the config (missing {missing[:3]}, "
                                 f"unexpected {unexpected[:3]}, shape mismatch {bad[:3]})")
        self.net.load_state_dict(sd, strict=False)

    def save(self, path: str | Path, *, base_source: str | Path) -> None:
        """Write the self-contained policy folder (see the module docstring)."""
        from safetensors.torch import save_file

        if str(base_source).startswith("remote://"):
            raise World2ActError("adapter=lora: a served base cannot be adapted; base_source must be a policy folder")
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        copy_component(base_source, path / "base")
        with atomic_path(path / ADAPTER_FILE) as tmp:
            save_file(self.adapter_state(), str(tmp), metadata={"format": "world2act-lora-v1"})
        write_json(path / "config.json", {"type": TYPE, "base": "base", "lora": dataclasses.asdict(self.config),
                                          "target_modules": self.target_names, "base_policy": self.base.describe()})

    @classmethod
    def load(cls, path: str | Path, *, benchmark: str | None = None, device: str = "cpu") -> "LoraPolicy":
        """Load a folder written by :meth:`save` (no Stage-1 bundle: evaluation does not need one).

        Raises:
            World2ActError: a missing part (names it) or weights that do not fit the config.
        """
        from safetensors.torch import load_file

        path = Path(path)
        cfg = read_json(path / "config.json")
        for part in (cfg.get("base", "base"), ADAPTER_FILE):
            if not (path / part).exists():
                raise World2ActError(f"{path}: LoRA policy folder is missing {part}")
        if not isinstance(cfg.get("lora"), dict):
            raise World2ActError(f"{path / 'config.json'}: no \"lora\" section")
        fields = {f.name for f in dataclasses.fields(LoraAdapterConfig)}
        unknown = set(cfg["lora"]) - fields
        if unknown:
            raise World2ActError(f"{path / 'config.json'}: unknown lora key(s) {sorted(unknown)}; valid: {sorted(fields)}")
        base = load_policy(path / cfg.get("base", "base"), benchmark=benchmark, device=device)
        policy = cls(base, LoraAdapterConfig(**cfg["lora"]))
        try:
            sd = load_file(str(path / ADAPTER_FILE))
        except Exception as e:  # noqa: BLE001
            raise World2ActError(f"{path / ADAPTER_FILE}: unreadable weights ({type(e).__name__}: {e})") from None
        policy.load_adapter_state(sd, str(path / ADAPTER_FILE))
        return policy

    # ------------------------------------------------------------------ training checkpoints
    def save_training_state(self, folder: str | Path, opt: torch.optim.Optimizer, iteration: int) -> None:
        """Resumable checkpoint (:mod:`world2act.utils.training`): LoRA weights, optimiser state, iteration."""
        from world2act.utils.training import save_training_state

        save_training_state(folder, model_state=self.adapter_state(), optimizer=opt, step=int(iteration))

    def load_training_state(self, folder: str | Path, opt: torch.optim.Optimizer) -> int:
        """Restore :meth:`save_training_state`; returns the iteration to continue from."""
        from world2act.utils.training import load_training_state

        st = load_training_state(folder, optimizer=opt)
        self.load_adapter_state(dict(st.model_state), str(st.folder))
        return st.step


def _load(path: Path, *, benchmark: str | None = None, device: str = "cpu") -> LoraPolicy:
    return LoraPolicy.load(path, benchmark=benchmark, device=device)


register_policy_type(TYPE, _load)
