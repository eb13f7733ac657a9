"""Where each token of a WebUI prompt line sits in the host's conditioning rows, and its emphasis multiplier.

A1111 and Forge lay a prompt line out with their text engine's `tokenize_line`: emphasis syntax removed and
turned into per-token multipliers, `BREAK` closing a chunk, textual-inversion embeddings placed as vectors.
This module maps the core's view (the plain text the user wrote, its tokens with character spans) onto those
chunks (`flowcore.hosts.token_placement` builds the placed line), so that the core scores and patches exactly
the rows the host encoded. Shared by A1111 and Forge: what differs (how the host's parser splits a line, how
its tokenizer gives spans, whether chunks start with a start token) comes in as arguments.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from flowcore.encoders.layout import Token
from flowcore.errors import MappingError
from flowcore.hosts.token_placement import PlacedLine, placed_line, shifted

BREAK_SEPARATOR = " BREAK "  # what a `BREAK` becomes in the plain text the core segments


def emphasis_scale(line: PlacedLine, emphasis: str, encoding: torch.Tensor) -> torch.Tensor:
    """Each row's emphasis multiplier spread over `encoding`'s width `(rows, width)`, all ones where the
    emphasis mode ("Ignore", "None") applies no weights: the factor before any chunk rescale."""
    rows, width = encoding.shape
    multipliers = line.weights.to(encoding.device)
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


def layout_line(
    fragments: Sequence[tuple[str, float]],
    chunks: Sequence,
    tokens_of: Callable[[str], list[Token]],
    leading: int,
    filler_ids: set[int],
    embedding_tokens: Callable[[object, int], tuple[int, list[int]]] | None = None,
) -> PlacedLine:
    """Match a line's tokens with the host's chunks (`tokenize_line`'s, with `tokens`, `multipliers` and
    `fixes`): every chunk holds `leading` start-token rows, the line's tokens in order, then only end and
    padding ids (`filler_ids`).

    `embedding_tokens(embedding, count)` gives, for a textual-inversion embedding placed in a chunk, how many
    tokens of the text its name spans and the ids its `count` vector rows get (negative ids, see
    `clip_part.TextualInversion`). Raises `MappingError` where the host's chunks hold anything else.
    """
    pieces, plain = [], ""
    for text, weight in fragments:
        if weight == -1 and text == "BREAK":
            plain += BREAK_SEPARATOR
            continue
        pieces.append((text, len(plain)))
        plain += text
    stream = [token for text, offset in pieces for token in shifted(tokens_of(text), offset)]

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
    return placed_line(plain, placed, rows, leading, multipliers)
