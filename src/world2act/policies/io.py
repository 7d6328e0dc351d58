"""Loading any policy from a folder (or ``"expert"``) through one registry.

A policy folder holds ``config.json`` whose ``"type"`` field names a registered loader:

* ``"flow"``: the built-in flow-matching base policy (``config.json`` + ``model.safetensors`` +
  ``normalizer.safetensors``), see :mod:`world2act.policies.flow_policy`;
* ``"residual"``: base + World2Act residual (registered by :mod:`world2act.policies.residual`);
* ``"lora"``: base + World2Act LoRA adapters (Table S2; :mod:`world2act.policies.lora_policy`);
* ``"remote"``: ``{"type": "remote", "url": "remote://HOST:PORT"}``, a policy served elsewhere
  (:mod:`world2act.policies.remote`);
* further types can be added with :func:`register_policy_type`.

``"expert"`` is not a folder: it is the scripted privileged-state expert behind the same
contract (:class:`world2act.policies.expert_policy.ExpertPolicy`). ``"remote://HOST:PORT"`` is
not a folder either: it is a client of ``world2act serve`` running there
(:class:`world2act.policies.remote.RemotePolicy`).
"""
from __future__ import annotations

import importlib
from pathlib import Path
from typing import Callable

from world2act import World2ActError
from world2act.policies.base import Policy

Loader = Callable[..., Policy]

_REGISTRY: dict[str, Loader] = {}
# types whose loader lives in a module that registers itself on import
_LAZY = {"flow": "world2act.policies.flow_policy", "residual": "world2act.policies.residual",
         "remote": "world2act.policies.remote", "lora": "world2act.policies.lora_policy"}


def register_policy_type(name: str, loader: Loader) -> None:
    """Register ``loader(path: Path, *, benchmark: str | None, device: str) -> Policy`` for
    folders whose ``config.json`` has ``"type": name``. Re-registering replaces the loader."""
    _REGISTRY[name] = loader


def policy_types() -> list[str]:
    """Names of the known policy types (registered or lazily importable)."""
    return sorted(set(_REGISTRY) | set(_LAZY))


def read_policy_config(path: str | Path) -> dict:
    """Read and minimally validate ``<path>/config.json``.

    Raises:
        World2ActError: not a folder, no ``config.json``, invalid JSON, or no ``"type"``.
    """
    from world2act.utils.io import read_json

    path = Path(path)
    if not path.exists():
        raise World2ActError(f"--policy {path}: no such folder (pass a policy folder or 'expert')")
    if not path.is_dir():
        raise World2ActError(f"--policy {path}: not a folder (a policy folder holds config.json, model.safetensors, normalizer.safetensors)")
    cfg_path = path / "config.json"
    if not cfg_path.is_file():
        raise World2ActError(f"--policy {path}: missing config.json (is this a policy folder? "
                             f"it holds {sorted(p.name for p in path.iterdir())[:8]})")
    cfg = read_json(cfg_path)
    if not isinstance(cfg, dict) or "type" not in cfg:
        raise World2ActError(f"{cfg_path}: no \"type\" field; valid types: {', '.join(policy_types())}")
    return cfg


def load_policy(path_or_name: str | Path, *, benchmark: str | None = None, device: str = "cpu") -> Policy:
    """Load a policy folder, the scripted expert with ``"expert"``, or a served policy with
    ``"remote://HOST:PORT"``.

    Args:
        path_or_name: a policy folder, ``"expert"``, or ``"remote://HOST:PORT[?timeout=S]"``.
        benchmark: the benchmark it will run on; when given, compatibility (action/state dims,
            cameras, benchmark family) is checked here, before any simulator starts. Required
            for ``"expert"``.
        device: torch device for learned policies.

    Raises:
        World2ActError: missing/mismatched files, unknown type, a remote server that does not
            answer within its timeout, or a policy that does not fit ``benchmark`` (the message
            names both sides).
    """
    if str(path_or_name) == "expert":
        from world2act.policies.expert_policy import ExpertPolicy

        if benchmark is None:
            raise World2ActError("--policy expert needs --benchmark (the expert is benchmark-specific)")
        return ExpertPolicy(benchmark)
    if str(path_or_name).startswith("remote://"):
        from world2act.policies.remote import RemotePolicy

        remote = RemotePolicy(str(path_or_name))
        if benchmark is not None:
            remote.check_compatible(benchmark, where=str(path_or_name))
        return remote
    path = Path(path_or_name)
    cfg = read_policy_config(path)
    ptype = str(cfg["type"])
    if ptype not in _REGISTRY and ptype in _LAZY:
        try:
            importlib.import_module(_LAZY[ptype])
        except ModuleNotFoundError as e:
            raise World2ActError(f"{path / 'config.json'}: policy type {ptype!r} is not available in this "
                                 f"installation ({e.name} missing)") from None
    if ptype not in _REGISTRY:
        raise World2ActError(f"{path / 'config.json'}: unknown policy type {ptype!r}; valid: {', '.join(policy_types())}")
    policy = _REGISTRY[ptype](path, benchmark=benchmark, device=device)
    if benchmark is not None:
        policy.check_compatible(benchmark, where=str(path))
    return policy


def copy_component(src: str | Path, dst: str | Path) -> None:
    """Copy a component folder (a base policy, a Stage-1 folder) into a policy folder being
    written, replacing what is there; nothing is done when both are the same folder.
    Checkpoints, caches and videos are left out (a saved policy needs only weights and configs)."""
    import shutil

    src, dst = Path(src), Path(dst)
    if dst.resolve() == src.resolve():
        return
    if dst.exists():
        shutil.rmtree(dst)
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("checkpoint*", "cache*", "*.mp4"))
