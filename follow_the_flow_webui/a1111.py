"""AUTOMATIC1111 WebUI (v1.10): its model's text transformers as the parts `flowcore` patches.

Every A1111 family is covered, each with the layer the WebUI reads:
- SD 1.x, a transformers CLIPTextModel: `hidden_states[-clip_skip]`, then the final norm;
- SD 2.x, OpenCLIP: every resblock but the last `layer_idx`, then `ln_final` (clip skip does not apply);
- SDXL, CLIP-L then OpenCLIP-G side by side: CLIP-L's layer as its wrapper's `layer` / `layer_idx` say (clip
  skip instead with the `sdxl_clip_l_skip` option), no final norm; G's penultimate resblock, no `ln_final`.
The WebUI wraps each token embedding in `EmbeddingsWithFixes`; the towers read the original table through its
`wrapped` attribute, with textual-inversion vectors from the layout's negative ids (`clip_part`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from flowcore.encoders.clip import ClipTower, Tower
from flowcore.errors import MappingError

from .clip_part import ClipPart, TextualInversion


class WebuiClipTower(ClipTower):
    """SD 1.x's and SDXL's CLIP-L: the transformers CLIPTextModel inside the WebUI's wrapper (`embedder`)."""

    def __init__(self, embedder, layer: int, final_norm: bool, inversion: TextualInversion):
        super().__init__(embedder.wrapped.tokenizer, embedder.wrapped.transformer, layer, final_norm)
        self.bos_id, self.eos_id, self.pad_id = embedder.id_start, embedder.id_end, embedder.id_pad
        self.inversion = inversion

    def token_embeddings(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.inversion.lookup(self.core.embeddings.token_embedding, input_ids)


class OpenClipTower(Tower):
    """SD 2.x's OpenCLIP and SDXL's OpenCLIP-G (`embedder.wrapped.model`): resblocks of
    `torch.nn.MultiheadAttention` that take sequence-first input and one `(seq, seq)` additive mask, and a
    learned `positional_embedding` table indexed by position here (so positions may skip)."""

    def __init__(self, embedder, layer: int, final_norm: bool, inversion: TextualInversion):
        model = embedder.wrapped.model
        layers = model.transformer.resblocks
        super().__init__(model, layers, layer, final_norm, embedder.id_start, embedder.id_end, embedder.id_pad)
        self.inversion = inversion
        self.batch_first = bool(getattr(layers[0].attn, "batch_first", False))

    def token_embeddings(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.inversion.lookup(self.model.token_embedding, input_ids)

    def position_embeddings(self, position_ids: torch.Tensor) -> torch.Tensor:
        return self.model.positional_embedding[position_ids]

    def attention_mask(self, lengths: Sequence[int]) -> torch.Tensor:
        """`(seq, seq)`, 0 where attention is allowed and -inf elsewhere, as OpenCLIP's own causal mask."""
        total = sum(lengths)
        block = torch.repeat_interleave(torch.arange(len(lengths)), torch.tensor(lengths))
        allowed = (block[:, None] == block[None, :]) & torch.ones(total, total, dtype=torch.bool).tril()
        mask = torch.zeros(total, total, dtype=self.dtype).masked_fill(~allowed, float("-inf"))
        return mask.to(self.device)

    def run_layer(self, layer: torch.nn.Module, hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        if self.batch_first:
            return layer(hidden, attn_mask=mask)
        return layer(hidden.permute(1, 0, 2), attn_mask=mask).permute(1, 0, 2)  # (seq, 1, width) inside

    def final_layer_norm(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.model.ln_final(hidden)

    @property
    def width(self) -> int:
        return int(self.model.positional_embedding.shape[-1])


def _is_open_clip(embedder) -> bool:
    return hasattr(getattr(embedder, "wrapped", None), "model") and hasattr(embedder.wrapped.model, "transformer")


def _is_hf_clip(embedder) -> bool:
    return hasattr(getattr(embedder, "wrapped", None), "transformer")


def _towers(sd_model, opts, inversion: TextualInversion) -> tuple[object, list[Tower]]:
    """The embedder whose `tokenize_line` lays prompts out, and the towers in the order of their columns."""
    clip_skip = max(1, int(getattr(opts, "CLIP_stop_at_last_layers", 1) or 1))
    if getattr(sd_model, "is_sdxl", False) or getattr(sd_model, "is_ssd", False):
        clip_l, clip_g = sd_model.conditioner.embedders[:2]
        if not (_is_hf_clip(clip_l) and _is_open_clip(clip_g)):
            raise MappingError(f"an SDXL conditioner of {type(clip_l).__name__} and {type(clip_g).__name__}")
        wrapped = clip_l.wrapped
        if getattr(opts, "sdxl_clip_l_skip", False) is True:
            first = WebuiClipTower(clip_l, -clip_skip, False, inversion)
        elif getattr(wrapped, "layer", "hidden") == "last":
            first = WebuiClipTower(clip_l, -1, True, inversion)
        else:
            first = WebuiClipTower(clip_l, int(wrapped.layer_idx), False, inversion)
        g_layer = -2 if getattr(clip_g.wrapped, "layer", "penultimate") == "penultimate" else -1
        return clip_l, [first, OpenClipTower(clip_g, g_layer, False, inversion)]
    embedder = sd_model.cond_stage_model
    if _is_open_clip(embedder):  # SD 2.x: clip skip does not apply
        layer_idx = int(getattr(embedder.wrapped, "layer_idx", 0) or 0)
        return embedder, [OpenClipTower(embedder, -(layer_idx + 1), True, inversion)]
    if _is_hf_clip(embedder):
        return embedder, [WebuiClipTower(embedder, -clip_skip, True, inversion)]
    raise MappingError(f"a text encoder of type {type(embedder).__name__}")


def fragments(emphasis: str):
    """The WebUI's emphasis parser: `(text, weight)` pieces of a line, `BREAK` with weight -1 (with emphasis
    "None" the WebUI reads the line literally)."""

    def parse(line: str) -> list[tuple[str, float]]:
        if emphasis == "None":
            return [(line, 1.0)]
        from modules import prompt_parser

        return [(text, weight) for text, weight in prompt_parser.parse_prompt_attention(line)]

    return parse


def parts_for(sd_model, opts) -> list[ClipPart]:
    """The parts of an A1111 model's conditioning rows: one, its CLIP encoder(s)."""
    from modules import devices

    emphasis = str(getattr(opts, "emphasis", "Original"))
    inversion = TextualInversion()
    try:
        engine, towers = _towers(sd_model, opts, inversion)
    except (AttributeError, IndexError, ValueError) as error:
        raise MappingError(f"the model's text transformers cannot be driven directly: {error}") from error
    if not hasattr(engine, "tokenize_line"):
        raise MappingError(f"the model's text encoder ({type(engine).__name__}) has no `tokenize_line`")
    return [ClipPart(engine, towers, inversion, emphasis, fragments(emphasis), devices.autocast)]
