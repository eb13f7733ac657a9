"""SDXL base 1.0 in its original single-file key names (the sgm `sd_xl_base.yaml` layout): the UNet, CLIP-L
(`conditioner.embedders.0`, transformers names), OpenCLIP ViT-bigG/14 (`conditioner.embedders.1`, open_clip names),
the KL autoencoder; 2515 keys, about 6.9 GB in fp16. SDXL files hold no noise schedule buffers.

The file is written one tensor at a time (`write_streaming`), so that drawing it needs the memory of one tensor,
not of two copies of the whole file (what `safetensors.torch.save_file` takes).
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

from checkpoints.common import Tensor, fill, write_lora
from checkpoints.ldm import (
    clip_text,
    kl_vae,
    logit_scale,
    open_clip_text,
    text_lora_modules,
    unet,
    unet_attention_lora,
)

CONTEXT = 2048  # CLIP-L's 768 columns beside OpenCLIP-G's 1280
ADM = 2816  # the pooled OpenCLIP-G vector (1280) and six size embeddings of 256
DEPTHS = (0, 2, 10)  # transformer blocks a level; the middle block takes the last
OPEN_CLIP = "conditioner.embedders.1.model."


def sdxl_layout() -> list[Tensor]:
    """Every key of an SDXL base single file (`sd_xl_base_1.0` layout): UNet, both text encoders, VAE."""
    tensors = [
        *unet(context=CONTEXT, linear_proj=True, mults=(1, 2, 4), depths=DEPTHS, middle_depth=DEPTHS[-1], adm=ADM)
    ]
    tensors += clip_text("conditioner.embedders.0.transformer.text_model.")
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
