"""The diffusion-transformer families (SD 3.5, Flux dev, Flux schnell, Chroma) as the separate files their loaders
read: the diffusion model alone (ComfyUI's `UNETLoader`, `<out>/<family>-random.safetensors`), the 16-channel
autoencoder (`VAELoader`, `<out>/<family>-ae-random.safetensors`) and the text encoders (`text_encoders.py`,
shared by the families in `<out>/../text_encoders/`).

| family | diffusion model (fp16, original key names) | text encoders |
|---|---|---|
| sd35 | MMDiT as in SD 3.5 Large (RMS q/k norms, pos_embed 192x192), 2 joint blocks, width 128 | l, g, t5xxl |
| flux-dev | Flux (width 3072, 24 heads), 1 double and 1 single block, with `guidance_in` | l, t5xxl |
| flux-schnell | the same without `guidance_in` | l, t5xxl |
| chroma | Chroma: Flux blocks without modulation, `distilled_guidance_layer` (5 layers of 5120) | t5xxl |

The depth is the only thing made small: a host reads it from the keys (MMDiT's width is 64 x depth), so the
shallow files are taken for the family. Layouts follow the released files (Stability AI's `sd3.5_large`, Black
Forest Labs' `flux1-dev` / `flux1-schnell`, lodestones' Chroma, and the Flux `ae`); nothing is read from a host.
No LoRA is written for these families.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from checkpoints.common import Tensor, conv, linear, write_checkpoint
from checkpoints.ldm import kl_vae
from checkpoints.text_encoders import write_text_encoders

SD35_DEPTH = 2  # joint blocks; MMDiT's width is 64 per block (ComfyUI reads depth = width // 64)
SD35_POSITIONS = 192 * 192  # SD 3.5 Large's pos_embed_max_size squared
FLUX_WIDTH, FLUX_MLP, FLUX_HEAD = 3072, 12288, 128
CHROMA_GUIDANCE_WIDTH, CHROMA_GUIDANCE_LAYERS = 5120, 5


def vae16() -> list[Tensor]:
    """The 16-channel autoencoder of SD 3 and Flux: the KL-f8 autoencoder with 16 latent channels and no
    quant convolutions."""
    return [tensor for tensor in kl_vae(prefix="", latent=16) if "quant_conv" not in tensor.key]


def _mmdit_block(key: str, width: int, pre_only: bool) -> Iterator[Tensor]:
    """One half (`context_block` or `x_block`) of an MMDiT joint block; the last context block is `pre_only`."""
    yield from linear(f"{key}.adaLN_modulation.1", (2 if pre_only else 6) * width, width)
    yield from linear(f"{key}.attn.qkv", 3 * width, width)
    yield Tensor(f"{key}.attn.ln_q.weight", (64,), "norm")
    yield Tensor(f"{key}.attn.ln_k.weight", (64,), "norm")
    if not pre_only:
        yield from linear(f"{key}.attn.proj", width, width)
        yield from linear(f"{key}.mlp.fc1", 4 * width, width)
        yield from linear(f"{key}.mlp.fc2", width, 4 * width)


def sd35(depth: int = SD35_DEPTH) -> Iterator[Tensor]:
    """SD 3.5 Large's MMDiT at `depth` joint blocks (width 64 x depth), as `UNETLoader` reads it."""
    width = 64 * depth
    yield Tensor("pos_embed", (1, SD35_POSITIONS, width))
    yield from conv("x_embedder.proj", width, 16, 2)
    yield from linear("t_embedder.mlp.0", width, 256)
    yield from linear("t_embedder.mlp.2", width, width)
    yield from linear("y_embedder.mlp.0", width, 2048)
    yield from linear("y_embedder.mlp.2", width, width)
    yield from linear("context_embedder", width, 4096)
    for block in range(depth):
        yield from _mmdit_block(f"joint_blocks.{block}.context_block", width, pre_only=block == depth - 1)
        yield from _mmdit_block(f"joint_blocks.{block}.x_block", width, pre_only=False)
    yield from linear("final_layer.linear", 2 * 2 * 16, width)
    yield from linear("final_layer.adaLN_modulation.1", 2 * width, width)


def _qk_norm(key: str) -> Iterator[Tensor]:
    yield Tensor(f"{key}.norm.query_norm.scale", (FLUX_HEAD,), "norm")
    yield Tensor(f"{key}.norm.key_norm.scale", (FLUX_HEAD,), "norm")


def _embedder(key: str, inp: int) -> Iterator[Tensor]:
    """Flux's `MLPEmbedder`: in_layer, SiLU, out_layer."""
    yield from linear(f"{key}.in_layer", FLUX_WIDTH, inp)
    yield from linear(f"{key}.out_layer", FLUX_WIDTH, FLUX_WIDTH)


def _flux_blocks(double: int, single: int, modulated: bool) -> Iterator[Tensor]:
    """Flux's double-stream and single-stream blocks; Chroma's have no modulation layers (`modulated=False`)."""
    for block in range(double):
        for stream in ("img", "txt"):
            key = f"double_blocks.{block}.{stream}"
            if modulated:
                yield from linear(f"{key}_mod.lin", 6 * FLUX_WIDTH, FLUX_WIDTH)
            yield from linear(f"{key}_attn.qkv", 3 * FLUX_WIDTH, FLUX_WIDTH)
            yield from _qk_norm(f"{key}_attn")
            yield from linear(f"{key}_attn.proj", FLUX_WIDTH, FLUX_WIDTH)
            yield from linear(f"{key}_mlp.0", FLUX_MLP, FLUX_WIDTH)
            yield from linear(f"{key}_mlp.2", FLUX_WIDTH, FLUX_MLP)
    for block in range(single):
        key = f"single_blocks.{block}"
        yield from linear(f"{key}.linear1", 3 * FLUX_WIDTH + FLUX_MLP, FLUX_WIDTH)
        yield from linear(f"{key}.linear2", FLUX_WIDTH, FLUX_WIDTH + FLUX_MLP)
        yield from _qk_norm(key)
        if modulated:
            yield from linear(f"{key}.modulation.lin", 3 * FLUX_WIDTH, FLUX_WIDTH)


def flux(guidance: bool, double: int = 1, single: int = 1) -> Iterator[Tensor]:
    """Flux dev (`guidance=True`: the distilled guidance embedder `guidance_in`) or schnell, at `double` double and
    `single` single blocks."""
    yield from linear("img_in", FLUX_WIDTH, 64)
    yield from _embedder("time_in", 256)
    yield from _embedder("vector_in", 768)
    if guidance:
        yield from _embedder("guidance_in", 256)
    yield from linear("txt_in", FLUX_WIDTH, 4096)
    yield from _flux_blocks(double, single, modulated=True)
    yield from linear("final_layer.linear", 64, FLUX_WIDTH)
    yield from linear("final_layer.adaLN_modulation.1", 2 * FLUX_WIDTH, FLUX_WIDTH)


def chroma(double: int = 1, single: int = 1) -> Iterator[Tensor]:
    """Chroma: Flux's blocks without modulation, which its `distilled_guidance_layer` (an MLP from timestep and
    guidance features to every block's modulation) gives instead; no CLIP-L vector input."""
    yield from linear("img_in", FLUX_WIDTH, 64)
    yield from linear("txt_in", FLUX_WIDTH, 4096)
    approximator = "distilled_guidance_layer"
    yield from linear(f"{approximator}.in_proj", CHROMA_GUIDANCE_WIDTH, 64)
    for layer in range(CHROMA_GUIDANCE_LAYERS):
        yield from linear(f"{approximator}.layers.{layer}.in_layer", CHROMA_GUIDANCE_WIDTH, CHROMA_GUIDANCE_WIDTH)
        yield from linear(f"{approximator}.layers.{layer}.out_layer", CHROMA_GUIDANCE_WIDTH, CHROMA_GUIDANCE_WIDTH)
        yield Tensor(f"{approximator}.norms.{layer}.scale", (CHROMA_GUIDANCE_WIDTH,), "norm")
    yield from linear(f"{approximator}.out_proj", FLUX_WIDTH, CHROMA_GUIDANCE_WIDTH)
    yield from _flux_blocks(double, single, modulated=False)
    yield from linear("final_layer.linear", 64, FLUX_WIDTH)


FAMILIES = {  # family -> (diffusion model layout, text encoders)
    "sd35": (lambda: list(sd35()), ("clip_l", "clip_g", "t5xxl")),
    "flux-dev": (lambda: list(flux(guidance=True)), ("clip_l", "t5xxl")),
    "flux-schnell": (lambda: list(flux(guidance=False)), ("clip_l", "t5xxl")),
    "chroma": (lambda: list(chroma()), ("t5xxl",)),
}


def write_family(family: str, out: Path, seed: int) -> list[Path]:
    """`<family>-random.safetensors` (the diffusion model) and `<family>-ae-random.safetensors` in `out`, and the
    family's text encoders in `out/../text_encoders` (written once, shared)."""
    layout, encoders = FAMILIES[family]
    model, vae = out / f"{family}-random.safetensors", out / f"{family}-ae-random.safetensors"
    write_checkpoint(layout(), model, seed)
    write_checkpoint(vae16(), vae, seed + 1)
    return [model, vae, *write_text_encoders(out.parent / "text_encoders", seed, encoders)]


def write_sd35(out: Path, seed: int, lora: bool) -> list[Path]:
    return write_family("sd35", out, seed)


def write_flux_dev(out: Path, seed: int, lora: bool) -> list[Path]:
    return write_family("flux-dev", out, seed)


def write_flux_schnell(out: Path, seed: int, lora: bool) -> list[Path]:
    return write_family("flux-schnell", out, seed)


def write_chroma(out: Path, seed: int, lora: bool) -> list[Path]:
    return write_family("chroma", out, seed)
