"""Where each token of a ComfyUI prompt sits in ComfyUI's own token chunks, and its weight.

ComfyUI's tokenizers (`clip.tokenize(text, return_word_ids=True)`) give, per encoder key ("l", "g", "h",
"t5xxl"), a list of chunks of `(token, weight, word id)`: a token is an int id, or a tensor (a vector of an
`embedding:name`); word id 0 marks the start, end and padding tokens. A chunk is `[start] tokens [end] padding`
(CLIP: 77 rows each; T5: no start token, one chunk padded to its minimum length).

ComfyUI parses a prompt into weighted pieces (`(word:1.2)`, `\\(` escapes) and tokenizes each piece's text as
a whole, an `embedding:name` on its own. Here the same pieces are tokenized again, with each token's character
span in the plain text (the prompt without weight syntax, which is what flowcore segments), and matched with
ComfyUI's chunks group by group (a word id is one piece's tokens): so rows come from ComfyUI itself, and a
prompt whose tokens cannot be explained raises `MappingError` and is left unpatched. The placed line itself
(`PlacedLine`) and the tokens' spans are `flowcore.hosts.token_placement`'s.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from flowcore.encoders.layout import Token
from flowcore.errors import MappingError
from flowcore.hosts.token_placement import PlacedLine, placed_line, shifted

EMBEDDING_IDENTIFIER = "embedding:"


@dataclass(frozen=True)
class Fragment:
    """A piece of the prompt with one weight: its text as ComfyUI tokenizes it, and where it starts in the
    plain text."""

    text: str
    weight: float
    offset: int


def fragments(text: str, parse: Callable[[str], Sequence[tuple[str, float]]]) -> list[Fragment]:
    """The prompt's weighted pieces with their offsets in the plain text, from `parse` (ComfyUI's own parser:
    `(text, weight)` pieces with the escapes resolved, see `comfyui_nodes.parts.comfy_fragments`)."""
    found, offset = [], 0
    for piece, weight in parse(text):
        found.append(Fragment(piece, float(weight), offset))
        offset += len(piece)
    return found


def plain_text(pieces: Sequence[Fragment]) -> str:
    """The text the user wrote without weight syntax: what flowcore segments."""
    return "".join(piece.text for piece in pieces)


def escape(text: str) -> str:
    """Plain text as a ComfyUI prompt that parses back to itself (no weights): parentheses escaped."""
    return text.replace("(", "\\(").replace(")", "\\)")


@dataclass
class _Group:
    """The tokens ComfyUI made of one piece of text (one word id), where they sit, and their weights."""

    tokens: list  # ints or tensors
    places: list[tuple[int, int]]  # (chunk, position in chunk)
    weights: list[float]

    @property
    def is_embedding(self) -> bool:
        return all(torch.is_tensor(t) for t in self.tokens)

    def ids(self) -> list[int]:
        return [int(t) if not torch.is_tensor(t) else -1 for t in self.tokens]


def _groups(chunks: Sequence[Sequence[tuple]]) -> list[_Group]:
    """ComfyUI's prompt tokens (word id != 0), grouped by word id, in order."""
    groups: list[_Group] = []
    last = None
    for c, chunk in enumerate(chunks):
        for p, entry in enumerate(chunk):
            if len(entry) < 3:
                raise MappingError("the tokenizer gave no word ids")
            token, weight, word = entry[0], entry[1], entry[2]
            if word == 0:
                continue
            if word != last:
                groups.append(_Group([], [], []))
                last = word
            groups[-1].tokens.append(token)
            groups[-1].places.append((c, p))
            groups[-1].weights.append(float(weight))
    return groups


def _pieces(fragment: Fragment) -> list[tuple[str, int]]:
    """A fragment's text split as ComfyUI splits it before tokenizing: before every `embedding:` that follows
    a space or a line break (which is dropped). Pieces as `(text, offset in the plain text)`, empty ones out."""
    text, pieces, start = fragment.text, [], 0
    for match in re.finditer(r"[ \n](?=" + re.escape(EMBEDDING_IDENTIFIER) + ")", text):
        pieces.append((text[start : match.start()], fragment.offset + start))
        start = match.end()
    pieces.append((text[start:], fragment.offset + start))
    return [(piece, offset) for piece, offset in pieces if piece]


def key_layout(
    fragments_: Sequence[Fragment],
    chunks: Sequence[Sequence[tuple]],
    tokens_of: Callable[[str], list[Token]],
    leading: int,
) -> PlacedLine:
    """Match the prompt's pieces with one key's chunks (see the module docstring). `leading` is 1 where the
    chunks start with a start token (CLIP), 0 otherwise (T5). Tensor tokens get ids -1, -2, ... in order of
    appearance, their vectors in the placed line's `vectors`."""
    groups = _groups(chunks)
    plain = plain_text(fragments_)
    placed: dict[tuple[int, int], Token] = {}
    vectors: list[torch.Tensor] = []
    index = 0  # next group

    def take(tokens: list[Token], weight: float) -> bool:
        """Place `tokens` on the next group if its ids are theirs."""
        nonlocal index
        if not tokens:
            return True
        if index >= len(groups) or groups[index].is_embedding or groups[index].ids() != [t.id for t in tokens]:
            return False
        last = tokens[-1]
        if plain[last.start : last.end].isspace():  # a piece's trailing space (SentencePiece's lone `▁`) belongs
            tokens = [*tokens[:-1], Token(last.id, last.end, last.end)]  # to no item: the next piece is tokenized
        _place(groups[index], tokens, weight)  # on its own, so an item there never starts with it
        index += 1
        return True

    def _place(group: _Group, tokens: list[Token], weight: float) -> None:
        if any(abs(w - weight) > 1e-6 * max(1.0, abs(weight)) for w in group.weights):
            raise MappingError(f"ComfyUI weighs {group.weights} where the prompt says {weight}")
        for place, token in zip(group.places, tokens):
            placed[place] = token

    for fragment in fragments_:
        for text, offset in _pieces(fragment):
            piece_tokens = shifted(tokens_of(text), offset) if text else []
            if not text.startswith(EMBEDDING_IDENTIFIER):
                if not take(piece_tokens, fragment.weight):
                    raise MappingError(f"the tokens of {text!r} are not where ComfyUI put them")
                continue
            # `embedding:name rest`: the name's vectors where ComfyUI found the embedding (it retries the name
            # without trailing commas, which then lead the rest), then the rest as text; with no embedding
            # folder, the whole piece is text; where the embedding is missing, only the rest is.
            words = text[len(EMBEDDING_IDENTIFIER) :].split()
            name = words[0] if words else ""
            name_end = text.index(name, len(EMBEDDING_IDENTIFIER)) + len(name) if name else len(text)
            rests = list(dict.fromkeys([name_end - (len(name) - len(name.rstrip(","))), name_end]))
            found = index < len(groups) and groups[index].is_embedding
            if found:
                group = groups[index]
                index += 1
            elif take(piece_tokens, fragment.weight):  # no embedding folder: the piece is plain text
                continue
            rest = next((r for r in rests if take(shifted(tokens_of(text[r:]), offset + r), fragment.weight)), None)
            if rest is None:
                raise MappingError(f"the tokens of {text!r} are not where ComfyUI put them")
            if found:
                first = len(vectors)
                vectors += list(group.tokens)
                tokens = [Token(-(first + n + 1), offset, offset + rest) for n in range(len(group.tokens))]
                _place(group, tokens, fragment.weight)
    if index != len(groups):
        raise MappingError(f"{len(groups) - index} group(s) of ComfyUI's tokens are not in the prompt text")
    return _layout(fragments_, chunks, placed, leading, vectors)


def _layout(fragments_, chunks, placed, leading, vectors) -> PlacedLine:
    rows = len(chunks[0]) if chunks else 0
    if any(len(chunk) != rows for chunk in chunks):
        raise MappingError("chunks of different lengths")
    laid = []
    for c in range(len(chunks)):
        tokens = [placed[(c, p)] for p in range(rows) if (c, p) in placed]
        positions = [p for p in range(rows) if (c, p) in placed]
        if positions != list(range(leading, leading + len(positions))):
            raise MappingError(f"chunk {c}: the prompt's tokens are not in one run after the start token")
        laid.append(tuple(tokens))
    weights = [float(entry[1]) for chunk in chunks for entry in chunk]
    return placed_line(plain_text(fragments_), laid, rows, leading, weights, vectors)
