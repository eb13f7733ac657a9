"""A host's tokens placed on the core's text and rows.

A host (A1111, Forge, ComfyUI) tokenizes a prompt its own way: weight syntax parsed out, chunks with start,
end and padding tokens, embedding vectors in place of some tokens. Its adapter matches those chunks with the
core's view of the same prompt (the plain text the user wrote, its tokens with character spans) and hands the
core a `PlacedLine`: the `PromptLayout` of the plain text in the host's own chunks, each row's weight, and the
embedding vectors met on the way. How a host's chunks are read is the adapter's; what every adapter needs to
do it is here: tokens with spans from a tokenizer that gives no offsets, and the placed line built from the
tokens found in each chunk.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from flowcore.encoders.layout import ChunkFormat, PromptLayout, Token, tokenize_with_offsets
from flowcore.errors import MappingError

# CLIP's own pre-tokenization (open_clip SimpleTokenizer and transformers' CLIPTokenizer): BPE runs inside
# each of these pieces, so tokenizing the pieces one by one gives the ids of the whole text, with spans.
CLIP_PRETOKEN = r"""<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"""


@dataclass(frozen=True)
class PlacedLine:
    """A prompt line as the host encodes it: the `PromptLayout` of its plain text (weight syntax removed) in the
    host's chunks, each row's weight `(rows,)` as the host's prompt syntax gives it (A1111's emphasis
    multiplier, ComfyUI's weight; 1 at start, end and padding rows), and the embedding vectors whose rows the
    layout's negative ids -1, -2, ... stand for, where the adapter keeps them here."""

    layout: PromptLayout
    weights: torch.Tensor
    vectors: tuple[torch.Tensor, ...] = ()


def clip_pretokens(text: str) -> list[tuple[int, int]]:
    """Spans of CLIP's pre-tokens of `text`. The tokenizer lower-cases each piece; matching the original
    (case-insensitively) keeps the spans right where lower-casing changes a length ("İ" becomes two
    characters)."""
    try:
        import regex

        return [m.span() for m in regex.finditer(CLIP_PRETOKEN, text, flags=regex.IGNORECASE)]
    except ImportError:  # pragma: no cover - transformers depends on regex
        return [m.span() for m in re.finditer(r"'s|'t|'re|'ve|'m|'ll|'d|[^\W\d_]+|\d|[^\s\w]+|_+", text, re.I)]


def clip_tokens(tokenize: Callable[[list[str]], list[list[int]]], text: str) -> list[Token]:
    """`text`'s CLIP tokens with spans, from a `tokenize` that maps texts to their ids without special tokens
    (a host's own, or a slow tokenizer without offsets): each pre-token on its own, checked against the ids of
    the whole text. Raises `MappingError` where they differ."""
    spans = clip_pretokens(text)
    if not spans:
        return []
    ids = tokenize([text[start:end] for start, end in spans])
    if [i for group in ids for i in group] != list(tokenize([text])[0]):
        raise MappingError(f"cannot find the tokens of {text!r} one by one")
    return [Token(i, start, end) for group, (start, end) in zip(ids, spans) for i in group]


def token_spans(tokenizer, text: str) -> list[Token]:
    """`text`'s tokens without special tokens, each with its character span: a fast tokenizer's offsets, or
    (a slow CLIPTokenizer, ComfyUI's) CLIP's pre-tokens one by one (`clip_tokens`)."""
    if getattr(tokenizer, "is_fast", False):
        return tokenize_with_offsets(tokenizer, text)

    def tokenize(texts: list[str]) -> list[list[int]]:
        return [list(tokenizer(piece, add_special_tokens=False)["input_ids"]) for piece in texts]

    return clip_tokens(tokenize, text)


def shifted(tokens: Sequence[Token], offset: int) -> list[Token]:
    """`tokens` of a piece of text, with spans in the text the piece starts at `offset` of."""
    return [Token(t.id, t.start + offset, t.end + offset) for t in tokens]


def placed_line(
    text: str,
    chunks: Sequence[tuple[Token, ...]],
    rows: int,
    leading: int,
    weights: Sequence[float],
    vectors: Sequence[torch.Tensor] = (),
) -> PlacedLine:
    """The placed line of `text` from the tokens found in each of the host's chunks of `rows` rows (`leading`
    start-token rows, the tokens, then end and padding rows) and every row's weight, in order.

    A chunk holds at least one end-token row: a line with no token (the empty prompt, where T5 is not padded
    as in Forge's Chroma) is one end-token row. Raises `MappingError` where no chunk format fits."""
    try:
        chunk_format = ChunkFormat(tokens=max(1, rows - leading - 1), leading=leading, rows=rows, comma_backtrack=0)
    except ValueError as error:
        raise MappingError(str(error)) from error
    layout = PromptLayout(text=text, chunks=tuple(chunks), format=chunk_format)
    return PlacedLine(layout, torch.tensor(list(weights), dtype=torch.float32), tuple(vectors))
