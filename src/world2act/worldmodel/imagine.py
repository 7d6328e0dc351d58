"""``world2act imagine``: skill-compositional generation from one image and an instruction (paper Sec. 3.3).

The instruction is decomposed into atomic skill prompts (``world2act.skills.decompose``); the
world model generates one clip per prompt (a skill whose training clips usually needed several
windows gets that many clips, from ``prompt_windows`` in the model folder), each conditioned on
the previous clip's last frame, and the clips are concatenated (shared boundary frame kept once).

Writes ``video.mp4`` (``[1 + 16n, H, W, 3]`` at the clip fps), ``latents.safetensors``
(``latents`` ``[1 + 4n, C, H', W']`` normalised, float32; ``latent_action_ranges`` int64
``[1 + 4n, 2]`` control-step ranges per latent frame) and ``prompts.json`` (instruction, skill
prompts, clip prompts, shapes, frame stride), plus ``manifest.json`` from the CLI.
"""
from __future__ import annotations

import dataclasses
import logging
import time
from pathlib import Path

import numpy as np

from world2act import World2ActError
from world2act.utils.config import opt

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


@dataclasses.dataclass
class ImagineConfig:
    """Configuration of ``world2act imagine`` (``--config FILE.yaml`` keys and ``key=value`` overrides).

    Attributes:
        wm: world-model folder (from train-wm). instruction: global task instruction.
        image: first frame, a PNG with the stitched views; or ``dataset`` + ``episode``: take the
            first frame of that episode of a LeRobot dataset (exactly one of the two).
        steps, clips_per_skill, guidance: sampling steps, clips per skill prompt, classifier-free
            guidance scale (None: the model's / learned defaults). resize: resize ``image`` to
            the model's frame size. seed: sampling seed (``--seed``).
        model: world-model config fields replaced at load (those that do not change the weights,
            e.g. ``image_size``, ``num_frames``); as overrides ``model.image_size=[8,8]`` or, for a
            key that is not one of the fields above, bare ``image_size=[8,8]``.
    """

    wm: str = opt("", "world-model folder (from train-wm; required here or in --config)", required=True)
    instruction: str = opt("", "global task instruction (required here or in --config)", required=True)
    image: str = opt("", "first frame: PNG with the stitched views (H x W of the model)")
    dataset: str = opt("", "instead of --image: take the first frame of --episode from this LeRobot dataset")
    episode: int = opt(0, "episode index for --dataset (default 0)")
    steps: int | None = opt(None, "sampling steps (default: the model's, 10 for small)")
    clips_per_skill: int | None = opt(None, "clips per skill prompt (default: learned per prompt from the training "
                                      "data, else 1)")
    guidance: float | None = opt(None, "classifier-free guidance scale (default: model's)")
    resize: bool = opt(False, "resize --image to the model's frame size")
    seed: int = 0
    model: dict = dataclasses.field(default_factory=dict)


def split_overrides(overrides: list[str] | None) -> tuple[list[str], dict]:
    """Split ``key=value`` overrides into :class:`ImagineConfig` ones and world-model config fields.

    ``model.<field>=v`` and any bare key that is not an ImagineConfig field go to the world
    model (values parsed as YAML); the rest are returned for :func:`~world2act.utils.config.load_config`.

    Raises:
        World2ActError: an override without ``=`` or with an empty key.
    """
    import yaml

    own_fields = {f.name for f in dataclasses.fields(ImagineConfig)} - {"model"}
    own, model = [], {}
    for o in overrides or []:
        k, sep, v = o.partition("=")
        k = k.strip()
        if not sep or not k or k == "model.":
            raise World2ActError(f"override {o!r}: expected key=value (an imagine option or a world-model config field)")
        if k.split(".")[0] in own_fields:
            own.append(o)
        else:
            model[k[len("model."):] if k.startswith("model.") else k] = yaml.safe_load(v) if v != "" else ""
    return own, model


Config = ImagineConfig


def make_config(args) -> ImagineConfig:
    """Defaults <- ``--config`` <- options <- ``key=value`` (world-model fields go to ``model``)."""
    from world2act.utils.config import config_from_args

    own, model = split_overrides(args.overrides)
    cfg = config_from_args(ImagineConfig, args, overrides=own, where="imagine")
    return dataclasses.replace(cfg, model={**cfg.model, **model})


def main(cfg: ImagineConfig, args) -> int:
    """``world2act imagine``: generate, and write the outputs plus ``manifest.json`` into ``--out``."""
    import torch

    from world2act.utils.manifest import write_manifest
    from world2act.utils.seeding import resolve_device, set_torch_threads
    from world2act.worldmodel.model import WorldModel

    if bool(cfg.image) == bool(cfg.dataset):
        raise World2ActError("give exactly one of --image PNG or --dataset DIR [--episode N]")
    started = time.time()
    set_torch_threads()
    wm = WorldModel.load(cfg.wm, device=resolve_device(args.device), overrides=cfg.model or None)
    if cfg.image:
        frame = load_image(cfg.image, wm.config.frame_size, resize=cfg.resize)
    else:
        frame = dataset_frame(cfg.dataset, cfg.episode, wm.config)
    with torch.no_grad():
        info = imagine(wm, frame, cfg.instruction, args.out, steps=cfg.steps, seed=cfg.seed,
                       clips_per_skill=cfg.clips_per_skill, guidance_scale=cfg.guidance)
    inputs = {"wm": str(Path(cfg.wm).resolve())}
    inputs.update({"image": str(Path(cfg.image).resolve())} if cfg.image else
                  {"dataset": str(Path(cfg.dataset).resolve()), "episode": cfg.episode})
    write_manifest(args.out, stage="imagine", config=cfg, inputs=inputs,
                   metrics={k: info[k] for k in ("video_shape", "latents_shape", "num_inference_steps", "generation_s")}
                   | {"clips": len(info["clip_prompts"])}, started=started)
    print(f"{len(info['clip_prompts'])} clip(s) {info['clip_prompts']}: video {info['video_shape']}, "
          f"latents {info['latents_shape']} -> {args.out}")
    return 0
