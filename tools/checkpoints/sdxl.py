"""SDXL base 1.0 in its original single-file key names (the sgm `sd_xl_base.yaml` layout): the UNet, CLIP-L
(`conditioner.embedders.0`, transformers names), OpenCLIP ViT-bigG/14 (`conditioner.embedders.1`, open_clip names),
the KL autoencoder; 2515 keys, about 6.9 GB in fp16. SDXL files hold no noise schedule buffers.

The file is written one tensor at a time (`write_streaming`), so that drawing it needs the memory of one tensor,
not of two copies of the whole file (what `safetensors.torch.save_file` takes).
"""

from __future__ import annotations

import json
import struct
from collections.abc import Iterator
from pathlib import Path

from checkpoints.common import Tensor, conv, fill, linear, norm, write_lora
from checkpoints.ldm import (
    clip_text,
    kl_vae,
    logit_scale,
    open_clip_text,
    res_block,
    spatial_transformer,
    text_lora_modules,
    unet_attention_lora,
)

CONTEXT = 2048  # CLIP-L's 768 columns beside OpenCLIP-G's 1280
ADM = 2816  # the pooled OpenCLIP-G vector (1280) and six size embeddings of 256
DEPTHS = (0, 2, 10)  # transformer blocks a level; the middle block takes the last
OPEN_CLIP = "conditioner.embedders.1.model."


def sdxl_unet(prefix: str = "model.diffusion_model.") -> Iterator[Tensor]:
    """SDXL's UNet: 320 channels, multipliers 1, 2, 4, two res blocks a level, transformer depth 0, 2, 10 with
    linear projections and context 2048, and the `label_emb` of the 2816-wide vector."""
    base, mults, emb = 320, (1, 2, 4), 1280
    yield from linear(f"{prefix}time_embed.0", emb, base)
    yield from linear(f"{prefix}time_embed.2", emb, emb)
    yield from linear(f"{prefix}label_emb.0.0", emb, ADM)
    yield from linear(f"{prefix}label_emb.0.2", emb, emb)
    yield from conv(f"{prefix}input_blocks.0.0", base, 4, 3)
    skips, channels, index = [base], base, 1
    for level, mult in enumerate(mults):
        for _ in range(2):
            yield from res_block(f"{prefix}input_blocks.{index}.0", channels, base * mult, emb)
            channels = base * mult
            if DEPTHS[level]:
                key = f"{prefix}input_blocks.{index}.1"
                yield from spatial_transformer(key, channels, CONTEXT, linear_proj=True, depth=DEPTHS[level])
            skips.append(channels)
            index += 1
        if level != len(mults) - 1:
            yield from conv(f"{prefix}input_blocks.{index}.0.op", channels, channels, 3)
            skips.append(channels)
            index += 1
    yield from res_block(f"{prefix}middle_block.0", channels, channels, emb)
    yield from spatial_transformer(f"{prefix}middle_block.1", channels, CONTEXT, linear_proj=True, depth=DEPTHS[-1])
    yield from res_block(f"{prefix}middle_block.2", channels, channels, emb)
    index = 0
    for level, mult in reversed(list(enumerate(mults))):
        for block in range(3):
            key = f"{prefix}output_blocks.{index}"
            yield from res_block(f"{key}.0", channels + skips.pop(), base * mult, emb)
            channels = base * mult
            layer = 1
            if DEPTHS[level]:
                yield from spatial_transformer(f"{key}.1", channels, CONTEXT, linear_proj=True, depth=DEPTHS[level])
                layer = 2
            if level and block == 2:
                yield from conv(f"{key}.{layer}.conv", channels, channels, 3)
            index += 1
    yield from norm(f"{prefix}out.0", base)
    yield from conv(f"{prefix}out.2", 4, base, 3)


def sdxl_layout() -> list[Tensor]:
    """Every key of an SDXL base single file (`sd_xl_base_1.0` layout): UNet, both text encoders, VAE."""
    tensors = [*sdxl_unet(), *clip_text("conditioner.embedders.0.transformer.text_model.")]
    return tensors + [*open_clip_text(OPEN_CLIP, 1280, 32), *kl_vae()]


def sdxl_lora_layout() -> list[tuple[str, int, int]]:
    """Kohya LoRA modules of SDXL as `(name, in, out)`: both text encoders (`lora_te1_` CLIP-L, `lora_te2_`
    OpenCLIP-G in kohya's transformers names) and the first transformer block's attention of every UNet transformer
    (kohya's SDXL UNet names: the original ones, dots as underscores)."""
    modules = text_lora_modules("lora_te1", 768, 12) + text_lora_modules("lora_te2", 1280, 32)
    blocks = [(f"input_blocks_{index}_1", 640) for index in (4, 5)] + [(f"input_blocks_{i}_1", 1280) for i in (7, 8)]
    blocks += [("middle_block_1", 1280)] + [(f"output_blocks_{index}_1", 1280) for index in range(3)]
    blocks += [(f"output_blocks_{index}_1", 640) for index in range(3, 6)]
    return modules + unet_attention_lora(blocks, CONTEXT)


_DTYPES = {"torch.float16": "F16", "torch.float32": "F32", "torch.int64": "I64"}


def write_streaming(layout: list[Tensor], path: Path, seed: int, buffers: dict) -> int:
    """Draws `layout` as `common.write_checkpoint` does (same generator, same order, same values) but writes each
    tensor to the safetensors file as soon as it is drawn; returns the number of keys."""
    import torch

    header, offset = {"__metadata__": {"format": "pt"}}, 0
    for tensor in layout:  # drawn tensors are fp16; a buffer's dtype is its value's
        value = (
            fill(tensor, None, buffers)
            if tensor.kind == "buffer"
            else torch.empty(tensor.shape, dtype=torch.float16, device="meta")
        )
        size = value.element_size() * value.numel()
        header[tensor.key] = {
            "dtype": _DTYPES[str(value.dtype)],
            "shape": list(tensor.shape),
            "data_offsets": [offset, offset + size],
        }
        offset += size
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    generator = torch.Generator().manual_seed(seed)
    with open(path, "wb") as out:
        out.write(struct.pack("<Q", len(text)) + text)
        for tensor in layout:
            out.write(fill(tensor, generator, buffers).contiguous().numpy().tobytes())
    return len(layout)


def write_sdxl(out: Path, seed: int, lora: bool) -> list[Path]:
    """`sdxl-random.safetensors` (one file, `sd_xl_base_1.0` layout) and, with `lora`, its LoRA."""
    path = out / "sdxl-random.safetensors"
    write_streaming(sdxl_layout(), path, seed, logit_scale(f"{OPEN_CLIP}logit_scale"))
    written = [path]
    if lora:
        written.append(out / "sdxl-random-lora.safetensors")
        write_lora(sdxl_lora_layout(), written[-1], seed + 1)
    return written
