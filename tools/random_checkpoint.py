"""Random-weight checkpoints that the hosts (A1111, Forge, ComfyUI) load as the real thing.

    python3 tools/random_checkpoint.py --family sd15 --out DIR [--lora] [--seed N]

writes the files a host's loaders read, with the original key names and shapes, so that each host's own model
detection classifies them as that family:

| family | files | status |
|---|---|---|
| sd15 | `sd15-random.safetensors`: one file in the original (ldm) layout, fp16, 1143 keys, about 2.1 GB | done |
| sd2, sdxl, sd35, flux-dev, flux-schnell, chroma | | not implemented yet (exit status 2) |

Weights are drawn with std 0.02; norm weights are 1 and biases 0, except the text encoder's
`final_layer_norm.bias`, which gets small random values (a zero bias gives NaNs with the WebUI's "Original"
emphasis on long prompts). The noise schedule's buffers hold the real values (scaled-linear betas,
0.00085..0.012, 1000 steps) in fp32. `--lora` also writes `<family>-random-lora.safetensors`: a rank-4 LoRA in
the kohya key format (`lora_te_...`, `lora_unet_...`) on every text-encoder projection and the UNet's attention
projections, strong enough to change the text encoder's output visibly.

The key names and shapes are written out here from the architectures' published configurations (the
`v1-inference.yaml` of CompVis' latent diffusion, OpenAI's CLIP ViT-L/14 text tower); nothing is read from a host.
Needs torch and safetensors (the repository's `.venv` has both).
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

FAMILIES = ("sd15", "sd2", "sdxl", "sd35", "flux-dev", "flux-schnell", "chroma")
IMPLEMENTED = ("sd15",)
STD = 0.02
FINAL_NORM_BIAS_STD = 0.02


@dataclass(frozen=True)
class Tensor:
    """One entry of a state dict: its key, shape and how it is filled (`random`, `norm` weight, `bias`, or a
    named `buffer` the writer computes)."""

    key: str
    shape: tuple[int, ...]
    kind: str = "random"


def _linear(key: str, out: int, inp: int, bias: bool = True) -> Iterator[Tensor]:
    yield Tensor(f"{key}.weight", (out, inp))
    if bias:
        yield Tensor(f"{key}.bias", (out,), "bias")


def _conv(key: str, out: int, inp: int, size: int) -> Iterator[Tensor]:
    yield Tensor(f"{key}.weight", (out, inp, size, size))
    yield Tensor(f"{key}.bias", (out,), "bias")


def _norm(key: str, channels: int) -> Iterator[Tensor]:
    yield Tensor(f"{key}.weight", (channels,), "norm")
    yield Tensor(f"{key}.bias", (channels,), "bias")


# --- SD 1.x UNet (ldm `openaimodel.UNetModel`, v1-inference.yaml) -------------------------------------------------


def _res_block(key: str, inp: int, out: int, emb: int) -> Iterator[Tensor]:
    yield from _norm(f"{key}.in_layers.0", inp)
    yield from _conv(f"{key}.in_layers.2", out, inp, 3)
    yield from _linear(f"{key}.emb_layers.1", out, emb)
    yield from _norm(f"{key}.out_layers.0", out)
    yield from _conv(f"{key}.out_layers.3", out, out, 3)
    if inp != out:
        yield from _conv(f"{key}.skip_connection", out, inp, 1)


def _spatial_transformer(key: str, channels: int, context: int) -> Iterator[Tensor]:
    """A `SpatialTransformer` of depth 1 with 1x1 convolutions in and out (SD 1.x)."""
    yield from _norm(f"{key}.norm", channels)
    yield from _conv(f"{key}.proj_in", channels, channels, 1)
    block = f"{key}.transformer_blocks.0"
    for attention, source in (("attn1", channels), ("attn2", context)):
        yield from _linear(f"{block}.{attention}.to_q", channels, channels, bias=False)
        yield from _linear(f"{block}.{attention}.to_k", channels, source, bias=False)
        yield from _linear(f"{block}.{attention}.to_v", channels, source, bias=False)
        yield from _linear(f"{block}.{attention}.to_out.0", channels, channels)
    yield from _linear(f"{block}.ff.net.0.proj", channels * 8, channels)  # GEGLU: two halves of 4x
    yield from _linear(f"{block}.ff.net.2", channels, channels * 4)
    for norm in ("norm1", "norm2", "norm3"):
        yield from _norm(f"{block}.{norm}", channels)
    yield from _conv(f"{key}.proj_out", channels, channels, 1)


def sd1_unet(prefix: str = "model.diffusion_model.", context: int = 768) -> Iterator[Tensor]:
    """SD 1.x's UNet: 320 channels, multipliers 1, 2, 4, 4, two res blocks a level, attention on the first three."""
    base, mults, attention_levels, emb = 320, (1, 2, 4, 4), (0, 1, 2), 1280
    yield from _linear(f"{prefix}time_embed.0", emb, base)
    yield from _linear(f"{prefix}time_embed.2", emb, emb)
    yield from _conv(f"{prefix}input_blocks.0.0", base, 4, 3)
    skips, channels, index = [base], base, 1
    for level, mult in enumerate(mults):
        for _ in range(2):
            yield from _res_block(f"{prefix}input_blocks.{index}.0", channels, base * mult, emb)
            channels = base * mult
            if level in attention_levels:
                yield from _spatial_transformer(f"{prefix}input_blocks.{index}.1", channels, context)
            skips.append(channels)
            index += 1
        if level != len(mults) - 1:
            yield from _conv(f"{prefix}input_blocks.{index}.0.op", channels, channels, 3)
            skips.append(channels)
            index += 1
    yield from _res_block(f"{prefix}middle_block.0", channels, channels, emb)
    yield from _spatial_transformer(f"{prefix}middle_block.1", channels, context)
    yield from _res_block(f"{prefix}middle_block.2", channels, channels, emb)
    index = 0
    for level, mult in reversed(list(enumerate(mults))):
        for block in range(3):
            key = f"{prefix}output_blocks.{index}"
            yield from _res_block(f"{key}.0", channels + skips.pop(), base * mult, emb)
            channels = base * mult
            layer = 1
            if level in attention_levels:
                yield from _spatial_transformer(f"{key}.1", channels, context)
                layer = 2
            if level and block == 2:
                yield from _conv(f"{key}.{layer}.conv", channels, channels, 3)
            index += 1
    yield from _norm(f"{prefix}out.0", base)
    yield from _conv(f"{prefix}out.2", 4, base, 3)


# --- The KL autoencoder (ldm `AutoencoderKL`, 128 channels, multipliers 1, 2, 4, 4) -------------------------------


def _vae_res(key: str, inp: int, out: int) -> Iterator[Tensor]:
    yield from _norm(f"{key}.norm1", inp)
    yield from _conv(f"{key}.conv1", out, inp, 3)
    yield from _norm(f"{key}.norm2", out)
    yield from _conv(f"{key}.conv2", out, out, 3)
    if inp != out:
        yield from _conv(f"{key}.nin_shortcut", out, inp, 1)


def _vae_mid(key: str, channels: int) -> Iterator[Tensor]:
    yield from _vae_res(f"{key}.block_1", channels, channels)
    yield from _norm(f"{key}.attn_1.norm", channels)
    for name in ("q", "k", "v", "proj_out"):
        yield from _conv(f"{key}.attn_1.{name}", channels, channels, 1)
    yield from _vae_res(f"{key}.block_2", channels, channels)


def kl_vae(prefix: str = "first_stage_model.", latent: int = 4) -> Iterator[Tensor]:
    """The KL-f8 autoencoder of SD 1.x / 2.x / SDXL."""
    base, mults = 128, (1, 2, 4, 4)
    yield from _conv(f"{prefix}encoder.conv_in", base, 3, 3)
    channels = base
    for level, mult in enumerate(mults):
        for block in range(2):
            yield from _vae_res(f"{prefix}encoder.down.{level}.block.{block}", channels, base * mult)
            channels = base * mult
        if level != len(mults) - 1:
            yield from _conv(f"{prefix}encoder.down.{level}.downsample.conv", channels, channels, 3)
    yield from _vae_mid(f"{prefix}encoder.mid", channels)
    yield from _norm(f"{prefix}encoder.norm_out", channels)
    yield from _conv(f"{prefix}encoder.conv_out", 2 * latent, channels, 3)
    yield from _conv(f"{prefix}quant_conv", 2 * latent, 2 * latent, 1)
    yield from _conv(f"{prefix}post_quant_conv", latent, latent, 1)
    yield from _conv(f"{prefix}decoder.conv_in", channels, latent, 3)
    yield from _vae_mid(f"{prefix}decoder.mid", channels)
    for level, mult in reversed(list(enumerate(mults))):
        for block in range(3):
            yield from _vae_res(f"{prefix}decoder.up.{level}.block.{block}", channels, base * mult)
            channels = base * mult
        if level:
            yield from _conv(f"{prefix}decoder.up.{level}.upsample.conv", channels, channels, 3)
    yield from _norm(f"{prefix}decoder.norm_out", channels)
    yield from _conv(f"{prefix}decoder.conv_out", 3, channels, 3)


# --- CLIP ViT-L/14's text tower (transformers `CLIPTextModel` names) ------------------------------------------------


def clip_text(prefix: str, width: int = 768, layers: int = 12, vocab: int = 49408) -> Iterator[Tensor]:
    """CLIP's text transformer: 77 positions, MLP 4x, biases everywhere, final LayerNorm."""
    yield Tensor(f"{prefix}embeddings.token_embedding.weight", (vocab, width))
    yield Tensor(f"{prefix}embeddings.position_embedding.weight", (77, width))
    yield Tensor(f"{prefix}embeddings.position_ids", (1, 77), "buffer")
    for layer in range(layers):
        key = f"{prefix}encoder.layers.{layer}"
        for projection in ("k_proj", "v_proj", "q_proj", "out_proj"):
            yield from _linear(f"{key}.self_attn.{projection}", width, width)
        yield from _norm(f"{key}.layer_norm1", width)
        yield from _linear(f"{key}.mlp.fc1", width * 4, width)
        yield from _linear(f"{key}.mlp.fc2", width, width * 4)
        yield from _norm(f"{key}.layer_norm2", width)
    yield Tensor(f"{prefix}final_layer_norm.weight", (width,), "norm")
    yield Tensor(f"{prefix}final_layer_norm.bias", (width,), "final_norm_bias")


SCHEDULE_BUFFERS = (
    "betas",
    "alphas_cumprod",
    "alphas_cumprod_prev",
    "sqrt_alphas_cumprod",
    "sqrt_one_minus_alphas_cumprod",
    "log_one_minus_alphas_cumprod",
    "sqrt_recip_alphas_cumprod",
    "sqrt_recipm1_alphas_cumprod",
    "posterior_variance",
    "posterior_log_variance_clipped",
    "posterior_mean_coef1",
    "posterior_mean_coef2",
)


def schedule(steps: int = 1000, start: float = 0.00085, end: float = 0.012) -> dict:
    """The DDPM buffers ldm's `LatentDiffusion` registers, for its scaled-linear schedule (fp32)."""
    import torch

    betas = torch.linspace(math.sqrt(start), math.sqrt(end), steps, dtype=torch.float64) ** 2
    alphas = 1.0 - betas
    cumprod = torch.cumprod(alphas, dim=0)
    previous = torch.cat([torch.ones(1, dtype=torch.float64), cumprod[:-1]])
    variance = betas * (1.0 - previous) / (1.0 - cumprod)
    values = {
        "betas": betas,
        "alphas_cumprod": cumprod,
        "alphas_cumprod_prev": previous,
        "sqrt_alphas_cumprod": cumprod.sqrt(),
        "sqrt_one_minus_alphas_cumprod": (1.0 - cumprod).sqrt(),
        "log_one_minus_alphas_cumprod": (1.0 - cumprod).log(),
        "sqrt_recip_alphas_cumprod": (1.0 / cumprod).sqrt(),
        "sqrt_recipm1_alphas_cumprod": (1.0 / cumprod - 1).sqrt(),
        "posterior_variance": variance,
        "posterior_log_variance_clipped": variance.clamp(min=1e-20).log(),
        "posterior_mean_coef1": betas * previous.sqrt() / (1.0 - cumprod),
        "posterior_mean_coef2": (1.0 - previous) * alphas.sqrt() / (1.0 - cumprod),
    }
    return {name: values[name].float() for name in SCHEDULE_BUFFERS}


def sd15_layout() -> list[Tensor]:
    """Every key of an SD 1.5 single file (`v1-5-pruned-emaonly` layout): UNet, VAE, CLIP-L, schedule."""
    tensors = [*sd1_unet(), *kl_vae(), *clip_text("cond_stage_model.transformer.text_model.")]
    return tensors + [Tensor(name, (1000,), "buffer") for name in SCHEDULE_BUFFERS]


def sd1_lora_layout(rank: int = 4) -> list[tuple[str, int, int]]:
    """Kohya LoRA modules of SD 1.x as `(name, in, out)`: CLIP-L's projections and the UNet's attention."""
    modules = []
    for layer in range(12):
        key = f"lora_te_text_model_encoder_layers_{layer}"
        modules += [(f"{key}_self_attn_{p}_proj", 768, 768) for p in ("q", "k", "v", "out")]
        modules += [(f"{key}_mlp_fc1", 768, 3072), (f"{key}_mlp_fc2", 3072, 768)]
    blocks = [(f"down_blocks_{level}_attentions_{n}", 320 * 2**level) for level in range(3) for n in range(2)]
    blocks += [("mid_block_attentions_0", 1280)]
    blocks += [(f"up_blocks_{level}_attentions_{n}", 1280 // 2 ** (level - 1)) for level in (1, 2, 3) for n in range(3)]
    for block, channels in blocks:
        key = f"lora_unet_{block}_transformer_blocks_0"
        for attention, source in (("attn1", channels), ("attn2", 768)):
            modules += [
                (f"{key}_{attention}_to_q", channels, channels),
                (f"{key}_{attention}_to_out_0", channels, channels),
            ]
            modules += [(f"{key}_{attention}_to_k", source, channels), (f"{key}_{attention}_to_v", source, channels)]
    return modules


def _fill(tensor: Tensor, generator, buffers: dict):
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


def write_checkpoint(layout: list[Tensor], path: Path, seed: int) -> int:
    """Draws every tensor of `layout` and saves them to `path` (safetensors); returns the number of keys."""
    import torch
    from safetensors.torch import save_file

    generator = torch.Generator().manual_seed(seed)
    buffers = schedule()
    state = {tensor.key: _fill(tensor, generator, buffers) for tensor in layout}
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Write a random-weight checkpoint in a family's original layout. Implemented: "
        f"{', '.join(IMPLEMENTED)}; the other families exit with status 2 (not implemented yet).",
    )
    parser.add_argument("--family", required=True, choices=FAMILIES)
    parser.add_argument("--out", required=True, type=Path, help="folder to write the files into (created)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--lora", action="store_true", help="also write a random LoRA (kohya key names)")
    args = parser.parse_args(argv)
    if args.family not in IMPLEMENTED:
        print(f"random_checkpoint: --family {args.family} is not implemented yet (only: {', '.join(IMPLEMENTED)})")
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"{args.family}-random.safetensors"
    count = write_checkpoint(sd15_layout(), path, args.seed)
    print(f"{path}: {count} keys, {path.stat().st_size / 1e9:.2f} GB")
    if args.lora:
        lora = args.out / f"{args.family}-random-lora.safetensors"
        count = write_lora(sd1_lora_layout(), lora, args.seed + 1)
        print(f"{lora}: {count} keys")
    return 0


if __name__ == "__main__":
    sys.exit(main())
