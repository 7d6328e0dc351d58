"""Base + World2Act residual as one policy (paper Sec. 4.2): ``a + Δa``.

The frozen base policy runs forward only (no gradient ever reaches it); the residual network
(:mod:`world2act.policies.residual_net`) reads the observation and the base chunk and adds a
correction in Stage-1 normalised action units. A post-trained policy folder is self-contained:

```
config.json              {"type": "residual", "residual": {...ResidualNetConfig...}, ...}
model.safetensors        residual weights (f_a excluded: it lives frozen in align/) + state normaliser;
                         an ensemble (``"ensemble": M`` in config.json) keeps member i under ``members.i.``
base/                    copy of the frozen base policy folder (loaded with load_policy); for a
                         base served elsewhere, {"type": "remote", "url": "remote://HOST:PORT"}
align/                   copy of the Stage-1 folder (f_a, g_a init, the action normaliser)
```
``world2act eval --policy DIR`` loads it like any other policy.
"""
from __future__ import annotations

import copy
import dataclasses
import shutil
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from world2act import World2ActError
from world2act.envs.registry import benchmark_spec
from world2act.policies.base import Policy
from world2act.policies.io import copy_component, load_policy, register_policy_type
from world2act.policies.residual_net import ResidualEnsemble, ResidualNet, ResidualNetConfig
from world2act.utils.io import atomic_path, read_json, write_json

_LIBERO_CAMERA = benchmark_spec("libero_object").default_camera  # "agentview"


class ResidualPolicy(Policy):
    """π = π_base + π_res with the base frozen.

    Args:
        base: the frozen base :class:`Policy` (its chunk size must equal Stage 1's K).
        bundle: the Stage-1 ``AlignmentBundle`` (f_a frozen, action normaliser).
        net: the :class:`ResidualNet`.
        align_dir: folder the bundle was loaded from (copied into saved policies).

    Raises:
        World2ActError: base and Stage 1 disagree on action dim or chunk size.
    """

    name = "base+world2act"

    def __init__(self, base: Policy, bundle, net: ResidualNet, align_dir: str | Path):
        super().__init__()
        if base.chunk_size != net.config.chunk_size or base.action_dim != net.config.action_dim:
            raise World2ActError(
                f"mismatched components: base policy chunk_size {base.chunk_size}, action_dim {base.action_dim} "
                f"but Stage 1 adapters expect chunk_size {net.config.chunk_size}, action_dim {net.config.action_dim}")
        self.base, self.bundle, self.residual = base, bundle, net.eval()
        self.align_dir = Path(align_dir)
        for attr in ("action_dim", "state_dim", "chunk_size", "cameras", "image_size", "benchmark"):
            setattr(self, attr, getattr(base, attr))
        if net.config.camera not in self.cameras:
            raise World2ActError(f"residual reads camera {net.config.camera!r} but the base policy only gets {list(self.cameras)}")
        self._state_mean = torch.zeros(net.config.state_dim)
        self._state_std = torch.ones(net.config.state_dim)
        self.state_norm_fitted = False

    # ------------------------------------------------------------------ construction
    @classmethod
    def create(cls, base: Policy, bundle, *, camera: str = _LIBERO_CAMERA, seed: int = 0,
               align_dir: str | Path | None = None, gate_init: float = 0.0, max_delta: float = 0.0,
               head: str = "decoder") -> "ResidualPolicy":
        """A fresh residual on top of ``base``: g_a copied from Stage 1, output gate at
        ``gate_init`` (0: the policy starts as the base exactly), trust region ``max_delta``
        (normalised action units, 0 = unbounded) and output ``head`` (:class:`ResidualNetConfig`)."""
        torch.manual_seed(seed)
        ac = bundle.config
        cfg = ResidualNetConfig(state_dim=int(base.state_dim), action_dim=int(ac.action_dim), chunk_size=int(ac.chunk_size),
                                latent_dim=int(ac.latent_dim), image_size=tuple(base.image_size), camera=camera,
                                gate_init=float(gate_init), max_delta=float(max_delta), head=head)
        net = ResidualNet(cfg, bundle.f_a, copy.deepcopy(bundle.g_a))
        return cls(base, bundle, net, align_dir or getattr(bundle, "path", ""))

    @classmethod
    def ensemble(cls, members: list["ResidualPolicy"], *, max_delta: float | None = None) -> "ResidualPolicy":
        """One policy whose correction is the mean of ``members``' (:class:`ResidualEnsemble`).

        The members must be fitted on the same base, Stage-1 folder and state normaliser (e.g. the
        same data with different seeds); the first member's base and bundle are kept.
        ``max_delta`` (normalised action units) replaces every member's trust region if given.

        Raises:
            World2ActError: no members, an ensemble among them, or state normalisers that differ.
        """
        if not members:
            raise World2ActError("an ensemble needs at least one residual policy")
        first = members[0]
        nets = []
        for i, m in enumerate(members):
            if isinstance(m.residual, ResidualEnsemble):
                raise World2ActError(f"ensemble member {i} is itself an ensemble")
            if not (torch.allclose(m._state_mean, first._state_mean) and torch.allclose(m._state_std, first._state_std)):
                raise World2ActError(f"ensemble member {i} was fitted with another state normaliser than member 0")
            net = m.residual
            net.action_adapter = first.bundle.f_a
            if max_delta is not None:
                net.config.max_delta = float(max_delta)
            nets.append(net)
        policy = cls(first.base, first.bundle, ResidualEnsemble(nets), first.align_dir)
        policy._state_mean, policy._state_std = first._state_mean, first._state_std
        policy.state_norm_fitted = first.state_norm_fitted
        return policy

    # ------------------------------------------------------------------ state normaliser
    def fit_state_norm(self, states: torch.Tensor) -> None:
        """Fit the residual's proprioception normaliser on ``[M, S]`` states from the first rollouts."""
        self._state_mean = states.float().mean(0)
        self._state_std = states.float().std(0).clamp(min=1e-2)
        self.state_norm_fitted = True

    def state_norm(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self._state_mean, self._state_std

    # ------------------------------------------------------------------ contract
    def reset(self) -> None:
        super().reset()
        self.base.reset()

    def seed(self, seed: int) -> None:
        super().seed(seed)
        self.base.seed(seed)

    def chunk_parts(self, obs: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """(base chunk, Δa), both ``[B, K, A]`` in Stage-1 normalised units; no gradient to the base."""
        with torch.no_grad():
            base_chunk = torch.as_tensor(self.base.predict_action_chunk(obs), dtype=torch.float32)
            base_norm = torch.as_tensor(self.bundle.normalize_actions(base_chunk), dtype=torch.float32)
        key = f"observation.images.{self.residual.config.camera}"
        img = torch.from_numpy(np.asarray(obs[key])).permute(0, 3, 1, 2).float() / 255.0
        st = torch.as_tensor(np.asarray(obs["observation.state"]), dtype=torch.float32)
        st = (st - self._state_mean) / self._state_std
        return base_norm, self.residual(img, st, base_norm)

    def to_env_actions(self, actions_norm: torch.Tensor) -> torch.Tensor:
        """Normalised ``[B, K, A]`` → environment units, clipped to the action box [-1, 1]."""
        return torch.as_tensor(self.bundle.unnormalize_actions(actions_norm), dtype=torch.float32).clamp(-1.0, 1.0)

    @torch.no_grad()
    def predict_action_chunk(self, obs: dict) -> torch.Tensor:
        """``[B, K, A]`` = base chunk + residual correction, environment units."""
        base_norm, delta = self.chunk_parts(obs)
        return self.to_env_actions(base_norm + delta)

    # ------------------------------------------------------------------ files
    def _weights(self) -> dict[str, torch.Tensor]:
        sd = {k: v.detach().contiguous() for k, v in self.residual.state_dict().items() if not _is_adapter_key(k)}
        sd["state_norm.mean"] = self._state_mean.contiguous()
        sd["state_norm.std"] = self._state_std.contiguous()
        return sd

    def _load_weights(self, sd: dict[str, torch.Tensor], where: str) -> None:
        self._state_mean, self._state_std = sd.pop("state_norm.mean"), sd.pop("state_norm.std")
        self.state_norm_fitted = True
        missing, unexpected = self.residual.load_state_dict(sd, strict=False)
        missing = [k for k in missing if not _is_adapter_key(k)]
        if missing or unexpected:
            raise World2ActError(f"{where}: residual weights do not match the config (missing {missing[:3]}, unexpected {unexpected[:3]})")

    def save(self, path: str | Path, *, base_source: str | Path) -> None:
        """Write the self-contained policy folder (see module docstring)."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        sources = [("base", base_source), ("align", self.align_dir)]
        if str(base_source).startswith("remote://"):  # a served base: base/ records where it runs
            from world2act.policies.remote import write_remote_folder

            if (path / "base").exists():
                shutil.rmtree(path / "base")
            write_remote_folder(path / "base", str(base_source))
            sources = sources[1:]
        for sub, src in sources:
            copy_component(src, path / sub)
        with atomic_path(path / "model.safetensors") as tmp:
            save_file(self._weights(), str(tmp))
        write_json(path / "config.json", {"type": "residual", "base": "base", "align": "align",
                                          "residual": dataclasses.asdict(self.residual.config),
                                          "ensemble": len(self.residual.members) if isinstance(self.residual, ResidualEnsemble) else 1,
                                          "base_policy": self.base.describe()})

    @classmethod
    def load(cls, path: str | Path, *, benchmark: str | None = None, device: str = "cpu") -> "ResidualPolicy":
        """Load a folder written by :meth:`save`.

        Raises:
            World2ActError: a missing part (names it) or weights that do not fit the config.
        """
        from world2act.align import AlignmentBundle

        path = Path(path)
        cfg = read_json(path / "config.json")
        for part in (cfg.get("base", "base"), cfg.get("align", "align"), "model.safetensors"):
            if not (path / part).exists():
                raise World2ActError(f"{path}: residual policy folder is missing {part}")
        base = load_policy(path / cfg["base"], benchmark=benchmark, device=device)
        bundle = AlignmentBundle.load(path / cfg["align"])
        rc = cfg["residual"]
        rc["image_size"] = tuple(rc["image_size"])
        nets = [ResidualNet(ResidualNetConfig(**rc), bundle.f_a, copy.deepcopy(bundle.g_a))
                for _ in range(int(cfg.get("ensemble", 1)))]
        net = nets[0] if cfg.get("ensemble", 1) == 1 else ResidualEnsemble(nets)
        policy = cls(base, bundle, net, path / cfg["align"])
        policy._load_weights(load_file(str(path / "model.safetensors")), str(path / "model.safetensors"))
        return policy

    # ------------------------------------------------------------------ training checkpoints
    def save_training_state(self, folder: str | Path, opt: torch.optim.Optimizer, iteration: int) -> None:
        """Resumable checkpoint (:mod:`world2act.utils.training`): residual weights with the state
        normaliser, optimiser state, iteration."""
        from world2act.utils.training import save_training_state

        save_training_state(folder, model_state=self._weights(), optimizer=opt, step=int(iteration))

    def load_training_state(self, folder: str | Path, opt: torch.optim.Optimizer) -> int:
        """Restore :meth:`save_training_state`; returns the iteration to continue from.

        Raises:
            World2ActError: no checkpoint, one from an older world2act (re-run without
                --resume), or weights / optimiser state that do not fit.
        """
        from world2act.utils.training import load_training_state

        st = load_training_state(folder, optimizer=opt)
        self._load_weights(dict(st.model_state), str(st.folder))
        return st.step


def _is_adapter_key(key: str) -> bool:
    """True for the frozen f_a's weights (``action_adapter.*``, ``members.i.action_adapter.*``),
    which live in align/ and are never saved with the residual."""
    return "action_adapter" in key.split(".")


register_policy_type("residual", ResidualPolicy.load)
