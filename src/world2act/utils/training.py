"""One training toolkit for every stage: resumable checkpoints, the learning-rate schedule, the EMA.

Checkpoint folder (:func:`save_training_state`, written as a whole: a temporary sibling folder
is filled and then swapped in, so a killed process leaves either the old or the new checkpoint)::

    model.safetensors    the model's state dict
    ema.safetensors      the EMA weights (when given)
    state.safetensors    every other tensor: optimiser moments, RNG states, ... (keyed by path)
    state.json           format, step, and the optimiser / scheduler / ``extra`` structure with
                         scalars inline and tensors as ``{"__tensor__": key}`` references

No pickle anywhere. Folders written by older versions of world2act (``optimizer.pt`` from
``torch.save``) are still read, with ``torch.load(weights_only=True)`` (tensors and plain
containers only, no arbitrary objects).

Schedule: :func:`cosine_lr_factor` is the one warm-up + cosine schedule of the project. It is
diffusers' ``get_cosine_schedule_with_warmup`` lifted to a floor (``floor + (1 - floor) ·
diffusers``), except that warm-up step ``s`` uses ``(s + 1) / warmup`` (diffusers ``s /
warmup``, i.e. learning rate 0 at step 0) and that it stays at the floor past ``total`` (diffusers'
cosine rises again); ``overlap=True`` is the world model's variant
(warm-up factor × a cosine over all steps). tests/test_training_toolkit.py checks both
relations numerically.

EMA: :class:`ModuleEMA` drives ``diffusers.training_utils.EMAModel`` (decay ``(1 + n) / (10 +
n)`` capped at ``decay``) on a second module that holds the averaged weights. Diffusers' first
update copies the weights (decay 0); the hand-written EMA it replaces kept 10 % of the
initial weights there. Every later update uses the same decay as before.
"""
from __future__ import annotations

import dataclasses
import functools
import math
import os
import shutil
from pathlib import Path
from typing import Any, Callable, Mapping

import torch

from world2act import World2ActError
from world2act.utils.io import read_json, write_json

FORMAT = "world2act-training-state"
VERSION = 1
MODEL = "model.safetensors"
EMA = "ema.safetensors"
TENSORS = "state.safetensors"
STATE = "state.json"
LEGACY_OPTIMIZER = "optimizer.pt"


# --------------------------------------------------------------------------- checkpoints
def _split(obj: Any, key: str, tensors: dict[str, torch.Tensor]) -> Any:
    """JSON-able copy of ``obj`` with every tensor moved into ``tensors`` under its path."""
    if torch.is_tensor(obj):
        if key in tensors:
            raise World2ActError(f"save_training_state: two tensors at {key!r}")
        tensors[key] = obj.detach().cpu().contiguous()
        return {"__tensor__": key}
    if isinstance(obj, Mapping):
        if all(isinstance(k, str) for k in obj):
            return {k: _split(v, f"{key}/{k}", tensors) for k, v in obj.items()}
        return {"__items__": [[k, _split(v, f"{key}/{k}", tensors)] for k, v in obj.items()]}
    if isinstance(obj, tuple):
        return {"__tuple__": [_split(v, f"{key}/{i}", tensors) for i, v in enumerate(obj)]}
    if isinstance(obj, list):
        return [_split(v, f"{key}/{i}", tensors) for i, v in enumerate(obj)]
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    if hasattr(obj, "item") and getattr(obj, "ndim", 1) == 0:  # numpy scalar
        return obj.item()
    raise World2ActError(f"save_training_state: cannot store a {type(obj).__name__} at {key!r}")


def _join(obj: Any, tensors: Mapping[str, torch.Tensor]) -> Any:
    """Inverse of :func:`_split`."""
    if isinstance(obj, dict):
        if set(obj) == {"__tensor__"}:
            return tensors[obj["__tensor__"]]
        if set(obj) == {"__tuple__"}:
            return tuple(_join(v, tensors) for v in obj["__tuple__"])
        if set(obj) == {"__items__"}:
            return {k: _join(v, tensors) for k, v in obj["__items__"]}
        return {k: _join(v, tensors) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_join(v, tensors) for v in obj]
    return obj


def _save_tensors(path: Path, tensors: Mapping[str, torch.Tensor]) -> None:
    from safetensors.torch import save_file

    save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(path), metadata={"format": FORMAT})


def save_training_state(folder: str | os.PathLike, *, model_state: Mapping[str, torch.Tensor],
                        optimizer: torch.optim.Optimizer | None = None, scheduler=None,
                        ema: Mapping[str, torch.Tensor] | None = None, step: int, extra: dict | None = None,
                        files: Mapping[str, Callable[[Path], Any]] | None = None) -> Path:
    """Write a resumable checkpoint to ``folder`` (replacing it as a whole; see the module doc).

    Args:
        model_state: the model's state dict (tensors).
        optimizer / scheduler: their ``state_dict()`` is stored (tensors in safetensors, the rest in JSON).
        ema: the EMA weights' state dict.
        step: the step to continue from.
        extra: anything else to restore (JSON-able values and tensors, nested freely).
        files: ``{name: writer}``; each ``writer(path)`` writes one more file into the checkpoint.

    Returns:
        ``folder``.
    """
    folder = Path(folder)
    tmp, old = folder.with_name(folder.name + ".tmp"), folder.with_name(folder.name + ".old")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    tensors: dict[str, torch.Tensor] = {}
    meta = {"format": FORMAT, "version": VERSION, "step": int(step),
            "optimizer": _split(optimizer.state_dict(), "optimizer", tensors) if optimizer is not None else None,
            "scheduler": _split(scheduler.state_dict(), "scheduler", tensors) if scheduler is not None else None,
            "extra": _split(dict(extra or {}), "extra", tensors)}
    _save_tensors(tmp / MODEL, model_state)
    if ema is not None:
        _save_tensors(tmp / EMA, ema)
    _save_tensors(tmp / TENSORS, tensors)
    for name, writer in (files or {}).items():
        writer(tmp / name)
    write_json(tmp / STATE, meta)
    shutil.rmtree(old, ignore_errors=True)
    if folder.exists():
        os.replace(folder, old)
    os.replace(tmp, folder)
    shutil.rmtree(old, ignore_errors=True)
    return folder


def checkpoint_folder(folder: str | os.PathLike) -> Path | None:
    """The complete checkpoint at ``folder`` (or its ``.old`` copy when a save was cut short
    between its two renames), or None when there is none."""
    folder = Path(folder)
    for d in (folder, folder.with_name(folder.name + ".old")):
        if (d / STATE).is_file():
            return d
    return None


@dataclasses.dataclass
class TrainingState:
    """What :func:`load_training_state` returns (the optimiser and scheduler are restored in place).

    Attributes:
        step: the step to continue from.
        model_state: the model's state dict (CPU tensors; empty for a legacy folder without
            ``model.safetensors``).
        ema_state: the EMA weights, or None.
        extra: the ``extra`` dict given to :func:`save_training_state` (tensors restored); for a
            legacy folder, its ``state.json`` without ``step``.
        folder: the folder read.
        legacy: True for a folder written by an older version (no scheduler state in it).
    """

    step: int
    model_state: dict[str, torch.Tensor]
    ema_state: dict[str, torch.Tensor] | None
    extra: dict
    folder: Path
    legacy: bool = False


def _legacy_error(folder: Path, what: str) -> World2ActError:
    return World2ActError(f"{folder}: checkpoint from an older world2act that this version cannot resume ({what}); "
                          "re-run without --resume (use --overwrite to start over)")


def load_training_state(folder: str | os.PathLike, *, optimizer: torch.optim.Optimizer | None = None,
                        scheduler=None) -> TrainingState:
    """Read a checkpoint written by :func:`save_training_state` and restore ``optimizer`` and
    ``scheduler`` in place; the model and EMA weights are returned for the caller to load.

    A folder from an older world2act (``state.json`` without a format; ``model.safetensors`` /
    ``ema.safetensors`` / ``optimizer.pt``) is read too, ``optimizer.pt`` with
    ``torch.load(weights_only=True)``; its scheduler is fast-forwarded to the saved step.

    Raises:
        World2ActError: no checkpoint, or an old one without what is asked for (the message
            says to re-run without --resume); or a state that does not fit the optimiser.
    """
    from safetensors.torch import load_file

    d = checkpoint_folder(folder)
    if d is None:
        raise World2ActError(f"{folder}: no checkpoint ({STATE} missing)")
    meta = read_json(d / STATE)
    opt_sd = sched_sd = None
    if meta.get("format") == FORMAT:
        tensors = load_file(str(d / TENSORS))
        opt_sd, sched_sd = _join(meta.get("optimizer"), tensors), _join(meta.get("scheduler"), tensors)
        extra, legacy = _join(meta.get("extra") or {}, tensors), False
    else:  # world2act <= issue 17: train-base / train-wm folders
        extra, legacy = {k: v for k, v in meta.items() if k != "step"}, True
        if "step" not in meta:
            raise _legacy_error(d, f"{STATE} has no step")
        if optimizer is not None:
            if not (d / LEGACY_OPTIMIZER).is_file():
                raise _legacy_error(d, "no optimiser state")
            opt_sd = torch.load(d / LEGACY_OPTIMIZER, map_location="cpu", weights_only=True)
    step = int(meta["step"])
    if optimizer is not None:
        if opt_sd is None:
            raise World2ActError(f"{d}: checkpoint holds no optimiser state")
        try:
            optimizer.load_state_dict(opt_sd)
        except (ValueError, KeyError, RuntimeError) as e:
            raise World2ActError(f"{d}: optimiser state does not fit this run ({str(e).splitlines()[0]})") from None
    if scheduler is not None:
        if sched_sd is not None:
            scheduler.load_state_dict(sched_sd)
        else:  # legacy: fast-forward to the saved step (what LambdaLR(..., last_epoch=step - 1) did)
            import warnings

            scheduler.last_epoch = step - 1
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)  # "lr_scheduler.step() before optimizer.step()"
                scheduler.step()
    model_state = load_file(str(d / MODEL)) if (d / MODEL).is_file() else {}
    ema_state = load_file(str(d / EMA)) if (d / EMA).is_file() else None
    return TrainingState(step, model_state, ema_state, extra, d, legacy)


# --------------------------------------------------------------------------- schedule
def _cosine(p: float, floor: float) -> float:
    return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * min(1.0, p)))


def cosine_lr_factor(step: int, total: int, warmup: int = 0, floor: float = 0.0, *, overlap: bool = False,
                     progress: float = 0.0) -> float:
    """Learning-rate multiplier at 0-based ``step``: linear warm-up, then a half cosine from 1 to ``floor``.

    Args:
        total: steps of the whole run; warmup: warm-up steps (``(step + 1) / warmup``).
        floor: the multiplier the cosine ends at.
        overlap: False (train-base, IDM, DreamGen): the cosine runs over the steps after the
            warm-up. True (the world model and its VAE): the warm-up factor multiplies a cosine
            that runs over all ``total`` steps.
        progress: a lower bound on the cosine's progress in [0, 1] (train-base's time budget:
            a run stopped by ``max_minutes`` still ends at the floor); ``overlap=False`` only.
    """
    if overlap:
        return min(1.0, (step + 1) / max(warmup, 1)) * _cosine(step / max(total, 1), floor)
    if step < warmup:
        return (step + 1) / warmup
    return _cosine(max((step - warmup) / max(1, total - warmup), progress), floor)


def cosine_scheduler(optimizer: torch.optim.Optimizer, total: int, warmup: int = 0, floor: float = 0.0, *,
                     overlap: bool = False) -> torch.optim.lr_scheduler.LambdaLR:
    """A ``LambdaLR`` following :func:`cosine_lr_factor` (its state is saved by :func:`save_training_state`)."""
    fn = functools.partial(cosine_lr_factor, total=total, warmup=warmup, floor=floor, overlap=overlap)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, fn)


# --------------------------------------------------------------------------- EMA
class ModuleEMA:
    """Exponential moving average of ``net``'s weights kept in ``shadow`` (a module of the same
    architecture: what gets saved and served), updated by diffusers' ``EMAModel``.

    Decay ``min(decay, (1 + n) / (10 + n))`` at the n-th update after the first (which copies);
    ``decay`` 0 copies the weights every step. Buffers are copied. ``step`` is how many updates
    were made before (to resume).
    """

    def __init__(self, net: torch.nn.Module, shadow: torch.nn.Module, decay: float, step: int = 0):
        from diffusers.training_utils import EMAModel

        self.shadow = shadow
        self._ema = EMAModel([], decay=float(decay), min_decay=0.0, foreach=True)
        self._ema.shadow_params = list(shadow.parameters())  # average in place, inside ``shadow``
        self._ema.optimization_step = int(step)
        if len(self._ema.shadow_params) != len(list(net.parameters())):
            raise World2ActError("ModuleEMA: shadow and net have different parameters")

    @property
    def updates(self) -> int:
        return int(self._ema.optimization_step)

    @torch.no_grad()
    def update(self, net: torch.nn.Module) -> None:
        """One EMA update from ``net``'s current weights."""
        self._ema.step(net.parameters())
        for be, bn in zip(self.shadow.buffers(), net.buffers()):
            be.copy_(bn)
