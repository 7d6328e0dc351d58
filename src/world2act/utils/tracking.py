"""Experiment tracking: ``--log-with tensorboard|wandb|trackio|none`` for the training commands.

A thin layer over accelerate's tracker classes (:mod:`accelerate.tracking`), so the curves
go where accelerate users already look. :func:`make_tracker` returns an object with
``log(values, step)`` and ``close()``; with ``none`` (the default) it does nothing and
writes nothing.

Where the records go (all offline by default):

- ``tensorboard``: event files in ``RUN/tensorboard/`` (``tensorboard --logdir RUN``; under a
  pipeline folder every stage shows up as its own run, e.g. ``align/tensorboard``).
- ``wandb``: an offline run in ``RUN/wandb/`` (``WANDB_MODE`` defaults to ``offline``;
  ``wandb sync RUN/wandb/offline-run-*`` uploads it; set ``WANDB_MODE=online`` to stream).
  Project ``WANDB_PROJECT`` (default ``world2act``), run name = the command.
- ``trackio``: trackio's local store (no Space unless ``TRACKIO_SPACE_ID`` is set);
  ``trackio show`` opens the dashboard. Project ``TRACKIO_PROJECT`` (default ``world2act``).

``log`` flattens nested dicts into ``a/b`` tags, keeps numbers only (strings, lists and
``None`` are skipped; bools become 0/1) and drops the x-axis keys ``step`` and ``iteration``.
"""
from __future__ import annotations

import importlib.util
import numbers
import os
from pathlib import Path

from world2act import World2ActError

BACKENDS = ("none", "tensorboard", "wandb", "trackio")
# backend -> (modules any one of which suffices, pip package to name in the error)
_PACKAGES = {"tensorboard": (("tensorboard", "tensorboardX"), "tensorboard"),
             "wandb": (("wandb",), "wandb"),
             "trackio": (("trackio",), "trackio")}
_AXIS_KEYS = ("step", "iteration")


def add_argument(parser) -> None:
    """Add ``--log-with`` to a command's argument parser."""
    parser.add_argument("--log-with", choices=list(BACKENDS), default="none",
                        help="experiment tracker for the training curves (default none; offline: "
                             "tensorboard -> OUT/tensorboard, wandb -> OUT/wandb offline run, trackio -> local store)")


def check_backend(log_with: str | None) -> str:
    """Return the backend name, or raise a one-line :class:`World2ActError` (unknown / not installed)."""
    name = (log_with or "none").lower()
    if name not in BACKENDS:
        raise World2ActError(f"--log-with {log_with!r}: valid are {', '.join(BACKENDS)}")
    if name != "none":
        mods, pip_name = _PACKAGES[name]
        if not any(importlib.util.find_spec(m) is not None for m in mods):
            raise World2ActError(f"--log-with {name}: the {pip_name!r} package is not installed (pip install {pip_name})")
    return name


def flatten(values: dict, prefix: str = "", _top: bool = True) -> dict[str, float]:
    """Numeric leaves of a nested dict as ``{prefix + "a/b": float}`` (see the module docstring)."""
    flat: dict[str, float] = {}
    for k, v in (values or {}).items():
        if _top and k in _AXIS_KEYS:
            continue
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            flat.update(flatten(v, key + "/", _top=False))
        elif isinstance(v, bool):
            flat[key] = float(v)
        elif isinstance(v, numbers.Real) or (hasattr(v, "item") and getattr(v, "ndim", 1) == 0):
            try:
                flat[key] = float(v)
            except (TypeError, ValueError):
                pass
    return flat


def _hparams(config: dict) -> dict:
    """Config as flat ``{key: bool|int|float|str}`` (what every tracker's hyper-parameter store accepts)."""
    out = {}
    for k, v in (config or {}).items():
        if isinstance(v, dict):
            out.update({f"{k}/{kk}": vv for kk, vv in _hparams(v).items()})
        elif v is None or isinstance(v, (bool, int, float, str)):
            out[k] = "" if v is None else v
        else:
            out[k] = str(v)
    return out


class Tracker:
    """No-op tracker (``--log-with none``); the base of :class:`AccelerateTracker`."""

    backend = "none"

    def log(self, values: dict, step: int | None = None, prefix: str = "") -> None:
        """Log the numeric leaves of ``values`` at ``step`` (tags ``prefix + key``)."""

    def close(self) -> None:
        """Flush and finish the run (safe to call twice)."""

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


NO_TRACKER = Tracker()  # the shared no-op, e.g. a default argument


class AccelerateTracker(Tracker):
    """One of accelerate's ``GeneralTracker`` classes behind :class:`Tracker`'s interface."""

    def __init__(self, backend: str, inner) -> None:
        self.backend = backend
        self.inner = inner
        self._closed = False

    def log(self, values: dict, step: int | None = None, prefix: str = "") -> None:
        flat = flatten(values, prefix)
        if flat and not self._closed:
            self.inner.log(flat, step=None if step is None else int(step))

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self.inner.finish()


def make_tracker(log_with: str | None, run_dir: str | os.PathLike, name: str, config: dict | None = None) -> Tracker:
    """A tracker for one command run.

    Args:
        log_with: ``none`` | ``tensorboard`` | ``wandb`` | ``trackio``.
        run_dir: the command's ``--out`` folder (TensorBoard and wandb write under it).
        name: the run's name (the command, e.g. ``align``).
        config: hyper-parameters stored with a wandb / trackio run (flattened; non-scalars as
            strings). TensorBoard runs leave them out: accelerate's ``add_hparams`` would add a
            second, timestamped run per command; they are in the command's ``manifest.json``.

    Raises:
        World2ActError: unknown backend, or its package is not installed (names the pip package).
    """
    backend = check_backend(log_with)
    if backend == "none":
        return Tracker()
    from accelerate import tracking

    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    hp = _hparams(config or {})  # given to wandb/trackio's init (their config); TensorBoard: see the docstring
    if backend == "tensorboard":
        inner = tracking.TensorBoardTracker("tensorboard", run_dir)  # events in RUN/tensorboard/
    elif backend == "wandb":
        os.environ.setdefault("WANDB_MODE", "offline")
        inner = tracking.WandBTracker(os.environ.get("WANDB_PROJECT", "world2act"), name=name, dir=str(run_dir),
                                      mode=os.environ["WANDB_MODE"], config=hp)
    else:
        kw = {"space_id": os.environ["TRACKIO_SPACE_ID"]} if os.environ.get("TRACKIO_SPACE_ID") else {}
        inner = tracking.TrackioTracker(os.environ.get("TRACKIO_PROJECT", "world2act"), name=name, config=hp, **kw)
    inner.start()
    return AccelerateTracker(backend, inner)

