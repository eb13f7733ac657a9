"""The WebUI model's own text transformers, driven directly as flowcore `Tower`s.

Items alone (at any positions) and prompts go through the model's own modules in packed blocks, one forward
call per transformer, so that the weights (LoRA merged into them), the layer (clip skip) and the textual-
inversion vectors are the WebUI's, while the cost is that of the items' few tokens, not of a 77-row prompt
each. Every A1111 family is covered:

- SD 1.x, a transformers CLIPTextModel: `hidden_states[-clip_skip]`, then the final norm;
- SD 2.x, OpenCLIP: every resblock but the last `layer_idx`, then `ln_final` (clip skip does not apply);
- SDXL, CLIP-L then OpenCLIP-G side by side: CLIP-L's layer as its wrapper's `layer` / `layer_idx` say (clip
  skip instead with the `sdxl_clip_l_skip` option), no final norm; G's penultimate resblock, no `ln_final`.

The WebUI wraps each token embedding in `EmbeddingsWithFixes`, which inserts the textual-inversion vectors
of the chunk being encoded; here the original table is read through its `wrapped` attribute and the
vectors come with the token ids: a negative id stands for one vector of an embedding (`TextualInversion`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from flowcore.encoders.clip import ClipTower, Tower


class TextualInversion:
    """Negative token ids for the vectors of textual-inversion embeddings, so that a layout's tokens (and the
    cache keys made of them) say which vector each row takes: id -(k + 1) is entry k of `rows`."""

    def __init__(self) -> None:
        self.rows: list[tuple[object, int]] = []  # (embedding, vector index)
        self._ids: dict[tuple[str, str, int], int] = {}

    def id_of(self, embedding, index: int) -> int:
        key = (str(getattr(embedding, "name", "")), str(getattr(embedding, "shorthash", id(embedding))), index)
        if key not in self._ids:
            self.rows.append((embedding, index))
            self._ids[key] = -len(self.rows)
        return self._ids[key]

    def vector(self, token_id: int, key: str) -> torch.Tensor:
        """The vector behind a negative id, for the encoder whose textual-inversion key is `key`
        (SDXL's embeddings hold one tensor per encoder: "clip_l", "clip_g")."""
        embedding, index = self.rows[-token_id - 1]
        vectors = embedding.vec[key] if isinstance(embedding.vec, dict) else embedding.vec
        return vectors[index]


def _lookup(module: torch.nn.Module, input_ids: torch.Tensor, inversion: TextualInversion) -> torch.Tensor:
    """Token embeddings `(1, seq, hidden)` from the WebUI's (wrapped) table, negative ids from `inversion`."""
    table = getattr(module, "wrapped", module)  # EmbeddingsWithFixes -> the original nn.Embedding
    embedded = table(input_ids.clamp(min=0))
    negative = (input_ids[0] < 0).nonzero().flatten().tolist()
    if negative:
        key = getattr(module, "textual_inversion_key", "clip_l")
        embedded = embedded.clone()
        for position in negative:
            embedded[0, position] = inversion.vector(int(input_ids[0, position]), key).to(embedded)
    return embedded


class WebuiClipTower(ClipTower):
    """SD 1.x's and SDXL's CLIP-L: the transformers CLIPTextModel inside the WebUI's wrapper (`embedder`)."""

    def __init__(self, embedder, layer: int, final_norm: bool, inversion: TextualInversion):
        super().__init__(embedder.wrapped.tokenizer, embedder.wrapped.transformer, layer, final_norm)
        self.bos_id, self.eos_id, self.pad_id = embedder.id_start, embedder.id_end, embedder.id_pad
        self.inversion = inversion

    def token_embeddings(self, input_ids: torch.Tensor) -> torch.Tensor:
        return _lookup(self.core.embeddings.token_embedding, input_ids, self.inversion)


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
        return _lookup(self.model.token_embedding, input_ids, self.inversion)

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


def towers_for(sd_model, opts, inversion: TextualInversion) -> list[Tower]:
    """The model's text towers with the layers the WebUI reads, in the order their rows are concatenated.

    Raises ValueError for a text encoder of another kind (the glue then leaves the image unpatched)."""
    clip_skip = max(1, int(getattr(opts, "CLIP_stop_at_last_layers", 1) or 1))
    if getattr(sd_model, "is_sdxl", False) or getattr(sd_model, "is_ssd", False):
        clip_l, clip_g = sd_model.conditioner.embedders[:2]
        if not (_is_hf_clip(clip_l) and _is_open_clip(clip_g)):
            raise ValueError(f"an SDXL conditioner of {type(clip_l).__name__} and {type(clip_g).__name__}")
        wrapped = clip_l.wrapped
        if getattr(opts, "sdxl_clip_l_skip", False) is True:
            first = WebuiClipTower(clip_l, -clip_skip, False, inversion)
        elif getattr(wrapped, "layer", "hidden") == "last":
            first = WebuiClipTower(clip_l, -1, True, inversion)
        else:
            first = WebuiClipTower(clip_l, int(wrapped.layer_idx), False, inversion)
        g_layer = -2 if getattr(clip_g.wrapped, "layer", "penultimate") == "penultimate" else -1
        return [first, OpenClipTower(clip_g, g_layer, False, inversion)]
    embedder = sd_model.cond_stage_model
    if _is_open_clip(embedder):  # SD 2.x: clip skip does not apply
        layer_idx = int(getattr(embedder.wrapped, "layer_idx", 0) or 0)
        return [OpenClipTower(embedder, -(layer_idx + 1), True, inversion)]
    if _is_hf_clip(embedder):
        return [WebuiClipTower(embedder, -clip_skip, True, inversion)]
    raise ValueError(f"a text encoder of type {type(embedder).__name__}")
