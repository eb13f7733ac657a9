"""Where each token of a WebUI prompt line sits in the host's conditioning rows, and its emphasis multiplier.

A1111 and Forge lay a prompt line out with their text engine's `tokenize_line`: emphasis syntax removed and
turned into per-token multipliers, `BREAK` closing a chunk, textual-inversion embeddings placed as vectors.
This module maps the core's view (the plain text the user wrote, its tokens with character spans) onto those
chunks, so that the core scores and patches exactly the rows the host encoded. Shared by every host: what
differs (how the host's parser splits a line, how its tokenizer gives spans, whether chunks start with a
start token) comes in as arguments.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from flowcore.layout import ChunkFormat, PromptLayout, Token, tokenize_with_offsets

# CLIP's own pre-tokenization (open_clip SimpleTokenizer and transformers' CLIPTokenizer): BPE runs inside
# each of these pieces, so tokenizing the pieces one by one gives the ids of the whole text, with spans.
CLIP_PRETOKEN = r"""<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"""
BREAK_SEPARATOR = " BREAK "  # what a `BREAK` becomes in the plain text the core segments


class MappingError(Exception):
    """A prompt's tokens could not be matched with the host's chunks; that prompt is left unpatched."""


@dataclass(frozen=True)
class LineLayout:
    """A prompt line as the host encodes it: the core's `PromptLayout` of its plain text (emphasis syntax
    removed) and each row's emphasis multiplier `(rows,)` (1 at start, end and padding rows)."""

    layout: PromptLayout
    multipliers: torch.Tensor

    def token_scale(self, emphasis: str, encoding: torch.Tensor) -> torch.Tensor:
        """Each row's emphasis multiplier spread over `encoding`'s width `(rows, width)`, all ones where the
        emphasis mode ("Ignore", "None") applies no weights: the factor before any chunk rescale."""
        rows, width = encoding.shape
        multipliers = self.multipliers.to(encoding.device)
        if emphasis in ("Ignore", "None"):
            multipliers = torch.ones_like(multipliers)
        return multipliers[:, None].expand(rows, width).clone()


def escape(text: str) -> str:
    """Plain text as a WebUI prompt line that parses back to itself (no emphasis)."""
    for char in "\\()[]":
        text = text.replace(char, "\\" + char)
    return text


def plain_text(fragments: Sequence[tuple[str, float]]) -> str:
    """The text the user wrote, without emphasis syntax: what the core segments."""
    return "".join(BREAK_SEPARATOR if w == -1 and t == "BREAK" else t for t, w in fragments)


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


def clip_tokens(tokenize: Callable[[list[str]], list[list[int]]], text: str) -> list[Token]:
    """A fragment's CLIP tokens with spans, from the host's own `tokenize` (which may be a slow tokenizer
    without offsets): each pre-token on its own gives the ids of the whole fragment, one by one."""
    pretokens = _pretokens(text)
    if not pretokens:
        return []
    ids = tokenize([p for p, _, _ in pretokens])
    if [i for group in ids for i in group] != list(tokenize([text])[0]):
        raise MappingError(f"cannot find the tokens of {text!r} one by one")
    return [Token(i, start, end) for group, (_, start, end) in zip(ids, pretokens) for i in group]


def fast_tokens(tokenizer) -> Callable[[str], list[Token]]:
    """A fragment's tokens with spans from a fast tokenizer's offsets (T5's SentencePiece)."""
    return lambda text: tokenize_with_offsets(tokenizer, text)


def layout_line(
    fragments: Sequence[tuple[str, float]],
    chunks: Sequence,
    tokens_of: Callable[[str], list[Token]],
    leading: int,
    filler_ids: set[int],
    embedding_tokens: Callable[[object, int], tuple[int, list[int]]] | None = None,
) -> LineLayout:
    """Match a line's tokens with the host's chunks (`tokenize_line`'s, with `tokens`, `multipliers` and
    `fixes`): every chunk holds `leading` start-token rows, the line's tokens in order, then only end and
    padding ids (`filler_ids`).

    `embedding_tokens(embedding, count)` gives, for a textual-inversion embedding placed in a chunk, how many
    tokens of the text its name spans and the ids its `count` vector rows get (negative ids, see
    `a1111.TextualInversion`). Raises `MappingError` where the host's chunks hold anything else.
    """
    pieces, plain = [], ""
    for text, weight in fragments:
        if weight == -1 and text == "BREAK":
            plain += BREAK_SEPARATOR
            continue
        pieces.append((text, len(plain)))
        plain += text
    stream = [Token(t.id, t.start + offset, t.end + offset) for text, offset in pieces for t in tokens_of(text)]

    placed: list[tuple[Token, ...]] = []
    multipliers: list[float] = []
    position = 0
    rows = len(chunks[0].tokens) if chunks else 0
    for chunk in chunks:
        if len(chunk.tokens) != rows:
            raise MappingError(f"chunks of {len(chunk.tokens)} and {rows} rows in one line")
        fixes = {fix.offset: fix.embedding for fix in getattr(chunk, "fixes", [])}
        row_tokens: list[Token] = []
        index = 0
        while leading + index < rows:
            if index in fixes and embedding_tokens is not None:  # an embedding: vector rows for its name's tokens
                count = int(getattr(fixes[index], "vectors", 1))
                used, ids = embedding_tokens(fixes[index], count)
                span = stream[position : position + used]
                if len(span) != used:
                    raise MappingError("an embedding's tokens run past the prompt")
                row_tokens += [Token(i, span[0].start, span[-1].end) for i in ids]
                position += used
                index += count
                continue
            if position < len(stream) and chunk.tokens[leading + index] == stream[position].id:
                row_tokens.append(stream[position])
                position += 1
                index += 1
                continue
            break
        if any(t not in filler_ids for t in chunk.tokens[leading + len(row_tokens) :]):
            raise MappingError("the host's chunks hold tokens the prompt text does not explain")
        placed.append(tuple(row_tokens))
        multipliers += [float(m) for m in chunk.multipliers]
    if position != len(stream):
        raise MappingError(f"{len(stream) - position} token(s) of the prompt are missing from the chunks")
    # a line with no token (the empty prompt, when T5 is not padded as in Forge's Chroma) is one end-token row
    chunk_format = ChunkFormat(tokens=max(1, rows - leading - 1), leading=leading, rows=rows, comma_backtrack=0)
    layout = PromptLayout(text=plain, chunks=tuple(placed), format=chunk_format)
    return LineLayout(layout, torch.tensor(multipliers, dtype=torch.float32))
