"""A `flowcore.encoders.TextEncoder` over the loaded WebUI model (A1111 SD 1.x, SD 2.x, SDXL).

Every encode goes through the WebUI's own `sd_model.get_learned_conditioning`, so clip skip, emphasis
mode, textual-inversion embeddings, LoRA and chunking are the WebUI's. Token rows come from the encoder's
own `tokenize_line`, so `BREAK`, the comma backtrack and embeddings place tokens exactly where the WebUI
put them.

Shapes: a prompt line's encoding is `(rows, dim)` with 77 rows per chunk (BOS, 75 tokens, EOS/padding);
SDXL's `dim` is CLIP-L then CLIP-G (768 + 1280).

Emphasis: the WebUI multiplies each token row by its weight after the transformer and (mode "Original")
rescales the whole chunk batch by one factor. `LineLayout.scale` gives each row's factor, so the glue can
hand the core an emphasis-free encoding and re-apply the factors to the rows the core changed.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from flowcore.encoders.base import Encoding, IsolatedItem, ItemRequest, weights_fingerprint
from flowcore.layout import CLIP_CHUNKS, ROWS_PER_CHUNK, TOKENS_PER_CHUNK, PromptLayout, Token

# CLIP's own pre-tokenization (open_clip SimpleTokenizer and transformers' CLIPTokenizer): BPE runs inside
# each of these pieces, so tokenizing the pieces one by one gives the ids of the whole text, with offsets.
CLIP_PRETOKEN = r"""<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"""
BREAK_SEPARATOR = " BREAK "  # what a `BREAK` becomes in the plain text the core segments


class MappingError(Exception):
    """A prompt's tokens could not be matched with the WebUI's chunks; that prompt is left unpatched."""


@dataclass(frozen=True)
class LineLayout:
    """A prompt line as the WebUI encodes it: the core's `PromptLayout` of its plain text (emphasis syntax
    removed) and each row's emphasis multiplier `(rows,)` (1 at BOS, EOS and padding)."""

    layout: PromptLayout
    multipliers: torch.Tensor


def escape(text: str) -> str:
    """Plain text as a WebUI prompt line that parses back to itself (no emphasis)."""
    for char in "\\()[]":
        text = text.replace(char, "\\" + char)
    return text


def _pretokens(text: str) -> list[tuple[str, int, int]]:
    try:
        import regex

        return [(m.group(), m.start(), m.end()) for m in regex.finditer(CLIP_PRETOKEN, text.lower())]
    except ImportError:  # pragma: no cover - transformers depends on regex
        import re

        pattern = r"'s|'t|'re|'ve|'m|'ll|'d|[^\W\d_]+|\d|[^\s\w]+|_+"
        return [(m.group(), m.start(), m.end()) for m in re.finditer(pattern, text.lower())]


class WebuiEncoder:
    """What `FlowPatcher` calls, implemented with the WebUI's model `sd_model` (A1111, not Forge)."""

    causal = True  # every CLIP the WebUI runs is causal
    supports_positions = False  # items are encoded as whole prompts, tokens right after BOS

    def __init__(self, sd_model, width: int = 512, height: int = 512, emphasis: str = "Original"):
        self.model = sd_model
        self.width = width
        self.height = height
        self.emphasis = emphasis
        self.is_sdxl = bool(getattr(sd_model, "is_sdxl", False) or getattr(sd_model, "is_ssd", False))
        if self.is_sdxl:
            self.clip = sd_model.conditioner.embedders[0]  # CLIP-L: tokenize_line of the conditioner's first
        else:
            self.clip = sd_model.cond_stage_model
        if not hasattr(self.clip, "tokenize_line"):
            raise MappingError(f"the model's text encoder ({type(self.clip).__name__}) has no `tokenize_line`")
        self._empty: Encoding | None = None
        self._widths: list[int] | None = None

    # --- WebUI calls ---

    def _conditioning(self, texts: Sequence[str]) -> torch.Tensor:
        """`(len(texts), rows, dim)` from one `get_learned_conditioning` call (SDXL: its `crossattn`)."""
        from modules import devices, prompt_parser, sd_hijack

        hijack = sd_hijack.model_hijack
        saved = (dict(hijack.extra_generation_params), list(hijack.comments))
        try:
            with devices.autocast():
                conds = self.model.get_learned_conditioning(
                    prompt_parser.SdConditioning(list(texts), width=self.width, height=self.height)
                )
        finally:  # our encodes must not change the infotext (TI hashes, emphasis notes) of the generation
            hijack.extra_generation_params.clear()
            hijack.extra_generation_params.update(saved[0])
            hijack.comments[:] = saved[1]
        return conds["crossattn"] if isinstance(conds, dict) else conds

    def tokenize_line(self, line: str):
        return self.clip.tokenize_line(line)

    # --- layout ---

    def fragments(self, line: str) -> list[tuple[str, float]]:
        """The line's `(text, weight)` pieces as the WebUI's `tokenize_line` sees them; `BREAK` has weight -1."""
        if self.emphasis == "None":
            return [(line, 1.0)]
        from modules import prompt_parser

        return [(text, weight) for text, weight in prompt_parser.parse_prompt_attention(line)]

    def plain_text(self, line: str) -> str:
        """The text the user wrote, without emphasis syntax: what the core segments."""
        return "".join(BREAK_SEPARATOR if w == -1 and t == "BREAK" else t for t, w in self.fragments(line))

    def _tokens(self, line: str) -> tuple[str, list[Token]]:
        """Plain text and its tokens with character spans, each fragment tokenized on its own (as the WebUI)."""
        pieces, plain = [], ""
        for text, weight in self.fragments(line):
            if weight == -1 and text == "BREAK":
                plain += BREAK_SEPARATOR
                continue
            pieces.append((text, len(plain)))
            plain += text
        tokens: list[Token] = []
        for text, offset in pieces:
            pretokens = _pretokens(text)
            if not pretokens:
                continue
            ids = self.clip.tokenize([p for p, _, _ in pretokens])
            whole = self.clip.tokenize([text])[0]
            if [i for group in ids for i in group] != list(whole):
                raise MappingError(f"cannot find the tokens of {text!r} one by one")
            for group, (_, start, end) in zip(ids, pretokens):
                tokens += [Token(i, offset + start, offset + end) for i in group]
        return plain, tokens

    def line_layout(self, line: str) -> LineLayout:
        """Where each token of `line` (a WebUI prompt line: emphasis allowed, no AND/scheduling) sits."""
        plain, stream = self._tokens(line)
        chunks, _ = self.tokenize_line(line)
        placed: list[tuple[Token, ...]] = []
        multipliers: list[float] = []
        position = 0
        for chunk in chunks:
            if len(chunk.tokens) != ROWS_PER_CHUNK:
                raise MappingError(f"a chunk has {len(chunk.tokens)} tokens, not {ROWS_PER_CHUNK}")
            fixes = {fix.offset: fix.embedding for fix in getattr(chunk, "fixes", [])}
            row_tokens: list[Token] = []
            index = 0
            while index < TOKENS_PER_CHUNK:
                if index in fixes:  # a textual-inversion embedding: vectors rows for the tokens of its name
                    count = int(getattr(fixes[index], "vectors", 1))
                    used = len(self.clip.tokenize([fixes[index].name])[0])
                    span = stream[position : position + used]
                    if len(span) != used:
                        raise MappingError("an embedding's tokens run past the prompt")
                    row_tokens += [Token(0, span[0].start, span[-1].end)] * count
                    position += used
                    index += count
                    continue
                if position < len(stream) and chunk.tokens[1 + index] == stream[position].id:
                    row_tokens.append(stream[position])
                    position += 1
                    index += 1
                    continue
                break
            if any(t != self.clip.id_end for t in chunk.tokens[1 + len(row_tokens) :]):
                raise MappingError("the WebUI's chunks hold tokens the prompt text does not explain")
            placed.append(tuple(row_tokens))
            multipliers += [float(m) for m in chunk.multipliers]
        if position != len(stream):
            raise MappingError(f"{len(stream) - position} token(s) of the prompt are missing from the chunks")
        layout = PromptLayout(text=plain, chunks=tuple(placed), format=CLIP_CHUNKS)
        return LineLayout(layout, torch.tensor(multipliers, dtype=torch.float32))

    # --- the TextEncoder protocol ---

    def layout(self, text: str) -> PromptLayout:
        return self.line_layout(escape(text)).layout

    def encode(self, layout: PromptLayout) -> Encoding:
        rows = self._conditioning([escape(layout.text)])[0]
        return Encoding(rows=rows[: layout.n_rows])

    def identity(self) -> str:
        """A sampled fingerprint of the text encoder's weights (a LoRA applied to them changes it), with the
        clip skip and emphasis settings."""
        from modules import shared

        text_encoder = self.model.conditioner if self.is_sdxl else self.clip
        settings = (type(self).__name__, getattr(shared.opts, "CLIP_stop_at_last_layers", 1), self.emphasis)
        return weights_fingerprint(text_encoder, settings=settings)

    def encode_isolated(self, requests: Sequence[ItemRequest]) -> list[IsolatedItem]:
        """Each item's text alone, as a whole prompt, in ONE `get_learned_conditioning` call: rows 1..k of each.

        The texts are plain (escaped, so no emphasis): every multiplier is 1 and the "Original" emphasis
        rescale of the batch is exactly 1, so batching does not make the texts influence each other."""
        texts = [request.text for request in requests]
        if not texts:
            return []
        lines = [escape(text) for text in texts]
        conds = self._conditioning(lines)  # (texts, rows, dim)
        items = []
        for index, (text, line) in enumerate(zip(texts, lines)):
            first_chunk = self.line_layout(line).layout.chunks[0] if text.strip() else ()
            ids = [token.id for token in first_chunk]
            items.append(IsolatedItem(text, ids, conds[index, 1 : 1 + len(ids)].float()))
        return items

    def empty(self) -> Encoding:
        """The clean-pad baseline: `get_learned_conditioning([""])` (not the uc: an empty SDXL negative
        prompt is all zeros)."""
        if self._empty is None:
            self._empty = Encoding(rows=self._conditioning([""])[0, :ROWS_PER_CHUNK].float())
        return self._empty

    def rederive(self, layout: PromptLayout, replaced) -> Encoding:
        raise NotImplementedError("re-deriving the EOS/padding rows is not available in the WebUI extension yet")

    # --- emphasis ---

    def tower_widths(self, dim: int) -> list[int]:
        """The widths of the concatenated encoders (SDXL: CLIP-L then CLIP-G), each with its own rescale."""
        if not self.is_sdxl:
            return [dim]
        with contextlib.suppress(AttributeError):
            first = int(self.clip.wrapped.transformer.config.hidden_size)
            if 0 < first < dim:
                return [first, dim - first]
        return [768, dim - 768] if dim > 768 else [dim]

    def row_scale(self, encoding: torch.Tensor, line: LineLayout) -> torch.Tensor:
        """Each row's emphasis factor `(rows, dim)`: its token's multiplier times its chunk's rescale.

        The rescale ("Original" mode) is one number per chunk and encoder; the BOS row depends on nothing
        but the model in a causal encoder, so comparing it with the empty prompt's BOS row recovers it."""
        rows, dim = encoding.shape
        multipliers = line.multipliers.to(encoding.device)
        if self.emphasis in ("Ignore", "None"):
            multipliers = torch.ones_like(multipliers)
        scale = multipliers[:, None].expand(rows, dim).clone()
        if self.emphasis != "Original":
            return scale
        bos_empty = self.empty().rows[0].to(encoding.device)
        for chunk in range(rows // ROWS_PER_CHUNK):
            bos = encoding[chunk * ROWS_PER_CHUNK].float()
            first = 0
            for width in self.tower_widths(dim):
                reference = bos_empty[first : first + width]
                norm = torch.dot(reference, reference)
                factor = torch.dot(bos[first : first + width], reference) / norm if norm > 0 else 1.0
                scale[chunk * ROWS_PER_CHUNK : (chunk + 1) * ROWS_PER_CHUNK, first : first + width] *= factor
                first += width
        return scale
