"""Alignment between world-model latent frames and control steps (actions).

Pure Python (no torch / diffusers import) so every stage can use it cheaply.

Conventions (paper Sec. 4.1 uses WM video latents per latent frame as the targets for action
chunks; the Wan VAE of Cosmos-Predict2 compresses time 4x, causally):

* A world-model clip has ``T`` frames sampled every ``frame_stride`` = ``s`` control steps:
  clip frame ``i`` is the observation *before* control step ``start + s*i`` (LeRobot row
  convention: row ``t`` = observation before step ``t`` + action at step ``t``).
* The causal Wan VAE maps ``T = 1 + 4n`` frames to ``T' = 1 + n`` latent frames. Latent frame
  0 encodes clip frame 0 alone (the conditioning frame); latent frame ``j >= 1`` encodes clip
  frames ``4j-3 .. 4j``.
* Hence latent frame ``j >= 1`` is explained by the actions executed between clip frame
  ``4(j-1)`` and clip frame ``4j``: control steps ``[4*s*(j-1), 4*s*j)`` relative to the
  clip's first frame, i.e. ``K = 4*s`` actions (16 with the default ``s = 4``). Latent frame 0
  gets **no** actions (empty range ``(0, 0)``).

With the defaults (17 frames, ``s = 4``) a clip spans 64 control steps and has 5 latent frames:
``[(0, 0), (0, 16), (16, 32), (32, 48), (48, 64)]``.

Concatenated skill-compositional rollouts (:meth:`WorldModel.rollout`) drop the duplicated
boundary frame (and its latent frame) of every clip after the first, so ``n`` clips of 17 frames
give ``1 + 16n`` frames and ``1 + 4n`` latent frames, and the same functions apply to the
concatenation as if it were one long clip.
"""
from __future__ import annotations

from world2act import World2ActError


def num_latent_frames(num_frames: int, temporal_compression: int = 4) -> int:
    """Number of latent frames ``T' = (T - 1) // c + 1`` for a clip of ``T`` pixel frames.

    Args:
        num_frames: pixel frames ``T`` (must be ``>= 1`` and ``(T - 1) % c == 0``).
        temporal_compression: the VAE's temporal compression ``c`` (4 for Wan / Cosmos-Predict2).

    Raises:
        World2ActError: ``T < 1``, ``c < 1`` or ``(T - 1)`` not divisible by ``c``.
    """
    if temporal_compression < 1:
        raise World2ActError(f"temporal_compression must be >= 1, got {temporal_compression}")
    if num_frames < 1 or (num_frames - 1) % temporal_compression:
        raise World2ActError(
            f"num_frames={num_frames}: a causal video VAE with temporal compression {temporal_compression} "
            f"needs 1 + {temporal_compression}*n frames (e.g. {1 + temporal_compression * 4})")
    return (num_frames - 1) // temporal_compression + 1


def num_pixel_frames(latent_frames: int, temporal_compression: int = 4) -> int:
    """Pixel frames ``1 + c(n − 1)`` that a causal video VAE encodes into ``n`` latent frames
    (the inverse of :func:`num_latent_frames`; 5 frames for Cosmos' two conditioning latents)."""
    return 1 + temporal_compression * (int(latent_frames) - 1)


def check_cond_frames(n: int, num_latent: int, name: str = "cond_frames") -> int:
    """``n`` as an int when it is a valid number of conditioning latent frames for clips of
    ``num_latent`` latent frames (1 .. ``num_latent − 1``: at least one frame is generated).

    Raises:
        World2ActError: ``n`` outside that range, naming ``name``.
    """
    if not 1 <= int(n) < num_latent:
        raise World2ActError(f"{name}={n}: must be 1 .. {num_latent - 1} ({num_latent} latent frames per clip)")
    return int(n)


def actions_per_latent_frame(frame_stride: int, temporal_compression: int = 4) -> int:
    """Control steps (actions) explained by one latent frame ``j >= 1``: ``K = c * s``.

    Raises:
        World2ActError: ``frame_stride < 1`` or ``temporal_compression < 1``.
    """
    if frame_stride < 1:
        raise World2ActError(f"frame_stride must be >= 1, got {frame_stride}")
    if temporal_compression < 1:
        raise World2ActError(f"temporal_compression must be >= 1, got {temporal_compression}")
    return temporal_compression * frame_stride


def latent_action_ranges(num_frames: int, frame_stride: int,
                         temporal_compression: int = 4) -> list[tuple[int, int]]:
    """Half-open control-step ranges ``[start, stop)`` per latent frame, indexed by ``j``.

    The list has ``T'`` entries so that ``ranges[j]`` belongs to latent frame ``j``:
    ``ranges[0] == (0, 0)`` (latent frame 0 is the first frame alone: no actions) and
    ``ranges[j] == (K*(j-1), K*j)`` for ``j >= 1`` with ``K = c * s``. Steps are relative to
    the control step of the clip's first frame; add the clip's start step (``frame_from`` of a
    skill clip, or the recorded window start) to index the dataset's action rows.

    Raises:
        World2ActError: see :func:`num_latent_frames` and :func:`actions_per_latent_frame`.
    """
    t_lat = num_latent_frames(num_frames, temporal_compression)
    k = actions_per_latent_frame(frame_stride, temporal_compression)
    return [(0, 0)] + [(k * (j - 1), k * j) for j in range(1, t_lat)]


def clip_control_steps(num_frames: int, frame_stride: int) -> int:
    """Control steps spanned by one clip: ``(T - 1) * s`` (64 with the defaults)."""
    return (num_frames - 1) * frame_stride


def latent_frame_of_step(step: int, frame_stride: int, temporal_compression: int = 4) -> int:
    """The latent frame ``j >= 1`` whose action range contains control step ``step >= 0``."""
    if step < 0:
        raise World2ActError(f"step must be >= 0, got {step}")
    return step // actions_per_latent_frame(frame_stride, temporal_compression) + 1


def latent_action_chunks(actions, start: int = 0, num_frames: int = 17, frame_stride: int = 4,
                         temporal_compression: int = 4):
    """Action chunks matching latent frames ``1..T'-1`` of a clip starting at row ``start``.

    Args:
        actions: ``[L, A]`` actions of the episode (numpy array; LeRobot rows).
        start: row of the clip's first frame (a record's window start, or 0 for a skill clip).
    Returns:
        ``(chunks [T'-1, K, A], valid [T'-1, K] bool)``: rows past the episode's end repeat the
        last action and are marked invalid (they belong to padded frames).
    Raises:
        World2ActError: empty actions, ``start`` out of range, bad frame count/stride.
    """
    import numpy as np

    a = np.asarray(actions)
    if a.ndim != 2 or len(a) == 0:
        raise World2ActError(f"actions must be [L, A] with L >= 1, got shape {a.shape}")
    if not 0 <= start < len(a):
        raise World2ActError(f"start={start} outside the {len(a)} action rows")
    ranges = latent_action_ranges(num_frames, frame_stride, temporal_compression)[1:]
    rows = np.array([[start + t for t in range(s, e)] for s, e in ranges], dtype=np.int64)
    valid = rows < len(a)
    return a[np.minimum(rows, len(a) - 1)], valid
