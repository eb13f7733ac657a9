"""ComfyUI's text encoders as the parts of a conditioning that `flowcore` patches.

What a CONDITIONING's rows hold, per family (ComfyUI 0.3.x, `clip.cond_stage_model`):

| family | model | rows | parts patched |
|---|---|---|---|
| SD 1.x, SD 2.x | `SD1ClipModel` (key "l" or "h") | CLIP, 77 per chunk | CLIP |
| SDXL | `SDXLClipModel` ("l", "g") | CLIP-L and CLIP-G side by side | CLIP (both halves) |
| SD 3.5 | `SD3ClipModel` ("l", "g", "t5xxl") | L, G side by side, zero-padded to T5's width; then T5 | CLIP, T5 |
| Flux | `FluxClipModel` ("l", "t5xxl") | T5 (CLIP-L gives the pooled vector only) | T5 |
| Chroma, PixArt | `PixArtT5XXL` ("t5xxl") | T5, not padded; weights move toward an all-padding prompt | T5 |
| Lumina 2, Qwen-Image | a language model (see `llm`) | the model's rows | the model |
| HiDream | `HiDreamTEModel` (see `llm`) | T5; every Llama layer in `conditioning_llama3` | T5, Llama |

CLIP rows: items alone go through ComfyUI's own `CLIPTextModel` modules (its embedding table, layers and final
norm, with the layer `CLIPSetLastLayer` chose), packed into one forward call per transformer at the positions
they have in the prompt (`flowcore.encoders.clip.Tower`); `embedding:name` vectors travel as negative token
ids. T5 rows: bidirectional, so an item alone is what ComfyUI's own T5 gives the item's tokens as a whole
prompt (its end token and padding), through the model's own forward. Every encode first loads the text
encoders as ComfyUI does (`clip.load_model()`), which puts a LoRA's patches on their weights.

ComfyUI weighs a token by moving its row toward the empty prompt's row at the same position:
`row = (z - empty) * weight + empty`. `empty_rows` gives those rows, through ComfyUI's own model call.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
from collections.abc import Callable, Iterator, Sequence

import torch

from flowcore.encoders.base import weights_fingerprint
from flowcore.encoders.clip import Tower
from flowcore.encoders.layout import PromptLayout, Token
from flowcore.errors import MappingError
from flowcore.hosts.embeddings import EmbeddingTable, with_vectors
from flowcore.hosts.parts import HostClipPart, HostT5Part
from flowcore.hosts.token_placement import PlacedLine, token_spans

from . import llm
from .layout import Fragment, escape, fragments, key_layout

SD3_CLIP_L_WIDTH = 768  # where ComfyUI puts CLIP-G's rows in an SD 3 conditioning without CLIP-L


def comfy_fragments(text: str) -> list[Fragment]:
    """ComfyUI's weight parser (`comfy.sd1_clip`): the prompt's `(text, weight)` pieces, escapes resolved."""
    from comfy import sd1_clip

    def parse(line: str):
        escaped = sd1_clip.escape_important(line)
        return [(sd1_clip.unescape_important(piece), weight) for piece, weight in sd1_clip.token_weights(escaped, 1.0)]

    return fragments(text, parse)


class VectorTable(EmbeddingTable):
    """`embedding:name` vectors in an `EmbeddingTable`, shared by a part's towers: an entry holds one vector per
    tower, keyed by their content. The same vectors always get the same id, so the core's caches key on them
    safely."""

    def vectors_id(self, vectors: Sequence[torch.Tensor]) -> int:
        """The negative id of an embedding's vectors (one per tower)."""
        return self.id_of(vector_key(vectors), tuple(v.detach() for v in vectors))

    def vector(self, token_id: int, tower: int) -> torch.Tensor:
        """Tower `tower`'s vector behind a negative id."""
        return self.entry(token_id)[tower]


def vector_key(vectors: Sequence[torch.Tensor]) -> str:
    """A content key for an embedding's vectors (one per encoder): the same vectors get the same token id."""
    digest = hashlib.sha1()
    for vector in vectors:
        data = vector.detach().float().cpu().contiguous()
        digest.update(str(tuple(data.shape)).encode())
        digest.update(data.numpy().tobytes())
    return digest.hexdigest()


def _layer_of(model) -> tuple[int, bool]:
    """The hidden state `Tower.layer` indexes and whether the final norm follows, as ComfyUI's `SDClipModel`
    reads them after `clip.encode_from_tokens` set its options (clip skip from `CLIPSetLastLayer`)."""
    if model.layer == "last":
        return -1, True
    if model.layer == "hidden":
        index = int(model.layer_idx)
        return (index if index < 0 else index + 1), bool(model.layer_norm_hidden_state)
    raise MappingError(f"a CLIP model that outputs layer {model.layer!r}")


class ComfyClipTower(Tower):
    """A ComfyUI `SDClipModel` over `comfy.clip_model.CLIPTextModel`, run layer by layer over packed blocks.

    As ComfyUI does: token embeddings and position embeddings in float32 (its `out_dtype`), layers run with
    the attention function ComfyUI picks for its CLIP, and the layer its options say."""

    def __init__(self, model, table: VectorTable, index: int):
        text = model.transformer.text_model
        special = model.special_tokens
        layer, final_norm = _layer_of(model)
        super().__init__(
            model, text.encoder.layers, layer, final_norm, special["start"], special["end"], special["pad"]
        )
        self.text = text
        self.table = table
        self.index = index  # which of the table's vectors is this tower's

    @property
    def device(self) -> torch.device:
        return self.text.embeddings.token_embedding.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return torch.float32

    @functools.cached_property
    def attention(self):
        from comfy.ldm.modules.attention import optimized_attention_for_device

        return optimized_attention_for_device(self.device, mask=True, small_input=True)

    def token_embeddings(self, input_ids: torch.Tensor) -> torch.Tensor:
        embedded = self.text.embeddings.token_embedding(input_ids.clamp(min=0), out_dtype=torch.float32)
        return with_vectors(embedded, input_ids, lambda token_id: self.table.vector(token_id, self.index)).float()

    def position_embeddings(self, position_ids: torch.Tensor) -> torch.Tensor:
        weight = self.text.embeddings.position_embedding.weight  # ComfyUI adds the table itself, cast
        return weight.to(device=position_ids.device, dtype=torch.float32)[position_ids]

    def attention_mask(self, lengths: Sequence[int]) -> torch.Tensor:
        return super().attention_mask(lengths)[0, 0]  # (seq, seq), as ComfyUI's own causal mask

    def run_layer(self, layer: torch.nn.Module, hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return layer(hidden.clone(), mask, self.attention)  # ComfyUI's layers add into their input

    def final_layer_norm(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.text.final_layer_norm(hidden)

    @property
    def width(self) -> int:
        return int(self.text.embeddings.position_embedding.weight.shape[-1])


class _ComfyPart:
    """What ComfyUI's CLIP and T5 parts share: the ComfyUI `clip`, the keys of its tokenizer output they read, a
    context that loads the models, and the empty prompt's rows per length (ComfyUI's weighting)."""

    leading = 1

    def __init__(self, clip, keys: Sequence[str], models: Sequence, table: VectorTable):
        self.clip = clip
        self.keys = list(keys)
        self.models = list(models)
        self.table = table
        self._empty_rows: dict[int, torch.Tensor] = {}

    @contextlib.contextmanager
    def context(self) -> Iterator[None]:
        """Every encode runs with the text encoders loaded as ComfyUI loads them (device, a LoRA's patches)."""
        self.clip.load_model()
        yield

    def tokens_of(self, key: str) -> Callable:
        tokenizer = key_tokenizer(self.clip.tokenizer, key).tokenizer
        return lambda text: token_spans(tokenizer, text)

    def line_layout(self, line: str, tokens: dict) -> PlacedLine:
        """`line` (a ComfyUI prompt, weights allowed, markers removed) laid out as ComfyUI tokenized it
        (`tokens`: `clip.tokenize(line, return_word_ids=True)`), one layout for all of this part's keys."""
        pieces = comfy_fragments(line)
        laid = [key_layout(pieces, tokens[key], self.tokens_of(key), self.leading) for key in self.keys]
        for key, model, one in zip(self.keys, self.models, laid):
            if any(vector.shape[-1] != _width(model) for vector in one.vectors):  # ComfyUI drops it, rows shift
                raise MappingError(f"an embedding has no vectors of the width of the encoder {key!r}")
        first = laid[0]
        for other in laid[1:]:
            same_ids = [[t.id >= 0 and t.id for t in c] for c in other.layout.chunks] == [
                [t.id >= 0 and t.id for t in c] for c in first.layout.chunks
            ]
            if not same_ids or not torch.equal(other.weights, first.weights):
                raise MappingError(f"the encoders {self.keys} tokenize the prompt differently")
        if not first.vectors:
            return first
        ids = {-(k + 1): self.table.vectors_id([one.vectors[k] for one in laid]) for k in range(len(first.vectors))}
        chunks = tuple(
            tuple(t if t.id >= 0 else Token(ids[t.id], t.start, t.end) for t in c) for c in first.layout.chunks
        )
        layout = PromptLayout(first.layout.text, chunks, first.layout.format)
        return PlacedLine(layout, first.weights, first.vectors)

    def layout(self, text: str) -> PromptLayout:
        """Plain text (no weight syntax) laid out as ComfyUI lays it out."""
        line = escape(text)
        return self.line_layout(line, self.clip.tokenize(line, return_word_ids=True)).layout

    def empty_rows(self, length: int) -> torch.Tensor:
        """The rows ComfyUI moves weighted tokens toward: the empty prompt of `length` tokens through each
        model's own call, side by side `(length, width)`."""
        if length not in self._empty_rows:
            rows = []
            with self.context(), torch.no_grad():
                for model in self.models:
                    if hasattr(model, "gen_empty_tokens"):
                        tokens = model.gen_empty_tokens(model.special_tokens, length)
                    else:
                        tokens = _empty_tokens(model.special_tokens, length)
                    rows.append(model.encode([tokens])[0][0].float())
            self._empty_rows[length] = torch.cat(rows, dim=-1)
        return self._empty_rows[length]

    def settings(self) -> list:
        return [(type(self).__name__, key, type(model).__name__) for key, model in zip(self.keys, self.models)]


def _empty_tokens(special: dict, length: int) -> list[int]:
    """ComfyUI's empty prompt of `length` tokens: start (where the model has one), end, then padding."""
    tokens = [special[name] for name in ("start", "end") if special.get(name) is not None]
    return tokens + [special["pad"]] * (length - len(tokens))


class ClipPart(_ComfyPart, HostClipPart):
    """ComfyUI's CLIP encoder(s) of one conditioning as a `flowcore.encoders.TextEncoder`; `columns` says where
    each tower's rows sit in the conditioning's width (SD 3.5 zero-pads L/G to T5's width)."""

    leading = 1
    rederive_note = "re-deriving the end-token/padding rows is not available in ComfyUI"

    def __init__(self, clip, keys, models, columns: Sequence[slice]):
        table = VectorTable()
        _ComfyPart.__init__(self, clip, keys, models, table)
        self.towers = [ComfyClipTower(model, table, index) for index, model in enumerate(models)]
        self.columns = list(columns)

    def identity(self) -> str:
        settings = self.settings() + [(tower.layer, tower.final_norm) for tower in self.towers]
        return weights_fingerprint(*(tower.model for tower in self.towers), settings=settings)

    @property
    def device(self) -> torch.device:
        return self.towers[0].device

    def alone_positions(self, count: int) -> tuple[int, list[int]]:
        """An item of `count` tokens encoded alone: its chunk length and its rows in that chunk."""
        return 77 if count <= 75 else count + 2, list(range(1, count + 1))


class T5Part(_ComfyPart, HostT5Part):
    """ComfyUI's T5-XXL (SD 3.5, Flux, Chroma) as a `flowcore.encoders.TextEncoder`: items alone are encoded as
    ComfyUI encodes a prompt of the item's tokens (end token, then padding to the tokenizer's minimum length),
    through the model's own call."""

    leading = 0

    def __init__(self, clip, key: str, model):
        super().__init__(clip, [key], [model], VectorTable())
        self.model = model
        self.end_id, self.pad_id = model.special_tokens["end"], model.special_tokens["pad"]
        self.columns = [slice(0, _width(model))]

    def identity(self) -> str:
        settings = self.settings() + [(self.model.layer, self.model.layer_idx, self._lengths())]
        return weights_fingerprint(self.model, settings=settings)

    @property
    def width(self) -> int:
        return _width(self.model)

    @property
    def device(self) -> torch.device:
        return self.model.transformer.get_input_embeddings().weight.device

    def _lengths(self) -> tuple:
        """The tokenizer's padding rules for this key: minimum length, minimum padding, maximum length."""
        tokenizer = key_tokenizer(self.clip.tokenizer, self.keys[0])
        options = getattr(self.clip, "tokenizer_options", {}) or {}
        key = getattr(tokenizer, "embedding_key", "t5xxl")
        min_length = options.get(f"{key}_min_length", getattr(tokenizer, "min_length", None))
        min_padding = options.get(f"{key}_min_padding", getattr(tokenizer, "min_padding", None))
        pad_to_max = getattr(tokenizer, "pad_to_max_length", False)
        return min_length, min_padding, getattr(tokenizer, "max_length", None) if pad_to_max else None

    def alone_positions(self, count: int) -> tuple[int, list[int]]:
        """A prompt of `count` tokens as ComfyUI pads it: its length, and the tokens' rows in it."""
        min_length, min_padding, max_length = self._lengths()
        length = count + 1 + (min_padding or 0)
        length = max(length, max_length or 0, min_length or 0)
        return length, list(range(count))

    def token(self, token_id: int) -> object:
        """A token id, or for a negative id the `embedding:name` vector it stands for."""
        return token_id if token_id >= 0 else self.table.vector(token_id, 0)

    def encode_sequences(self, sequences: Sequence[list]) -> torch.Tensor:
        return self.model.encode(list(sequences))[0]


def key_tokenizer(tokenizer, key: str):
    """The `SDTokenizer` behind a key of a ComfyUI tokenizer ("l" -> `clip_l`, "t5xxl" -> `t5xxl`)."""
    for name in (f"clip_{key}", key):
        found = getattr(tokenizer, name, None)
        if found is not None and hasattr(found, "tokenizer"):
            return found
    clip_attribute = getattr(tokenizer, "clip", None)  # SD1Tokenizer keeps its one tokenizer under `self.clip`
    if isinstance(clip_attribute, str) and getattr(tokenizer, "clip_name", None) == key:
        return getattr(tokenizer, clip_attribute)
    raise MappingError(f"no tokenizer for the key {key!r}")


def _is_clip(model) -> bool:
    from comfy import clip_model

    return model is not None and isinstance(getattr(model, "transformer", None), clip_model.CLIPTextModel)


def is_t5(model) -> bool:
    from comfy.text_encoders import t5

    return model is not None and isinstance(getattr(model, "transformer", None), t5.T5)


def _width(model) -> int:
    """The width of a ComfyUI CLIP or T5 model's rows."""
    return int(model.transformer.get_input_embeddings().weight.shape[-1])


def parts_for(clip, prefix: str = "") -> list:
    """The parts of `clip`'s conditioning, in row order (see the module docstring; the language-model families
    in `llm`); `prefix` is the text the node puts before the prompt (Lumina 2's system prompt). Raises
    `MappingError` for a text encoder this does not know."""
    from comfy import sd1_clip, sdxl_clip
    from comfy.text_encoders import flux, sd3_clip

    model = clip.cond_stage_model
    found = llm.parts_for(clip, prefix)
    if found is not None:
        return found
    if isinstance(model, sd3_clip.SD3ClipModel):
        parts: list = []
        l_model, g_model = model.clip_l, model.clip_g
        if l_model is not None or g_model is not None:
            if not all(_is_clip(m) for m in (l_model, g_model) if m is not None):
                raise MappingError("an SD 3 text encoder whose CLIP models are not ComfyUI's CLIP")
            keys, models, columns = [], [], []
            if l_model is not None:
                keys, models, columns = ["l"], [l_model], [slice(0, _width(l_model))]
            if g_model is not None:  # right after L's columns; ComfyUI leaves L's 768 columns zero without L
                first = columns[0].stop if columns else SD3_CLIP_L_WIDTH
                keys, models, columns = (
                    keys + ["g"],
                    models + [g_model],
                    columns + [slice(first, first + _width(g_model))],
                )
            parts.append(ClipPart(clip, keys, models, columns))
        if model.t5xxl is not None:
            if not is_t5(model.t5xxl):
                raise MappingError("an SD 3 text encoder whose T5 is not ComfyUI's T5")
            parts.append(T5Part(clip, "t5xxl", model.t5xxl))
        return parts
    if isinstance(model, flux.FluxClipModel):
        if not is_t5(model.t5xxl):
            raise MappingError("a Flux text encoder whose T5 is not ComfyUI's T5")
        return [T5Part(clip, "t5xxl", model.t5xxl)]
    if isinstance(model, sdxl_clip.SDXLClipModel):
        if not (_is_clip(model.clip_l) and _is_clip(model.clip_g)):
            raise MappingError("an SDXL text encoder whose models are not ComfyUI's CLIP")
        first = _width(model.clip_l)
        columns = [slice(0, first), slice(first, first + _width(model.clip_g))]
        return [ClipPart(clip, ["l", "g"], [model.clip_l, model.clip_g], columns)]
    if isinstance(model, sd1_clip.SD1ClipModel):
        inner = getattr(model, model.clip, None)
        if _is_clip(inner):
            return [ClipPart(clip, [model.clip_name], [inner], [slice(0, _width(inner))])]
        if is_t5(inner):  # PixArt / Chroma (`pixart_t5.PixArtT5XXL`): T5-XXL alone, no pooled vector
            return [T5Part(clip, model.clip_name, inner)]
    raise MappingError(f"the text encoder {type(model).__name__} is not one Follow the Flow knows")


class FirstChunkT5Part(T5Part):
    """HiDream's T5: ComfyUI keeps only the first chunk of the prompt's T5 tokens (127 tokens and the end
    token); items after it have no rows there (the report says so), an item across its end keeps its first
    tokens."""

    def line_layout(self, line: str, tokens: dict) -> PlacedLine:
        key = self.keys[0]
        options = getattr(self.clip, "tokenizer_options", {}) or {}
        whole = key_tokenizer(self.clip.tokenizer, key).tokenize_with_weights(
            line, True, **({"tokenizer_options": options} if options else {})
        )
        if not whole or [entry[:2] for entry in whole[0]] != [entry[:2] for entry in tokens[key][0]]:
            raise MappingError("HiDream's T5 tokens are not the first chunk of the prompt's")
        laid = super().line_layout(line, {key: whole})
        rows = laid.layout.format.rows
        first = PromptLayout(laid.layout.text, laid.layout.chunks[:1], laid.layout.format)
        return PlacedLine(first, laid.weights[:rows], laid.vectors)
