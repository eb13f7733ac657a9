"""What every random checkpoint is made of: the `Tensor` entry of a layout, the layer shapes all families share
(linear, convolution, norm), and the writers that draw a layout and save it (safetensors, fp16).

Weights are drawn with std 0.02; norm weights are 1 and biases 0, except a text encoder's final norm bias
(`final_norm_bias`), which gets small random values: a zero bias gives NaNs with the WebUI's "Original" emphasis
on long prompts.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

STD = 0.02
FINAL_NORM_BIAS_STD = 0.02


@dataclass(frozen=True)
class Tensor:
    """One entry of a state dict: its key, shape and how it is filled (`random`, `norm` weight, `bias`, or a
    named `buffer` the writer computes)."""

    key: str
    shape: tuple[int, ...]
    kind: str = "random"


def linear(key: str, out: int, inp: int, bias: bool = True) -> Iterator[Tensor]:
    yield Tensor(f"{key}.weight", (out, inp))
    if bias:
        yield Tensor(f"{key}.bias", (out,), "bias")


def conv(key: str, out: int, inp: int, size: int) -> Iterator[Tensor]:
    yield Tensor(f"{key}.weight", (out, inp, size, size))
    yield Tensor(f"{key}.bias", (out,), "bias")


def norm(key: str, channels: int) -> Iterator[Tensor]:
    yield Tensor(f"{key}.weight", (channels,), "norm")
    yield Tensor(f"{key}.bias", (channels,), "bias")


def fill(tensor: Tensor, generator, buffers: dict):
    """Draws one tensor: ones for norm weights, zeros for biases, `buffers[key]` for buffers, else N(0, std)."""
    import torch

    if tensor.kind == "norm":
        return torch.ones(tensor.shape, dtype=torch.float16)
    if tensor.kind == "bias":
        return torch.zeros(tensor.shape, dtype=torch.float16)
    if tensor.kind == "buffer":
        if tensor.key.endswith("position_ids"):
            return torch.arange(tensor.shape[-1], dtype=torch.int64).reshape(tensor.shape)
        return buffers[tensor.key]
    std = FINAL_NORM_BIAS_STD if tensor.kind == "final_norm_bias" else STD
    return (torch.randn(tensor.shape, generator=generator) * std).to(torch.float16)


def write_checkpoint(layout: list[Tensor], path: Path, seed: int, buffers: dict | None = None) -> int:
    """Draws every tensor of `layout` and saves them to `path` (safetensors); returns the number of keys.
    `buffers` holds the values of the layout's named buffers (a noise schedule)."""
    import torch
    from safetensors.torch import save_file

    generator = torch.Generator().manual_seed(seed)
    buffers = buffers or {}
    state = {tensor.key: fill(tensor, generator, buffers) for tensor in layout}
    save_file(state, str(path), metadata={"format": "pt"})
    return len(state)


def write_lora(modules: list[tuple[str, int, int]], path: Path, seed: int, rank: int = 4) -> int:
    """A random kohya-format LoRA over `modules`; returns the number of keys."""
    import torch
    from safetensors.torch import save_file

    generator = torch.Generator().manual_seed(seed)
    state = {}
    for name, inp, out in modules:
        state[f"{name}.lora_down.weight"] = (torch.randn(rank, inp, generator=generator) * 0.1).half()
        state[f"{name}.lora_up.weight"] = (torch.randn(out, rank, generator=generator) * 0.1).half()
        state[f"{name}.alpha"] = torch.tensor(float(rank)).half()
    save_file(state, str(path), metadata={"format": "pt"})
    return len(state)
