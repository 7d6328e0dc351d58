"""Crash-safe file writing and JSON helpers.

Everything the project writes goes through :func:`atomic_write` (write to a temporary file in
the same folder, fsync, then ``os.replace``) so a killed process never leaves a half-written
artifact behind: either the old file or the complete new one is there.
"""
from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from world2act import World2ActError


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on clean exit it is renamed onto ``path``.

    Use for writers that want a file name (pyarrow, PyAV, safetensors, matplotlib). On an
    exception the temporary file is removed and ``path`` is untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp" + path.suffix, dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()
        raise


def atomic_write(path: str | os.PathLike, data: bytes | str) -> None:
    """Write ``data`` to ``path`` atomically (temp file + fsync + rename)."""
    with atomic_path(path) as tmp:
        mode = "wb" if isinstance(data, bytes) else "w"
        with open(tmp, mode) as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())


def _json_default(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    if hasattr(o, "__dataclass_fields__"):
        import dataclasses

        return dataclasses.asdict(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """Atomically write ``obj`` as indented JSON (numpy scalars/arrays and dataclasses allowed)."""
    atomic_write(path, json.dumps(obj, indent=2, default=_json_default) + "\n")


def read_json(path: str | os.PathLike) -> Any:
    """Read a JSON file.

    Raises:
        World2ActError: the file is missing or is not valid JSON (the message names the file).
    """
    path = Path(path)
    if not path.is_file():
        raise World2ActError(f"{path}: file not found")
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise World2ActError(f"{path}: not valid JSON ({e})") from None


def prepare_out_dir(out: str | os.PathLike, *, resume: bool = False, overwrite: bool = False) -> Path:
    """Create ``out`` or check that it may be used.

    An existing non-empty folder is refused unless ``resume`` (keep and continue) or
    ``overwrite`` (delete and start over).

    Raises:
        World2ActError: ``out`` exists, is non-empty, and neither flag is set; or ``out`` is a file.
    """
    import shutil

    out = Path(out)
    if out.exists() and not out.is_dir():
        raise World2ActError(f"{out}: exists and is not a folder")
    if out.is_dir() and any(out.iterdir()):
        if overwrite:
            shutil.rmtree(out)
        elif not resume:
            raise World2ActError(f"{out}: folder exists and is not empty (pass --resume to continue or --overwrite to replace it)")
    out.mkdir(parents=True, exist_ok=True)
    return out
