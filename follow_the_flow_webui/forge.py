"""Stable Diffusion WebUI Forge (f2.0.1v1.10.1): its diffusion engine's text encoders as the parts `flowcore`
patches.

Forge runs every family through its own text engines (`backend.text_processing`): CLIP ones
(`ClassicTextProcessingEngine`: transformers CLIP models, layer `-max(clip_skip, minimal_clip_skip)`, final norm
or not) and a T5 one. What a conditioning's `crossattn` holds, per family:

| family | engines | `crossattn` rows | parts patched |
|---|---|---|---|
| SD 1.x / 2.x | `text_processing_engine` | CLIP, 77 per chunk | CLIP |
| SDXL | `text_processing_engine_l`, `_g` | CLIP-L and CLIP-G side by side | CLIP (both halves) |
| SD 3.5 | `_l`, `_g`, `_t5` | CLIP-L/G side by side (zero-padded to T5's width), then T5's rows | CLIP, then T5 |
| Flux, Chroma | (`_l` pooled only), `_t5` | T5 | T5 |

Every encode first loads the text encoders as Forge does before its own encodes (`load_model_gpu`), which also
applies a LoRA's patches to their weights; our encodes do not call the engines' `__call__`, so Forge's
`last_extra_generation_params` (its infotext notes) are never written by them.
"""

from __future__ import annotations

import contextlib

import torch

from flowcore.encoders.clip import ClipTower
from flowcore.errors import MappingError

from .clip_part import ClipPart, TextualInversion
from .t5_part import T5Part


class ForgeClipTower(ClipTower):
    """A Forge CLIP engine's transformers model, read at the engine's layer. Forge runs the two embeddings in
    float32 whatever the model's dtype, so these do too."""

    def __init__(self, engine, inversion: TextualInversion):
        layer = -max(int(engine.clip_skip), int(engine.minimal_clip_skip))
        super().__init__(engine.tokenizer, engine.text_encoder.transformer, layer, bool(engine.final_layer_norm))
        self.bos_id, self.eos_id, self.pad_id = engine.id_start, engine.id_end, engine.id_pad
        self.inversion = inversion

    def token_embeddings(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.inversion.lookup(self.core.embeddings.token_embedding, input_ids).float()

    def position_embeddings(self, position_ids: torch.Tensor) -> torch.Tensor:
        return super().position_embeddings(position_ids).float()


def fragments(emphasis: str):
    """Forge's emphasis parser: `(text, weight)` pieces of a line, `BREAK` with weight -1."""

    def parse(line: str) -> list[tuple[str, float]]:
        from backend.text_processing import parsing

        return [(text, weight) for text, weight in parsing.parse_prompt_attention(line, emphasis)]

    return parse


def _loaded(sd_model):
    """Every encode runs with the text encoders loaded as Forge loads them (device, LoRA patches)."""

    @contextlib.contextmanager
    def context():
        from backend import memory_management

        memory_management.load_model_gpu(sd_model.forge_objects.clip.patcher)
        yield

    return context


def engines(sd_model) -> dict[str, object]:
    """The model's text engines by name ("clip", "clip_l", "clip_g", "t5"), those it has."""
    names = {
        "clip": "text_processing_engine",
        "clip_l": "text_processing_engine_l",
        "clip_g": "text_processing_engine_g",
        "t5": "text_processing_engine_t5",
    }
    return {key: getattr(sd_model, name) for key, name in names.items() if getattr(sd_model, name, None) is not None}


def parts_for(sd_model, opts) -> list[ClipPart | T5Part]:
    """The parts of a Forge model's `crossattn` rows, in row order (see the module docstring)."""
    emphasis = str(getattr(opts, "emphasis", "Original"))
    parse, context = fragments(emphasis), _loaded(sd_model)
    found = engines(sd_model)
    inversion = TextualInversion()
    if "clip" in found:
        engine = found["clip"]
        return [ClipPart(engine, [ForgeClipTower(engine, inversion)], inversion, emphasis, parse, context)]
    parts: list[ClipPart | T5Part] = []
    if "clip_l" in found and "clip_g" in found:
        towers = [ForgeClipTower(found["clip_l"], inversion), ForgeClipTower(found["clip_g"], inversion)]
        parts.append(ClipPart(found["clip_l"], towers, inversion, emphasis, parse, context))
    if "t5" in found:  # SD 3.5 with T5 off: its rows are zeros, laid out to find where they are, never patched
        active = "clip_g" not in found or bool(getattr(opts, "sd3_enable_t5", True))
        parts.append(T5Part(found["t5"], emphasis, parse, context, active=active))
    if not parts:
        raise MappingError(f"no text engine of {type(sd_model).__name__} gives conditioning rows")
    return parts
