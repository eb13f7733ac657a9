"""The latent-diffusion (ldm) families' parts in their original single-file key names: the SD 1.x / 2.x UNet, the
KL autoencoder, CLIP ViT-L/14's text tower (transformers names), OpenCLIP's text tower (open_clip names), the DDPM
schedule buffers, and the layouts and LoRA modules of SD 1.5 and SD 2.1 (768-v).

The key names and shapes are written out from the architectures' published configurations (the
`v1-inference.yaml` and `v2-inference-v.yaml` of latent diffusion, OpenAI's CLIP ViT-L/14 and OpenCLIP's ViT-H/14
text towers); nothing is read from a host.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

from checkpoints.common import Tensor, conv, linear, norm, write_checkpoint, write_lora

# --- SD 1.x UNet (ldm `openaimodel.UNetModel`, v1-inference.yaml) -------------------------------------------------


def res_block(key: str, inp: int, out: int, emb: int) -> Iterator[Tensor]:
    """A UNet `ResBlock` with its time embedding projection (and a 1x1 skip when the channels change)."""
    yield from norm(f"{key}.in_layers.0", inp)
    yield from conv(f"{key}.in_layers.2", out, inp, 3)
    yield from linear(f"{key}.emb_layers.1", out, emb)
    yield from norm(f"{key}.out_layers.0", out)
    yield from conv(f"{key}.out_layers.3", out, out, 3)
    if inp != out:
        yield from conv(f"{key}.skip_connection", out, inp, 1)


def _projection(key: str, channels: int, linear_proj: bool) -> Iterator[Tensor]:
    if linear_proj:
        yield from linear(key, channels, channels)
    else:
        yield from conv(key, channels, channels, 1)


def spatial_transformer(
    key: str, channels: int, context: int, linear_proj: bool = False, depth: int = 1
) -> Iterator[Tensor]:
    """A `SpatialTransformer`: 1x1 convolutions in and out (SD 1.x) or linear ones (SD 2.x, SDXL), `depth` blocks."""
    yield from norm(f"{key}.norm", channels)
    yield from _projection(f"{key}.proj_in", channels, linear_proj)
    for index in range(depth):
        block = f"{key}.transformer_blocks.{index}"
        for attention, source in (("attn1", channels), ("attn2", context)):
            yield from linear(f"{block}.{attention}.to_q", channels, channels, bias=False)
            yield from linear(f"{block}.{attention}.to_k", channels, source, bias=False)
            yield from linear(f"{block}.{attention}.to_v", channels, source, bias=False)
            yield from linear(f"{block}.{attention}.to_out.0", channels, channels)
        yield from linear(f"{block}.ff.net.0.proj", channels * 8, channels)  # GEGLU: two halves of 4x
        yield from linear(f"{block}.ff.net.2", channels, channels * 4)
        for name in ("norm1", "norm2", "norm3"):
            yield from norm(f"{block}.{name}", channels)
    yield from _projection(f"{key}.proj_out", channels, linear_proj)


def unet(
    prefix: str = "model.diffusion_model.",
    context: int = 768,
    linear_proj: bool = False,
    mults: tuple[int, ...] = (1, 2, 4, 4),
    depths: tuple[int, ...] = (1, 1, 1, 0),
    middle_depth: int = 1,
    adm: int = 0,
) -> Iterator[Tensor]:
    """ldm's `UNetModel` of 320 channels and two res blocks a level: by default SD 1.x's (multipliers 1, 2, 4, 4,
    one transformer block on the first three levels); SD 2.x's with `context` 1024 and `linear_proj`; SDXL's with
    its multipliers, transformer `depths` a level (0: none), `middle_depth` and the `label_emb` of an `adm`-wide
    vector."""
    base, emb = 320, 1280
    yield from linear(f"{prefix}time_embed.0", emb, base)
    yield from linear(f"{prefix}time_embed.2", emb, emb)
    if adm:
        yield from linear(f"{prefix}label_emb.0.0", emb, adm)
        yield from linear(f"{prefix}label_emb.0.2", emb, emb)
    yield from conv(f"{prefix}input_blocks.0.0", base, 4, 3)
    skips, channels, index = [base], base, 1
    for level, mult in enumerate(mults):
        for _ in range(2):
            yield from res_block(f"{prefix}input_blocks.{index}.0", channels, base * mult, emb)
            channels = base * mult
            if depths[level]:
                key = f"{prefix}input_blocks.{index}.1"
                yield from spatial_transformer(key, channels, context, linear_proj, depths[level])
            skips.append(channels)
            index += 1
        if level != len(mults) - 1:
            yield from conv(f"{prefix}input_blocks.{index}.0.op", channels, channels, 3)
            skips.append(channels)
            index += 1
    yield from res_block(f"{prefix}middle_block.0", channels, channels, emb)
    yield from spatial_transformer(f"{prefix}middle_block.1", channels, context, linear_proj, middle_depth)
    yield from res_block(f"{prefix}middle_block.2", channels, channels, emb)
    index = 0
    for level, mult in reversed(list(enumerate(mults))):
        for block in range(3):
            key = f"{prefix}output_blocks.{index}"
            yield from res_block(f"{key}.0", channels + skips.pop(), base * mult, emb)
            channels = base * mult
            layer = 1
            if depths[level]:
                yield from spatial_transformer(f"{key}.1", channels, context, linear_proj, depths[level])
                layer = 2
            if level and block == 2:
                yield from conv(f"{key}.{layer}.conv", channels, channels, 3)
            index += 1
    yield from norm(f"{prefix}out.0", base)
    yield from conv(f"{prefix}out.2", 4, base, 3)


# --- The KL autoencoder (ldm `AutoencoderKL`, 128 channels, multipliers 1, 2, 4, 4) -------------------------------


def _vae_res(key: str, inp: int, out: int) -> Iterator[Tensor]:
    yield from norm(f"{key}.norm1", inp)
    yield from conv(f"{key}.conv1", out, inp, 3)
    yield from norm(f"{key}.norm2", out)
    yield from conv(f"{key}.conv2", out, out, 3)
    if inp != out:
        yield from conv(f"{key}.nin_shortcut", out, inp, 1)


def _vae_mid(key: str, channels: int) -> Iterator[Tensor]:
    yield from _vae_res(f"{key}.block_1", channels, channels)
    yield from norm(f"{key}.attn_1.norm", channels)
    for name in ("q", "k", "v", "proj_out"):
        yield from conv(f"{key}.attn_1.{name}", channels, channels, 1)
    yield from _vae_res(f"{key}.block_2", channels, channels)


def kl_vae(prefix: str = "first_stage_model.", latent: int = 4) -> Iterator[Tensor]:
    """The KL-f8 autoencoder of SD 1.x / 2.x / SDXL."""
    base, mults = 128, (1, 2, 4, 4)
    yield from conv(f"{prefix}encoder.conv_in", base, 3, 3)
    channels = base
    for level, mult in enumerate(mults):
        for block in range(2):
            yield from _vae_res(f"{prefix}encoder.down.{level}.block.{block}", channels, base * mult)
            channels = base * mult
        if level != len(mults) - 1:
            yield from conv(f"{prefix}encoder.down.{level}.downsample.conv", channels, channels, 3)
    yield from _vae_mid(f"{prefix}encoder.mid", channels)
    yield from norm(f"{prefix}encoder.norm_out", channels)
    yield from conv(f"{prefix}encoder.conv_out", 2 * latent, channels, 3)
    yield from conv(f"{prefix}quant_conv", 2 * latent, 2 * latent, 1)
    yield from conv(f"{prefix}post_quant_conv", latent, latent, 1)
    yield from conv(f"{prefix}decoder.conv_in", channels, latent, 3)
    yield from _vae_mid(f"{prefix}decoder.mid", channels)
    for level, mult in reversed(list(enumerate(mults))):
        for block in range(3):
            yield from _vae_res(f"{prefix}decoder.up.{level}.block.{block}", channels, base * mult)
            channels = base * mult
        if level:
            yield from conv(f"{prefix}decoder.up.{level}.upsample.conv", channels, channels, 3)
    yield from norm(f"{prefix}decoder.norm_out", channels)
    yield from conv(f"{prefix}decoder.conv_out", 3, channels, 3)


# --- CLIP ViT-L/14's text tower (transformers `CLIPTextModel` names) ------------------------------------------------


def clip_text(prefix: str, width: int = 768, layers: int = 12, vocab: int = 49408) -> Iterator[Tensor]:
    """CLIP's text transformer: 77 positions, MLP 4x, biases everywhere, final LayerNorm."""
    yield Tensor(f"{prefix}embeddings.token_embedding.weight", (vocab, width))
    yield Tensor(f"{prefix}embeddings.position_embedding.weight", (77, width))
    yield Tensor(f"{prefix}embeddings.position_ids", (1, 77), "buffer")
    for layer in range(layers):
        key = f"{prefix}encoder.layers.{layer}"
        for projection in ("k_proj", "v_proj", "q_proj", "out_proj"):
            yield from linear(f"{key}.self_attn.{projection}", width, width)
        yield from norm(f"{key}.layer_norm1", width)
        yield from linear(f"{key}.mlp.fc1", width * 4, width)
        yield from linear(f"{key}.mlp.fc2", width, width * 4)
        yield from norm(f"{key}.layer_norm2", width)
    yield Tensor(f"{prefix}final_layer_norm.weight", (width,), "norm")
    yield Tensor(f"{prefix}final_layer_norm.bias", (width,), "final_norm_bias")


# --- OpenCLIP's text tower (open_clip `CLIP` names, its vision tower removed) ----------------------------------------


def open_clip_text(prefix: str, width: int, layers: int, vocab: int = 49408) -> Iterator[Tensor]:
    """OpenCLIP's text transformer (ViT-H/14: 1024 wide, 24 layers; ViT-bigG/14: 1280, 32): 77 positions, fused
    q/k/v `in_proj`, MLP 4x, final LayerNorm, a square text projection and the logit scale."""
    yield Tensor(f"{prefix}positional_embedding", (77, width))
    yield Tensor(f"{prefix}text_projection", (width, width))
    yield Tensor(f"{prefix}logit_scale", (), "buffer")
    yield Tensor(f"{prefix}token_embedding.weight", (vocab, width))
    for layer in range(layers):
        key = f"{prefix}transformer.resblocks.{layer}"
        yield from norm(f"{key}.ln_1", width)
        yield Tensor(f"{key}.attn.in_proj_weight", (3 * width, width))
        yield Tensor(f"{key}.attn.in_proj_bias", (3 * width,), "bias")
        yield from linear(f"{key}.attn.out_proj", width, width)
        yield from norm(f"{key}.ln_2", width)
        yield from linear(f"{key}.mlp.c_fc", width * 4, width)
        yield from linear(f"{key}.mlp.c_proj", width, width * 4)
    yield Tensor(f"{prefix}ln_final.weight", (width,), "norm")
    yield Tensor(f"{prefix}ln_final.bias", (width,), "final_norm_bias")


def logit_scale(key: str) -> dict:
    """CLIP's trained-from value of the logit scale, log(1 / 0.07), as a buffer value for `key`."""
    import torch

    return {key: torch.tensor(math.log(1 / 0.07), dtype=torch.float16)}


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
    tensors = [*unet(), *kl_vae(), *clip_text("cond_stage_model.transformer.text_model.")]
    return tensors + [Tensor(name, (1000,), "buffer") for name in SCHEDULE_BUFFERS]


def text_lora_modules(prefix: str, width: int, layers: int) -> list[tuple[str, int, int]]:
    """Kohya LoRA modules `(name, in, out)` of a CLIP text tower, in kohya's (transformers) names under `prefix`
    (`lora_te`, `lora_te1`, `lora_te2`): each layer's q, k, v, out projections and its MLP. The hosts map these
    names onto OpenCLIP's fused `in_proj` and `c_fc` / `c_proj` themselves."""
    modules = []
    for layer in range(layers):
        key = f"{prefix}_text_model_encoder_layers_{layer}"
        modules += [(f"{key}_self_attn_{p}_proj", width, width) for p in ("q", "k", "v", "out")]
        modules += [(f"{key}_mlp_fc1", width, 4 * width), (f"{key}_mlp_fc2", 4 * width, width)]
    return modules


def unet_attention_lora(blocks: list[tuple[str, int]], context: int) -> list[tuple[str, int, int]]:
    """Kohya LoRA modules `(name, in, out)` on the attention projections of the first transformer block of each
    `(block name, channels)`: self-attention from the block's channels, cross-attention from `context`."""
    modules = []
    for block, channels in blocks:
        key = f"lora_unet_{block}_transformer_blocks_0"
        for attention, source in (("attn1", channels), ("attn2", context)):
            modules += [
                (f"{key}_{attention}_to_q", channels, channels),
                (f"{key}_{attention}_to_out_0", channels, channels),
            ]
            modules += [(f"{key}_{attention}_to_k", source, channels), (f"{key}_{attention}_to_v", source, channels)]
    return modules


def sd1_lora_layout(context: int = 768, text_layers: int = 12) -> list[tuple[str, int, int]]:
    """Kohya LoRA modules of SD 1.x (and, with `context` 1024 and 24 layers, SD 2.x) as `(name, in, out)`: the text
    encoder's projections and the UNet's attention (diffusers block names)."""
    modules = text_lora_modules("lora_te", context, text_layers)
    blocks = [(f"down_blocks_{level}_attentions_{n}", 320 * 2**level) for level in range(3) for n in range(2)]
    blocks += [("mid_block_attentions_0", 1280)]
    blocks += [(f"up_blocks_{level}_attentions_{n}", 1280 // 2 ** (level - 1)) for level in (1, 2, 3) for n in range(3)]
    return modules + unet_attention_lora(blocks, context)


def write_sd15(out: Path, seed: int, lora: bool) -> list[Path]:
    """`sd15-random.safetensors` (one file, `v1-5-pruned-emaonly` layout) and, with `lora`, its LoRA."""
    path = out / "sd15-random.safetensors"
    write_checkpoint(sd15_layout(), path, seed, buffers=schedule())
    written = [path]
    if lora:
        written.append(out / "sd15-random-lora.safetensors")
        write_lora(sd1_lora_layout(), written[-1], seed + 1)
    return written


def sd2_layout() -> list[Tensor]:
    """Every key of an SD 2.1 768-v single file (`v2-inference-v.yaml`): UNet with context 1024 and linear
    projections, VAE, OpenCLIP ViT-H/14's text tower, schedule."""
    tensors = [*unet(context=1024, linear_proj=True), *kl_vae()]
    tensors += open_clip_text("cond_stage_model.model.", 1024, 24)
    return tensors + [Tensor(name, (1000,), "buffer") for name in SCHEDULE_BUFFERS]


def write_sd2(out: Path, seed: int, lora: bool) -> list[Path]:
    """`sd2-random.safetensors` (one file, `v2-1_768-ema-pruned` layout) and, with `lora`, its LoRA."""
    path = out / "sd2-random.safetensors"
    buffers = {**schedule(), **logit_scale("cond_stage_model.model.logit_scale")}
    write_checkpoint(sd2_layout(), path, seed, buffers=buffers)
    written = [path]
    if lora:
        written.append(out / "sd2-random-lora.safetensors")
        write_lora(sd1_lora_layout(context=1024, text_layers=24), written[-1], seed + 1)
    return written
