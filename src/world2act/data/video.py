"""MP4 video read/write with PyAV (libx264 by default; libsvtav1 for AV1).

Codec choice (measured, see ``docs/data.md``): H.264 (``libx264``), CRF 10, **4:2:0 chroma**
(``yuv420p``) by default: what web browsers and LeRobot's dataset viewers play. At the
project's 64×64 per camera 4:2:0 averages colours over 2×2 blocks, i.e. over a noticeable
share of an object a few pixels wide; the ``h264-444`` preset (``yuv444p``, the default before
2026-12) keeps full chroma and ``h264-lossless`` (``yuv444p``, CRF 0) is lossless up to the
RGB↔YUV rounding. See :data:`VIDEO_PRESETS`.

Colour conversion is done in numpy (BT.601, limited range, the FFmpeg default for untagged SD
video), and the streams are tagged as such so every decoder uses the same matrix.

Reading: :func:`read_video` decodes a whole file; :func:`read_video_span` seeks to a timestamp
and decodes only the frames of one span (LeRobot packs many episodes into one file).

Writes are atomic (temporary file + rename): a killed writer never leaves a truncated ``.mp4``
under the final name.
"""
from __future__ import annotations

import os
from fractions import Fraction
from pathlib import Path

import numpy as np

from world2act import World2ActError
from world2act.utils.io import atomic_path

#: Default encoder settings (the ``h264`` preset). ``crf`` 0 is lossless in YUV.
DEFAULT_CODEC = "libx264"
DEFAULT_PIX_FMT = "yuv420p"
DEFAULT_CRF = 10
DEFAULT_PRESET = "veryfast"

#: Named encoder settings (``--video-codec`` of ``collect`` and ``segment``).
VIDEO_PRESETS: dict[str, dict] = {
    "h264": {"codec": "libx264", "pix_fmt": "yuv420p", "crf": 10, "preset": "veryfast"},
    "h264-444": {"codec": "libx264", "pix_fmt": "yuv444p", "crf": 10, "preset": "veryfast"},
    "h264-lossless": {"codec": "libx264", "pix_fmt": "yuv444p", "crf": 0, "preset": "veryfast"},
    "av1": {"codec": "libsvtav1", "pix_fmt": "yuv420p", "crf": 30, "preset": "8"},
}
DEFAULT_VIDEO_PRESET = "h264"


def video_preset(name: str) -> dict:
    """Encoder settings ``{codec, pix_fmt, crf, preset}`` of a :data:`VIDEO_PRESETS` name.

    Raises:
        World2ActError: an unknown name (the valid ones are listed).
    """
    if name not in VIDEO_PRESETS:
        raise World2ActError(f"--video-codec {name!r}: valid choices are {', '.join(VIDEO_PRESETS)}")
    return dict(VIDEO_PRESETS[name])


def codec_tag(codec: str) -> str:
    """LeRobot's ``video.codec`` name of an encoder (``libx264`` → ``h264``, ``libsvtav1`` → ``av1``)."""
    c = codec.lower()
    if "264" in c:
        return "h264"
    if "265" in c or "hevc" in c:
        return "hevc"
    if "av1" in c:
        return "av1"
    return c


# BT.601 limited ("tv") range, the FFmpeg/swscale default for untagged SD video. Doing the
# colour conversion in numpy is ~20x faster than swscale's per-frame path at 64x64 and agrees
# with it to within 1 grey level.
_RGB2YUV = np.array([[0.256788, 0.504129, 0.097906],
                     [-0.148223, -0.290993, 0.439216],
                     [0.439216, -0.367788, -0.071427]], dtype=np.float32)
_YUV2RGB = np.linalg.inv(_RGB2YUV).astype(np.float32)
_YUV_OFFSET = np.array([16.0, 128.0, 128.0], dtype=np.float32)


def _mix(planes: list[np.ndarray], matrix: np.ndarray, offset: np.ndarray, out: np.ndarray, axis: int) -> None:
    # Channel-wise multiply-adds (a [N, 3] @ [3, 3] matmul is slow in numpy for tiny inner dims).
    for k in range(3):
        acc = planes[0] * matrix[k, 0] + planes[1] * matrix[k, 1] + planes[2] * matrix[k, 2] + offset[k]
        np.clip(np.rint(acc, out=acc), 0, 255, out=acc)
        idx = [slice(None)] * out.ndim
        idx[axis] = k
        out[tuple(idx)] = acc


def rgb_to_yuv444(frames: np.ndarray) -> np.ndarray:
    """uint8 RGB ``[T, H, W, 3]`` -> uint8 planar YUV 4:4:4 ``[T, 3, H, W]`` (BT.601, limited range)."""
    T, H, W, _ = frames.shape
    planes = [frames[..., c].astype(np.float32) for c in range(3)]
    out = np.empty((T, 3, H, W), np.uint8)
    _mix(planes, _RGB2YUV, _YUV_OFFSET, out, axis=1)
    return out


def yuv444_to_rgb(planes: np.ndarray) -> np.ndarray:
    """uint8 planar YUV 4:4:4 ``[T, 3, H, W]`` (BT.601, limited range) -> uint8 RGB ``[T, H, W, 3]``."""
    T, _, H, W = planes.shape
    chans = [planes[:, c].astype(np.float32) - _YUV_OFFSET[c] for c in range(3)]
    out = np.empty((T, H, W, 3), np.uint8)
    _mix(chans, _YUV2RGB, np.zeros(3, np.float32), out, axis=3)
    return out


def _chroma_420(planes: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Planar 4:4:4 ``[T, 3, H, W]`` (H, W even) -> Y ``[T, H, W]``, U, V ``[T, H/2, W/2]`` (2×2 means)."""
    T, _, H, W = planes.shape
    c = planes[:, 1:].astype(np.uint16).reshape(T, 2, H // 2, 2, W // 2, 2).sum(axis=(3, 5))
    c = ((c + 2) // 4).astype(np.uint8)
    return planes[:, 0], c[:, 0], c[:, 1]


def _planar_frame(av, planes: list[np.ndarray], fmt: str):
    """An ``av.VideoFrame`` of planar format ``fmt`` from its uint8 planes (Y, U, V).

    Fills every byte of each plane buffer (row padding included) so the encoder never sees
    uninitialised memory.
    """
    H, W = planes[0].shape
    frame = av.VideoFrame(W, H, fmt)
    for plane, arr in zip(frame.planes, planes):
        h, w = arr.shape
        ls = plane.line_size
        if ls == w and plane.buffer_size == h * w:
            plane.update(np.ascontiguousarray(arr).tobytes())
        else:
            buf = np.zeros(plane.buffer_size, np.uint8)
            buf[: h * ls].reshape(h, ls)[:, :w] = arr
            plane.update(buf.tobytes())
    return frame


def _plane_array(plane, h: int, w: int) -> np.ndarray:
    """A decoded frame plane as ``[h, w]`` uint8 (row padding dropped)."""
    buf = np.frombuffer(memoryview(plane), np.uint8)
    return buf[: h * plane.line_size].reshape(h, plane.line_size)[:, :w]


def _rate(fps: float) -> Fraction:
    if not (fps > 0 and np.isfinite(fps)):
        raise World2ActError(f"fps must be a positive number, got {fps!r}")
    return Fraction(fps).limit_denominator(1001)


def write_video(
    path: str | os.PathLike,
    frames: np.ndarray,
    fps: float,
    *,
    codec: str = DEFAULT_CODEC,
    pix_fmt: str | None = None,
    crf: int = DEFAULT_CRF,
    preset: str = DEFAULT_PRESET,
    gop: int | None = None,
) -> None:
    """Encode ``frames`` to an MP4 file at ``path``, atomically.

    Args:
        path: output file (``.mp4``); parent folders are created.
        frames: ``[T, H, W, 3]`` uint8 RGB, T ≥ 1.
        fps: frame rate in Hz (e.g. 20 for LIBERO control rate).
        codec: PyAV/FFmpeg encoder name (``libx264`` default, ``libsvtav1`` for AV1). ``crf``
            and ``preset`` are passed to x264/x265 and SVT-AV1 encoders only.
        pix_fmt: ``yuv420p`` (what browsers play), ``yuv444p`` (full chroma), or None: yuv420p,
            or yuv444p when H or W is odd (4:2:0 needs even sizes).
        crf: constant rate factor (x264: 0 lossless .. 51 worst).
        preset: encoder speed preset.
        gop: keyframe interval in frames (None = the encoder's default; LeRobot uses 2 for
            fast random access).

    Raises:
        World2ActError: bad frame array or fps, yuv420p with an odd size, or the encoder
            fails (message names ``path``).
    """
    import av

    path = Path(path)
    frames = np.asarray(frames)
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3 or frames.shape[0] == 0:
        raise World2ActError(f"{path}: frames must be uint8 [T, H, W, 3] with T >= 1, got {frames.dtype} {frames.shape}")
    T, H, W, _ = frames.shape
    if pix_fmt is None:
        pix_fmt = DEFAULT_PIX_FMT if not (H % 2 or W % 2) else "yuv444p"
    if pix_fmt.endswith("420p") and (H % 2 or W % 2):
        raise World2ActError(f"{path}: {pix_fmt} needs even height and width, got {H}x{W} (use yuv444p)")
    rate = _rate(fps)
    try:
        with atomic_path(path) as tmp:
            with av.open(str(tmp), mode="w", format="mp4") as container:
                stream = _add_stream(container, codec, rate, W, H, pix_fmt, crf, preset, gop)
                _encode_frames(av, container, stream, frames, pix_fmt)
    except World2ActError:
        raise
    except (av.error.FFmpegError, ValueError, OSError) as e:
        raise World2ActError(f"{path}: could not write video ({type(e).__name__}: {e})") from None


def _add_stream(container, codec: str, rate: Fraction, W: int, H: int, pix_fmt: str, crf: int, preset: str,
                gop: int | None):
    """The video stream of ``container``: size, pixel format, time base, encoder options (crf and
    preset for x264/x265/SVT-AV1, keyframe interval), one encoder thread and, for the numpy
    conversion, the BT.601 limited-range colour tags."""
    stream = container.add_stream(codec, rate=rate)
    stream.width, stream.height, stream.pix_fmt = W, H, pix_fmt
    stream.time_base = Fraction(1, 1) / rate
    opts = {"crf": str(int(crf)), "preset": str(preset)} if any(
        k in codec for k in ("264", "265", "svtav1")) else {}
    if gop is not None:
        opts["g"] = str(int(gop))
    if opts:
        stream.options = opts
    cc = stream.codec_context
    # Single-threaded encode: deterministic bytes and polite on shared CPUs.
    cc.thread_count = 1
    if pix_fmt in ("yuv444p", "yuv420p"):  # tag what the numpy conversion does: BT.601, limited range
        cc.colorspace, cc.color_range, cc.color_primaries, cc.color_trc = 6, 1, 6, 6
    return stream


def _encode_frames(av, container, stream, frames: np.ndarray, pix_fmt: str) -> None:
    """Convert ``frames`` (numpy for yuv444p / yuv420p, FFmpeg otherwise), encode and mux them,
    then flush the encoder."""
    T = frames.shape[0]
    numpy_path = pix_fmt in ("yuv444p", "yuv420p")
    yuv = rgb_to_yuv444(frames) if numpy_path else None
    if pix_fmt == "yuv420p":
        Y, U, V = _chroma_420(yuv)
    for t in range(T):
        if pix_fmt == "yuv444p":
            frame = _planar_frame(av, [yuv[t, 0], yuv[t, 1], yuv[t, 2]], "yuv444p")
        elif pix_fmt == "yuv420p":
            frame = _planar_frame(av, [Y[t], U[t], V[t]], "yuv420p")
        else:
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(frames[t]), format="rgb24")
        # Set explicitly: left as allocated, x264 output varied between identical
        # runs in ~10% of encodes (measured); with this it is byte-identical.
        frame.pict_type = av.video.frame.PictureType.NONE
        frame.pts = t
        for packet in stream.encode(frame):
            container.mux(packet)
    for packet in stream.encode():
        container.mux(packet)


_BT601 = (0, 2, 5, 6)  # colorspace codes decoded with the numpy BT.601 path (unspecified, 470BG, 170M)


class _Converter:
    """Collects decoded frames and converts them to RGB in batches (numpy for BT.601 tv-range
    yuv444p / yuv420p, FFmpeg's swscale otherwise)."""

    def __init__(self) -> None:
        self.rgb: list[np.ndarray] = []
        self._planar: list[np.ndarray] = []  # [3, H, W] yuv444 planes pending conversion

    def _flush(self) -> None:
        if self._planar:
            self.rgb.extend(yuv444_to_rgb(np.stack(self._planar)))
            self._planar = []

    def add(self, frame) -> None:
        name = frame.format.name
        cc = int(frame.colorspace) if frame.colorspace is not None else 2
        tv = int(frame.color_range) in (0, 1)  # unspecified or MPEG (limited)
        if name in ("yuv444p", "yuv420p") and cc in _BT601 and tv:
            H, W = frame.height, frame.width
            y = _plane_array(frame.planes[0], H, W)
            if name == "yuv444p":
                u = _plane_array(frame.planes[1], H, W)
                v = _plane_array(frame.planes[2], H, W)
            else:
                h2, w2 = (H + 1) // 2, (W + 1) // 2
                u = np.repeat(np.repeat(_plane_array(frame.planes[1], h2, w2), 2, 0), 2, 1)[:H, :W]
                v = np.repeat(np.repeat(_plane_array(frame.planes[2], h2, w2), 2, 0), 2, 1)[:H, :W]
            self._planar.append(np.stack([y, u, v]))
        else:
            self._flush()
            self.rgb.append(frame.to_ndarray(format="rgb24"))

    def __len__(self) -> int:
        return len(self.rgb) + len(self._planar)

    def result(self) -> np.ndarray:
        self._flush()
        return np.stack(self.rgb)


def read_video(path: str | os.PathLike) -> np.ndarray:
    """Decode every frame of a video file.

    Args:
        path: a video file written by :func:`write_video` (or any FFmpeg-readable video:
            H.264, AV1, ...).

    Returns:
        ``[T, H, W, 3]`` uint8 RGB frames, in presentation order.

    Raises:
        World2ActError: the file is missing, unreadable, corrupt, or has no video frames
            (the message names ``path``).
    """
    import av

    path = Path(path)
    if not path.is_file():
        raise World2ActError(f"{path}: video file not found")
    conv = _Converter()
    try:
        with av.open(str(path), mode="r") as container:
            if not container.streams.video:
                raise World2ActError(f"{path}: no video stream in file")
            for frame in container.decode(container.streams.video[0]):
                conv.add(frame)
    except World2ActError:
        raise
    except (av.error.FFmpegError, ValueError, OSError, EOFError) as e:
        raise World2ActError(f"{path}: corrupt or unreadable video ({type(e).__name__}: {e})") from None
    if not len(conv):
        raise World2ActError(f"{path}: video has no decodable frames")
    return conv.result()


def read_video_span(path: str | os.PathLike, start_s: float, num_frames: int, fps: float) -> np.ndarray:
    """Decode the ``num_frames`` frames at ``start_s + k / fps`` (k = 0 … num_frames − 1).

    Seeks to the last keyframe at or before ``start_s`` and decodes forward only as far as the
    span's last frame, so reading one episode of a file that packs many (LeRobot v3) costs
    about the episode's own length. A frame is matched to slot ``k`` when its presentation
    time is within half a frame period of ``start_s + k / fps``.

    Raises:
        World2ActError: missing/corrupt file, or fewer than ``num_frames`` frames in the span
            (the message names ``path`` and how many frames it has there).
    """
    import av

    path = Path(path)
    if not path.is_file():
        raise World2ActError(f"{path}: video file not found")
    T = int(num_frames)
    period = 1.0 / float(fps)
    slots: list = [None] * T
    found = 0
    try:
        with av.open(str(path), mode="r") as container:
            if not container.streams.video:
                raise World2ActError(f"{path}: no video stream in file")
            stream = container.streams.video[0]
            if start_s > 0.5 * period:
                container.seek(max(0, int((start_s - 0.5 * period) / stream.time_base)), stream=stream,
                               backward=True, any_frame=False)
            n = 0
            for frame in container.decode(stream):
                t = frame.time if frame.time is not None else n * period
                n += 1
                k = int(round((t - start_s) / period))
                if k < 0 or abs(t - start_s - k * period) > 0.5 * period:
                    continue
                if k >= T:
                    break
                if slots[k] is None:
                    found += 1
                slots[k] = frame
                if found == T and k == T - 1:
                    break
            conv = _Converter()
            for f in slots:
                if f is not None:
                    conv.add(f)
    except World2ActError:
        raise
    except (av.error.FFmpegError, ValueError, OSError, EOFError) as e:
        raise World2ActError(f"{path}: corrupt or unreadable video ({type(e).__name__}: {e})") from None
    if found < T:
        raise World2ActError(f"{path}: video has {found} frames in the span from {start_s:.4f} s, "
                             f"{T} needed (frames {start_s * fps:.0f}..{start_s * fps + T - 1:.0f} at {fps:g} fps)")
    return conv.result()
