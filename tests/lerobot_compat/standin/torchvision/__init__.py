"""A minimal stand-in for ``torchvision``, used ONLY by the LeRobot round-trip tests.

``ledataset`` (the standalone copy of LeRobot's dataset code) imports torchvision at module
import (``transforms.ToTensor``) and decodes videos through ``torchvision.io.VideoReader`` with
the "pyav" backend. torchvision may not be installed on this project's machines (its registry
wheel needs CUDA libraries and breaks diffusers), so the tests put this folder on the
``PYTHONPATH`` of the separate LeRobot interpreter only. It implements exactly what
``ledataset`` calls, on PyAV: never put it on the project's own path.
"""
from __future__ import annotations

import numpy as np
import torch

__version__ = "0.0.0+world2act-standin"
_backend = "pyav"


def set_video_backend(backend: str) -> None:
    global _backend
    if backend != "pyav":
        raise RuntimeError(f"torchvision stand-in: only the 'pyav' backend exists, got {backend!r}")
    _backend = backend


def get_video_backend() -> str:
    return _backend


class _ToTensor:
    """PIL image / HWC uint8 array -> CHW float32 tensor in [0, 1]."""

    def __call__(self, pic):
        arr = np.asarray(pic)
        if arr.ndim == 2:
            arr = arr[:, :, None]
        t = torch.from_numpy(np.ascontiguousarray(arr.transpose(2, 0, 1)))
        return t.float().div(255.0) if t.dtype == torch.uint8 else t.float()


class _Transforms:
    ToTensor = _ToTensor


transforms = _Transforms()


class _VideoReader:
    """``torchvision.io.VideoReader(path, "video")`` on PyAV: iterate ``{"data": uint8 CHW, "pts": s}``."""

    def __init__(self, path: str, stream: str = "video") -> None:
        import av

        self.container = av.open(str(path))
        self._stream = self.container.streams.video[0]
        self._iter = None

    def seek(self, t: float, keyframes_only: bool = False) -> "_VideoReader":
        s = self._stream
        self.container.seek(int(t / s.time_base), stream=s, backward=True, any_frame=False)
        self._iter = None
        self._start = t if not keyframes_only else None
        return self

    def __iter__(self):
        return self

    def __next__(self):
        if self._iter is None:
            self._iter = self.container.decode(self._stream)
        frame = next(self._iter)
        data = torch.from_numpy(frame.to_ndarray(format="rgb24")).permute(2, 0, 1).contiguous()
        return {"data": data, "pts": float(frame.time)}


class _IO:
    VideoReader = _VideoReader


io = _IO()
