"""Stand-in for the model side of ``modules/sd_models.py``: SD1/SD2-style models whose
``cond_stage_model`` is the hijacked text encoder, and the family flags the WebUI sets.

SD1: ldm ``FrozenCLIPEmbedder`` (HF ``CLIPTextModel``) wrapped in ``FrozenCLIPEmbedderWithCustomWords``.
SD2: ldm ``FrozenOpenCLIPEmbedder`` (open_clip text tower, ``layer="penultimate"``) wrapped in
``FrozenOpenCLIPEmbedderWithCustomWords``. Both token embeddings are replaced by
``sd_hijack.EmbeddingsWithFixes`` (textual inversion), as ``model_hijack.hijack`` does."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch

from modules import sd_hijack, sd_hijack_clip, sd_hijack_open_clip


@dataclass(frozen=True)
class CheckpointInfo:
    name: str
    title: str = ""
    short_title: str = ""
    hash: str = "0000000000"
    name_for_extra: str = ""


class FrozenCLIPEmbedder(torch.nn.Module):
    """What ldm/sgm wrap: a tokenizer and a ``transformers.CLIPTextModel`` (``.transformer``).

    ``layer``/``layer_idx`` matter for SDXL's CLIP-L only ("hidden", -2 = penultimate)."""

    def __init__(self, tokenizer, transformer, layer="last", layer_idx=None):
        super().__init__()
        self.tokenizer = tokenizer
        self.transformer = transformer
        self.layer = layer
        self.layer_idx = layer_idx
        self.input_key = "txt"
        self.return_pooled = False
        self.is_trainable = False
        self.ucg_rate = 0.0


class FrozenOpenCLIPEmbedder(torch.nn.Module):
    """ldm's SD2 text encoder: ``model`` is an open_clip text tower; ``layer`` "last" (layer_idx 0) or
    "penultimate" (layer_idx 1): the last ``layer_idx`` blocks are skipped, then ``ln_final``.

    ``tokenizer`` is a stand-in extra (the real one calls ``open_clip.tokenize``)."""

    LAYERS = ["last", "penultimate"]

    def __init__(self, model, tokenizer=None, layer="last", max_length=77, device="cpu"):
        super().__init__()
        assert layer in self.LAYERS
        self.model = model
        self.tokenizer = tokenizer
        self.device = device
        self.max_length = max_length
        self.layer = layer
        self.layer_idx = 0 if layer == "last" else 1
        self.input_key = "txt"
        self.is_trainable = False
        self.ucg_rate = 0.0

    def forward(self, text):
        from open_clip_text import tokenize

        return self.encode_with_transformer(tokenize(self.tokenizer, text).to(self.device))

    def encode_with_transformer(self, text):
        x = self.model.token_embedding(text)  # (N, L, D)
        x = x + self.model.positional_embedding
        x = x.permute(1, 0, 2)  # NLD -> LND
        x = self.text_transformer_forward(x, attn_mask=self.model.attn_mask)
        x = x.permute(1, 0, 2)
        return self.model.ln_final(x)

    def text_transformer_forward(self, x, attn_mask=None):
        blocks = self.model.transformer.resblocks
        for i, block in enumerate(blocks):
            if i == len(blocks) - self.layer_idx:
                break
            x = block(x, attn_mask=attn_mask)
        return x

    def encode(self, text):
        return self(text)


def set_family_flags(model, family: str):
    """The WebUI's ``sd_models.set_model_type`` flags: exactly one of them is True."""
    for flag in ("is_sd1", "is_sd2", "is_sdxl", "is_ssd", "is_sd3"):
        setattr(model, flag, False)
    setattr(model, f"is_{family}", True)


class StandinSD1Model(torch.nn.Module):
    """``get_learned_conditioning(texts)`` -> tensor (batch, 77 * chunks, hidden)."""

    family = "sd1"

    def __init__(self, tokenizer, transformer, name="standin-sd1"):
        super().__init__()
        self.cond_stage_model = self._hijacked_encoder(tokenizer, transformer)
        self.cond_stage_key = "txt"
        self.sd_checkpoint_info = CheckpointInfo(name=name, title=name, short_title=name, name_for_extra=name)
        self.sd_model_hash = self.sd_checkpoint_info.hash
        self.latent_channels = 4
        self.parameterization = "eps"
        set_family_flags(self, self.family)
        self.is_sdxl_inpaint = False

    @staticmethod
    def _hijacked_encoder(tokenizer, transformer):
        hijack = sd_hijack.model_hijack
        embeddings = sd_hijack_clip._text_model(transformer).embeddings
        embeddings.token_embedding = sd_hijack.EmbeddingsWithFixes(embeddings.token_embedding, hijack)
        return sd_hijack_clip.FrozenCLIPEmbedderWithCustomWords(FrozenCLIPEmbedder(tokenizer, transformer), hijack)

    def get_learned_conditioning(self, c):
        return self.cond_stage_model(c)

    @contextlib.contextmanager
    def ema_scope(self, context=None):
        yield


class StandinSD2Model(StandinSD1Model):
    """SD 2.x: OpenCLIP-H-style text tower, penultimate layer + ``ln_final``; conds (B, 77k, width).
    ``parameterization`` "v" (768-v models); nothing here depends on it."""

    family = "sd2"

    def __init__(self, tokenizer, open_clip_model, name="standin-sd2"):
        super().__init__(tokenizer, open_clip_model, name=name)
        self.parameterization = "v"

    @staticmethod
    def _hijacked_encoder(tokenizer, open_clip_model):
        hijack = sd_hijack.model_hijack
        open_clip_model.token_embedding = sd_hijack.EmbeddingsWithFixes(open_clip_model.token_embedding, hijack)
        wrapped = FrozenOpenCLIPEmbedder(open_clip_model, tokenizer, layer="penultimate")
        return sd_hijack_open_clip.FrozenOpenCLIPEmbedderWithCustomWords(wrapped, hijack)
