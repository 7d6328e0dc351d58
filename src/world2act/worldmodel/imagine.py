"""``world2act imagine``: skill-compositional generation from one image and an instruction (paper Sec. 3.3).

The instruction is decomposed into atomic skill prompts (``world2act.skills.decompose``); the
world model generates one clip per prompt (a skill whose training clips usually needed several
windows gets that many clips, from ``prompt_windows`` in the model folder), each conditioned on
the previous clip's last frame, and the clips are concatenated (shared boundary frame kept once).

Writes ``video.mp4`` (``[1 + 16n, H, W, 3]`` at the clip fps), ``latents.safetensors``
(``latents`` ``[1 + 4n, C, H', W']`` normalised, float32; ``latent_action_ranges`` int64
``[1 + 4n, 2]`` control-step ranges per latent frame) and ``prompts.json`` (instruction, skill
prompts, clip prompts, shapes, frame stride).
"""
from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

import numpy as np

from world2act import World2ActError

log = logging.getLogger(__name__)


def skill_prompts(instruction: str) -> tuple[list[str], str]:
    """Skill prompts for ``instruction`` and the decomposer used (``schema``, or ``none`` when the
    instruction cannot be parsed: then the instruction itself is the single prompt)."""
    from world2act.skills.decompose import UnparseableInstruction, decompose_instruction

    try:
        return [s.prompt for s in decompose_instruction(instruction)], "schema"
    except UnparseableInstruction as e:
        log.warning("could not decompose the instruction (%s); using it as a single prompt", e)
        return [instruction.strip()], "none"


def load_image(path: str | Path, frame_size: tuple[int, int], resize: bool = False) -> np.ndarray:
    """A stitched uint8 frame ``[H, W, 3]`` from a PNG/JPEG.

    Raises:
        World2ActError: missing/unreadable file, or wrong size (without ``resize``).
    """
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    if not path.is_file():
        raise World2ActError(f"--image {path}: file not found")
    try:
        img = Image.open(path).convert("RGB")
    except (UnidentifiedImageError, OSError) as e:
        raise World2ActError(f"--image {path}: not a readable image ({e})") from None
    h, w = frame_size
    if img.size != (w, h):
        if not resize:
            raise World2ActError(f"--image {path}: {img.size[1]}x{img.size[0]} pixels, the world model takes "
                                 f"{h}x{w} stitched frames (pass --resize to resize)")
        img = img.resize((w, h), Image.BICUBIC)
    return np.asarray(img, dtype=np.uint8)


def dataset_frame(root: str, episode: int, cfg) -> np.ndarray:
    """The stitched first frame ``[H, W, 3]`` of ``episode`` in a LeRobot dataset.

    Raises:
        World2ActError: bad dataset/episode, or cameras / image size that do not fit the model.
    """
    from world2act.data import LeRobotDataset
    from world2act.worldmodel.data import check_dataset, stitch

    ds = LeRobotDataset(root)
    if not 0 <= episode < ds.num_episodes:
        raise World2ActError(f"--episode {episode}: {root} has episodes 0..{ds.num_episodes - 1}")
    check_dataset(ds, cfg)
    ep = ds.load_episode(episode, cameras=list(cfg.cameras))
    return stitch({c: v[:1] for c, v in ep.images.items()}, cfg.cameras, cfg.layout)[0]


def imagine(wm, frame: np.ndarray, instruction: str, out: str | Path, *, steps: int | None = None, seed: int = 0,
            clips_per_skill: int | None = None, guidance_scale: float | None = None) -> dict:
    """Decompose, roll out and write ``video.mp4``, ``latents.safetensors``, ``prompts.json`` into ``out``."""
    import torch
    from safetensors.torch import save_file

    from world2act.data import write_video
    from world2act.utils.io import atomic_path, write_json
    from world2act.worldmodel.alignment import latent_action_ranges

    if not instruction or not instruction.strip():
        raise World2ActError("--instruction must not be empty")
    skills, decomposer = skill_prompts(instruction)
    clip_prompts = wm.clip_prompts(skills, clips_per_skill)
    t0 = time.time()
    video, lat = wm.rollout(frame, clip_prompts, num_inference_steps=steps, seed=seed, guidance_scale=guidance_scale,
                            progress=True)
    secs = time.time() - t0
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    cfg = wm.config
    ranges = torch.tensor(latent_action_ranges(video.shape[0], cfg.frame_stride), dtype=torch.int64)
    with atomic_path(out / "latents.safetensors") as tmp:
        save_file({"latents": lat.float().contiguous(), "latent_action_ranges": ranges}, str(tmp))
    write_video(out / "video.mp4", video, fps=cfg.fps)
    info = {"instruction": instruction, "decomposer": decomposer, "skill_prompts": skills,
            "clip_prompts": clip_prompts, "video_shape": list(video.shape), "latents_shape": list(lat.shape),
            "frame_stride": cfg.frame_stride, "fps": cfg.fps, "num_inference_steps": steps or cfg.num_inference_steps,
            "seed": seed, "generation_s": round(secs, 2)}
    write_json(out / "prompts.json", info)
    return info


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--wm", required=True, help="world-model folder (from train-wm)")
    p.add_argument("--image", help="first frame: PNG with the stitched views (H x W of the model)")
    p.add_argument("--dataset", help="instead of --image: take the first frame of --episode from this LeRobot dataset")
    p.add_argument("--episode", type=int, default=0, help="episode index for --dataset (default 0)")
    p.add_argument("--instruction", required=True, help="global task instruction")
    p.add_argument("--steps", type=int, default=None, help="sampling steps (default: the model's, 10 for small)")
    p.add_argument("--clips-per-skill", type=int, default=None,
                   help="clips per skill prompt (default: learned per prompt from the training data, else 1)")
    p.add_argument("--guidance", type=float, default=None, help="classifier-free guidance scale (default: model's)")
    p.add_argument("--resize", action="store_true", help="resize --image to the model's frame size")


def main(args) -> int:
    import torch

    from world2act.utils.seeding import resolve_device, set_torch_threads
    from world2act.worldmodel.model import WorldModel

    if not args.out:
        raise World2ActError("--out is required")
    set_torch_threads()
    overrides = {}
    for o in getattr(args, "overrides", None) or []:  # world-model config fields, e.g. image_size=[8,8] num_frames=5
        import yaml

        k, sep, v = o.partition("=")
        if not sep or not k:
            raise World2ActError(f"override {o!r}: expected key=value (a world-model config field)")
        overrides[k.strip()] = yaml.safe_load(v)
    wm = WorldModel.load(args.wm, device=resolve_device(args.device), overrides=overrides or None)
    if bool(args.image) == bool(args.dataset):
        raise World2ActError("give exactly one of --image PNG or --dataset DIR [--episode N]")
    if args.image:
        frame = load_image(args.image, wm.config.frame_size, resize=args.resize)
    else:
        frame = dataset_frame(args.dataset, args.episode, wm.config)
    with torch.no_grad():
        info = imagine(wm, frame, args.instruction, args.out, steps=args.steps, seed=args.seed,
                       clips_per_skill=args.clips_per_skill, guidance_scale=args.guidance)
    print(f"{len(info['clip_prompts'])} clip(s) {info['clip_prompts']}: video {info['video_shape']}, "
          f"latents {info['latents_shape']} -> {args.out}")
    return 0
