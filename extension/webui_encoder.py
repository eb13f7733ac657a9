"""A `flowcore.encoders.TextEncoder` over the loaded WebUI model (A1111 SD 1.x, SD 2.x, SDXL).

Token rows come from the text encoder's own `tokenize_line`, so `BREAK`, the comma backtrack, emphasis and
textual-inversion embeddings place tokens exactly where the WebUI put them. Encodes (items alone at any
positions, calibration prompts, the empty prompt) run through the model's own text transformers
(`webui_towers`), packed into one forward call per transformer, with the WebUI's weights, LoRA, clip skip and
embedding vectors; the prompt's own encoding is always the WebUI's conditioning itself.

Shapes: a prompt line's encoding is `(rows, dim)` with 77 rows per chunk (BOS, 75 tokens, EOS/padding);
SDXL's `dim` is CLIP-L then CLIP-G (768 + 1280).

Emphasis: the WebUI multiplies each token row by its weight after the transformer and (mode "Original")
rescales the whole chunk batch by one factor. `row_scale` gives each row's factor, so the glue can hand the
core an emphasis-free encoding and re-apply the factors to the rows the core changed.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from flowcore.encoders.base import Encoding, weights_fingerprint
from flowcore.encoders.clip import TowerEncoder
from flowcore.layout import CLIP_CHUNKS, ROWS_PER_CHUNK, TOKENS_PER_CHUNK, PromptLayout, Token

from .webui_towers import TextualInversion, towers_for

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
    """CLIP's pre-tokens of `text` with their spans in `text` itself. The tokenizer lower-cases each piece;
    matching the original (case-insensitively) keeps the spans right where lower-casing changes a length
    ("İ" becomes two characters)."""
    try:
        import regex

        return [(m.group(), m.start(), m.end()) for m in regex.finditer(CLIP_PRETOKEN, text, flags=regex.IGNORECASE)]
    except ImportError:  # pragma: no cover - transformers depends on regex
        import re

        pattern = r"'s|'t|'re|'ve|'m|'ll|'d|[^\W\d_]+|\d|[^\s\w]+|_+"
        return [(m.group(), m.start(), m.end()) for m in re.finditer(pattern, text, flags=re.IGNORECASE)]


class WebuiEncoder(TowerEncoder):
    """What `FlowPatcher` calls, implemented with the WebUI's model `sd_model` (A1111, not Forge)."""

    def __init__(self, sd_model, opts, emphasis: str = "Original"):
        self.model = sd_model
        self.emphasis = emphasis
        self.is_sdxl = bool(getattr(sd_model, "is_sdxl", False) or getattr(sd_model, "is_ssd", False))
        if self.is_sdxl:
            self.clip = sd_model.conditioner.embedders[0]  # CLIP-L: tokenize_line of the conditioner's first
        else:
            self.clip = sd_model.cond_stage_model
        if not hasattr(self.clip, "tokenize_line"):
            raise MappingError(f"the model's text encoder ({type(self.clip).__name__}) has no `tokenize_line`")
        self.inversion = TextualInversion()
        try:
            self.towers = towers_for(sd_model, opts, self.inversion)
        except (AttributeError, IndexError, ValueError) as error:
            raise MappingError(f"the model's text transformers cannot be driven directly: {error}") from error
        self._empty: Encoding | None = None

    def identity(self) -> str:
        """A sampled fingerprint of the text transformers' weights (a LoRA merged into them changes it), with
        the layers read and the emphasis mode."""
        settings = [(type(self).__name__, self.emphasis)]
        settings += [(type(tower).__name__, tower.layer, tower.final_norm) for tower in self.towers]
        return weights_fingerprint(*(tower.model for tower in self.towers), settings=settings)

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
                    ids = [self.inversion.id_of(fixes[index], k) for k in range(count)]
                    row_tokens += [Token(i, span[0].start, span[-1].end) for i in ids]
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

    # --- the TextEncoder protocol (encodes from `TowerEncoder`, under the WebUI's autocast) ---

    def layout(self, text: str) -> PromptLayout:
        """Plain text (no emphasis syntax) laid out as the WebUI would lay it out."""
        return self.line_layout(text if self.emphasis == "None" else escape(text)).layout

    def encode_many(self, layout, requests=(), replaced=()):
        from modules import devices

        with devices.autocast():
            return super().encode_many(layout, requests, replaced)

    def empty(self) -> Encoding:
        """The clean-pad baseline: the empty prompt through the same layers (computed once per encoder)."""
        if self._empty is None:
            self._empty = super().empty()
        return self._empty

    def rederive(self, layout: PromptLayout, replaced) -> Encoding:
        raise NotImplementedError("re-deriving the EOS/padding rows is not available in the WebUI extension yet")

    # --- emphasis ---

    def tower_widths(self) -> list[int]:
        """The widths of the concatenated encoders (SDXL: CLIP-L then CLIP-G), each with its own rescale."""
        return [tower.width for tower in self.towers]

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
            for width in self.tower_widths():
                reference = bos_empty[first : first + width]
                norm = torch.dot(reference, reference)
                factor = torch.dot(bos[first : first + width], reference) / norm if norm > 0 else 1.0
                scale[chunk * ROWS_PER_CHUNK : (chunk + 1) * ROWS_PER_CHUNK, first : first + width] *= factor
                first += width
        return scale
