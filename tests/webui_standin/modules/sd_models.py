"""Stand-in for the model side of ``modules/sd_models.py``: an SD1-style model whose
``cond_stage_model`` is the hijacked CLIP text encoder, and the family flags the WebUI sets."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch

from modules import sd_hijack, sd_hijack_clip


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


def set_family_flags(model, family: str):
    """The WebUI's ``sd_models.set_model_type`` flags: exactly one of them is True."""
    for flag in ("is_sd1", "is_sd2", "is_sdxl", "is_ssd", "is_sd3"):
        setattr(model, flag, False)
    setattr(model, f"is_{family}", True)


class StandinSD1Model(torch.nn.Module):
    """``get_learned_conditioning(texts)`` -> tensor (batch, 77 * chunks, hidden)."""

    def __init__(self, tokenizer, transformer, name="standin-sd1"):
        super().__init__()
        wrapped = FrozenCLIPEmbedder(tokenizer, transformer)
        self.cond_stage_model = sd_hijack_clip.FrozenCLIPEmbedderWithCustomWords(wrapped, sd_hijack.model_hijack)
        self.cond_stage_key = "txt"
        self.sd_checkpoint_info = CheckpointInfo(name=name, title=name, short_title=name, name_for_extra=name)
        self.sd_model_hash = self.sd_checkpoint_info.hash
        self.latent_channels = 4
        self.parameterization = "eps"
        set_family_flags(self, "sd1")
        self.is_sdxl_inpaint = False

    def get_learned_conditioning(self, c):
        return self.cond_stage_model(c)

    @contextlib.contextmanager
    def ema_scope(self, context=None):
        yield
