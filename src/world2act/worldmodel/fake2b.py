"""A stand-in for the real Cosmos-Predict2-2B-Video2World checkpoint: its diffusers folder layout and
configuration with random weights, so the 2B path (``--pretrained DIR``) can be exercised on a
machine without the download or a GPU.

Written: ``model_index.json`` (``Cosmos2VideoToWorldPipeline``), ``transformer/`` (the real
``CosmosTransformer3DModel`` config: hidden 2048 = 16 heads x 128, 28 layers, T5 width 1024,
adaLN-LoRA 256, patch (1, 2, 2), rope scale (1, 3, 3), ``concat_padding_mask=True``; weights
sharded safetensors in bf16 like the released checkpoint, ~4 GB), ``vae/`` (Wan 2.1
``AutoencoderKLWan`` with its released latent statistics; fp32, 0.5 GB), ``scheduler/``
(``FlowMatchEulerDiscreteScheduler`` with Karras sigmas) and ``prompt_embeds.safetensors``: one
random T5-width row used for every prompt (the folder carries no ``text_encoder/``), see
:meth:`world2act.worldmodel.WorldModel.encode_prompts`.

The transformer is built on the meta device and its tensors are drawn one at a time, so peak
memory stays near one shard (``shard_gb``) rather than the 8 GB of an fp32 model.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import torch

from world2act import World2ActError

DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}


def _init_tensor(name: str, shape: tuple[int, ...], gen: torch.Generator, dtype: torch.dtype) -> torch.Tensor:
    if len(shape) == 1:  # norm scales 1, biases 0
        return (torch.ones if name.endswith("weight") and "norm" in name else torch.zeros)(shape, dtype=dtype)
    fan_in = 1
    for s in shape[1:]:
        fan_in *= s
    return (torch.randn(shape, generator=gen) * fan_in ** -0.5).to(dtype)


def make_fake_checkpoint(out: str | Path, *, num_layers: int | None = None, dtype: str = "bfloat16", seed: int = 0,
                         shard_gb: float = 2.0, text_max_length: int = 512) -> dict:
    """Write a random-weight folder in the real checkpoint's diffusers layout; returns a summary
    (``params``, ``bytes``, ``seconds``, ``num_layers``).

    Args:
        num_layers: transformer depth (default 28, the real one); every other dimension stays real.
        dtype: transformer weights' dtype (the released checkpoint is bf16).
    Raises:
        World2ActError: ``out`` exists and is not empty, or an unknown dtype.
    """
    from accelerate import init_empty_weights
    from diffusers import AutoencoderKLWan
    from diffusers import __version__ as dv
    from safetensors.torch import save_file

    from world2act.worldmodel.configs import get_config
    from world2act.worldmodel.model import _scheduler, build_transformer

    if dtype not in DTYPES:
        raise World2ActError(f"dtype {dtype!r}: valid are {', '.join(DTYPES)}")
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise World2ActError(f"{out}: exists and is not empty")
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    overrides = {"num_layers": int(num_layers)} if num_layers else {}
    cfg = get_config("cosmos-predict2-2b", **overrides)
    with init_empty_weights():
        tr = build_transformer(cfg)
    (out / "transformer").mkdir()
    tr.save_config(out / "transformer")
    dt = DTYPES[dtype]
    shapes = {k: tuple(v.shape) for k, v in tr.state_dict().items()}
    del tr
    esize = torch.empty((), dtype=dt).element_size()
    limit = int(shard_gb * 2 ** 30)
    shards: list[list[str]] = [[]]
    size = 0
    for k, s in shapes.items():
        n = esize * int(torch.Size(s).numel())
        if shards[-1] and size + n > limit:
            shards.append([])
            size = 0
        shards[-1].append(k)
        size += n
    gen = torch.Generator().manual_seed(seed)
    weight_map, total = {}, 0
    for i, keys in enumerate(shards):
        fname = (f"diffusion_pytorch_model-{i + 1:05d}-of-{len(shards):05d}.safetensors" if len(shards) > 1
                 else "diffusion_pytorch_model.safetensors")
        sd = {k: _init_tensor(k, shapes[k], gen, dt) for k in keys}
        total += sum(v.numel() * v.element_size() for v in sd.values())
        save_file(sd, str(out / "transformer" / fname), metadata={"format": "pt"})
        weight_map.update({k: fname for k in keys})
        del sd
    if len(shards) > 1:
        (out / "transformer" / "diffusion_pytorch_model.safetensors.index.json").write_text(
            json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}, indent=2))
    params = sum(int(torch.Size(s).numel()) for s in shapes.values())
    torch.manual_seed(seed)
    vae = AutoencoderKLWan()  # defaults = Wan 2.1 (base 96, dim_mult 1,2,4,4, z 16, released latents_mean/std)
    vae.save_pretrained(out / "vae", safe_serialization=True)
    del vae
    _scheduler(cfg).save_pretrained(out / "scheduler")
    emb = torch.randn(1, text_max_length, cfg.text_embed_dim, generator=gen).to(dt)
    save_file({"embeds": emb}, str(out / "prompt_embeds.safetensors"),
              metadata={"prompts": json.dumps(["*"]), "note": "random stand-in for T5-XXL embeddings"})
    (out / "model_index.json").write_text(json.dumps({
        "_class_name": "Cosmos2VideoToWorldPipeline", "_diffusers_version": dv,
        "transformer": ["diffusers", "CosmosTransformer3DModel"], "vae": ["diffusers", "AutoencoderKLWan"],
        "scheduler": ["diffusers", "FlowMatchEulerDiscreteScheduler"],
        # the real checkpoint names T5EncoderModel / T5TokenizerFast / CosmosSafetyChecker here
        "text_encoder": [None, None], "tokenizer": [None, None], "safety_checker": [None, None],
        "_world2act_fake": {"seed": seed, "num_layers": cfg.num_layers, "dtype": dtype}}, indent=2))
    return {"params": params, "bytes": total, "seconds": round(time.time() - t0, 1), "num_layers": cfg.num_layers,
            "shards": len(shards)}
