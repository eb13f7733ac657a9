"""Builds the stand-in's CLIP objects per family, with tiny random weights, and embeddings and LoRAs for them."""

from __future__ import annotations

from dataclasses import dataclass

import comfy.sd
import llm_tokenizers
import torch
from comfy import sd1_clip, sdxl_clip
from comfy.text_encoders import flux, hidream, lumina2, pixart_t5, qwen_image, sd2_clip, sd3_clip
from tokenizers import processors

FAMILIES = ("sd1", "sd2", "sdxl", "sd3", "flux", "chroma")
LLM_FAMILIES = ("lumina2", "qwen_image", "hidream")  # language-model families (tests of their own)


def _clip_tokenizer():
    from flowcore.testing import clip_tokenizer

    return clip_tokenizer()


def _t5_tokenizer():
    """A T5-style SentencePiece tokenizer (pad 0, end 1, no start token) that appends its end token."""
    from tokenizer_families import sentencepiece

    tokenizer = sentencepiece(start_token=False)
    tokenizer.backend_tokenizer.post_processor = processors.TemplateProcessing(
        single="$A </s>", special_tokens=[("</s>", tokenizer.convert_tokens_to_ids("</s>"))]
    )
    return tokenizer


_cache = {}


def _cached(name, build):
    if name not in _cache:
        _cache[name] = build()
    return _cache[name]


sd1_clip.TOKENIZERS["clip"] = lambda: _cached("clip", _clip_tokenizer)
sd1_clip.TOKENIZERS["t5"] = lambda: _cached("t5", _t5_tokenizer)
sd1_clip.TOKENIZERS["qwen25"] = lambda: _cached("qwen25", llm_tokenizers.qwen25)
sd1_clip.TOKENIZERS["llama3"] = lambda: _cached("llama3", llm_tokenizers.llama3)
sd1_clip.TOKENIZERS["gemma"] = lambda **options: _cached(
    ("gemma", tuple(sorted(options.items()))), lambda: llm_tokenizers.SPieceTokenizer(**options)
)


@dataclass
class Target:
    clip: type
    tokenizer: type


TARGETS = {
    "sd1": Target(sd1_clip.SD1ClipModel, sd1_clip.SD1Tokenizer),
    "sd2": Target(sd2_clip.SD2ClipModel, sd2_clip.SD2Tokenizer),
    "sdxl": Target(sdxl_clip.SDXLClipModel, sdxl_clip.SDXLTokenizer),
    "sd3": Target(sd3_clip.sd3_clip(), sd3_clip.SD3Tokenizer),
    "flux": Target(flux.flux_clip(), flux.FluxTokenizer),
    "chroma": Target(pixart_t5.pixart_te(), pixart_t5.PixArtTokenizer),
    "lumina2": Target(lumina2.te(), lumina2.LuminaTokenizer),
    "qwen_image": Target(qwen_image.te(), qwen_image.QwenImageTokenizer),
    "hidream": Target(hidream.hidream_clip(), hidream.HiDreamTokenizer),
    "hidream_no_t5": Target(hidream.hidream_clip(t5=False), hidream.HiDreamTokenizer),
}


def _randomize(model: torch.nn.Module, seed: int) -> None:
    """Random weights, std 0.02 (norm weights near 1, small random norm biases, as real checkpoints have)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            noise = torch.randn(parameter.shape, generator=generator) * 0.02
            if "norm" in name and name.endswith("weight"):
                parameter.copy_(1.0 + noise)
            else:
                parameter.copy_(noise * (10 if "embedding" in name or "shared" in name else 1))


def make_clip(family: str, seed: int = 0, embedding_directory: str | None = None, t5_min_length=None):
    """A `comfy.sd.CLIP` of a family (`FAMILIES`, `LLM_FAMILIES`, "hidream_no_t5") with tiny random weights."""
    target = TARGETS[family]
    data = {} if t5_min_length is None else {"t5xxl_min_length": t5_min_length}
    clip = comfy.sd.CLIP(target, embedding_directory=embedding_directory, tokenizer_data=data)
    _randomize(clip.cond_stage_model, seed)
    return clip


def add_embedding(directory: str, name: str, vectors: dict[str, torch.Tensor]) -> None:
    """An embedding file `name` in `directory`: one tensor `(n, width)` per key ("clip_l", "clip_g", ...)."""
    sd1_clip.EMBEDDINGS[(directory, name)] = vectors


def make_lora(clip, seed: int = 5, scale: float = 0.05) -> dict[str, torch.Tensor]:
    """Weight deltas for every attention projection of the text encoders (what a LoRA's patches add)."""
    generator = torch.Generator().manual_seed(seed)
    return {
        name: torch.randn(parameter.shape, generator=generator) * scale
        for name, parameter in clip.cond_stage_model.named_parameters()
        if "self_attn" in name and name.endswith("weight")
    }
