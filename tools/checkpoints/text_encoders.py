"""The text encoders of SD 3.5, Flux and Chroma as the separate files their loaders read (ComfyUI's
`DualCLIPLoader`, `TripleCLIPLoader`, `CLIPLoader`), at full size and with the released files' key names:

| file | model | keys | size |
|---|---|---|---|
| `clip_l.safetensors` | CLIP ViT-L/14 text tower (transformers names), fp16 | 197 | 0.25 GB |
| `clip_g.safetensors` | OpenCLIP bigG/14 text tower (transformers names, with `text_projection`), fp16 | 517 | 1.4 GB |
| `t5xxl_fp8_e4m3fn.safetensors` | T5 v1.1 XXL encoder (24 blocks, width 4096, ff 10240, 64 heads), fp8 | 219 | 4.9 GB |

The shapes are those of the published configurations (OpenAI's CLIP ViT-L/14, OpenCLIP's ViT-bigG/14 text tower,
Google's `t5-v1_1-xxl`); nothing is read from a host. T5 stores weights only (no biases) and its layer norms are
RMS norms with a weight alone, so it has no final-norm bias to draw.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from checkpoints.common import Tensor, fill, linear
from checkpoints.ldm import clip_text

T5_LAYERS, T5_WIDTH, T5_FF, T5_HEADS, T5_VOCAB, T5_BUCKETS = 24, 4096, 10240, 64, 32128, 32


def clip_l() -> list[Tensor]:
    """CLIP-L as `clip_l.safetensors` (SD 3.5, Flux): the text model and its 768x768 projection."""
    return [*_no_position_ids(clip_text("text_model.")), *linear("text_projection", 768, 768, bias=False)]


def clip_g() -> list[Tensor]:
    """OpenCLIP bigG's text tower in transformers names, as `clip_g.safetensors` (SD 3.5): 32 layers of width
    1280, and its 1280x1280 projection."""
    tower = _no_position_ids(clip_text("text_model.", width=1280, layers=32))
    return [*tower, *linear("text_projection", 1280, 1280, bias=False)]


def _no_position_ids(layout: Iterator[Tensor]) -> list[Tensor]:
    """The released separate text encoder files carry no `position_ids` buffer."""
    return [tensor for tensor in layout if not tensor.key.endswith("position_ids")]


def t5xxl() -> Iterator[Tensor]:
    """T5 v1.1 XXL's encoder (transformers names): shared embedding, 24 blocks of self-attention and a gated-GELU
    feed-forward, the relative attention bias in block 0 only."""
    yield Tensor("shared.weight", (T5_VOCAB, T5_WIDTH))
    for block in range(T5_LAYERS):
        key = f"encoder.block.{block}.layer"
        for name in ("q", "k", "v", "o"):
            yield Tensor(f"{key}.0.SelfAttention.{name}.weight", (T5_WIDTH, T5_WIDTH))
        if block == 0:
            yield Tensor(f"{key}.0.SelfAttention.relative_attention_bias.weight", (T5_BUCKETS, T5_HEADS))
        yield Tensor(f"{key}.0.layer_norm.weight", (T5_WIDTH,), "norm")
        yield Tensor(f"{key}.1.DenseReluDense.wi_0.weight", (T5_FF, T5_WIDTH))
        yield Tensor(f"{key}.1.DenseReluDense.wi_1.weight", (T5_FF, T5_WIDTH))
        yield Tensor(f"{key}.1.DenseReluDense.wo.weight", (T5_WIDTH, T5_FF))
        yield Tensor(f"{key}.1.layer_norm.weight", (T5_WIDTH,), "norm")
    yield Tensor("encoder.final_layer_norm.weight", (T5_WIDTH,), "norm")


def write_in(layout: list[Tensor], path: Path, seed: int, dtype: str = "float16") -> Path:
    """Draws `layout` (see `common.fill`) and saves it to `path` in `dtype` (a torch dtype's name), tensor by
    tensor, so the peak is the file's size plus one fp32 tensor."""
    import torch
    from safetensors.torch import save_file

    generator = torch.Generator().manual_seed(seed)
    target = getattr(torch, dtype)
    state = {}
    for tensor in layout:
        value = fill(tensor, generator, {})
        state[tensor.key] = value.to(target) if value.is_floating_point() else value  # position ids stay int64
    save_file(state, str(path), metadata={"format": "pt"})
    return path


def write_text_encoders(folder: Path, seed: int, names: tuple[str, ...]) -> list[Path]:
    """The text encoder files `names` (of "clip_l", "clip_g", "t5xxl") in `folder`, each written once and reused
    afterwards (SD 3.5, Flux and Chroma share them)."""
    files = {  # name -> (file, layout, dtype, seed offset)
        "clip_l": ("clip_l.safetensors", clip_l, "float16", 101),
        "clip_g": ("clip_g.safetensors", clip_g, "float16", 102),
        "t5xxl": ("t5xxl_fp8_e4m3fn.safetensors", lambda: list(t5xxl()), "float8_e4m3fn", 103),
    }
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name in names:
        file_name, layout, dtype, offset = files[name]
        path = folder / file_name
        if not path.exists():
            partial = path.with_suffix(".partial")
            write_in(layout(), partial, seed + offset, dtype)
            partial.rename(path)
        written.append(path)
    return written
