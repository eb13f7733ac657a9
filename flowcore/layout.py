"""Where each token of a prompt sits in the WebUI's chunked encoding.

Shape vocabulary used across flowcore: an encoding is `(rows, dim)` with `rows = 77 * chunks`; each chunk
is one BOS row, 75 token rows (padded) and one EOS row, encoded by its own transformer call, exactly as
the AUTOMATIC1111 WebUI lays out long prompts. Chunks break at `BREAK`, after 75 tokens, or (when the 75th
token is reached) after the last comma among the final 20 tokens, as the WebUI's `comma_padding_backtrack`
option does by default.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

TOKENS_PER_CHUNK = 75
ROWS_PER_CHUNK = TOKENS_PER_CHUNK + 2
COMMA_BACKTRACK = 20
BREAK_PATTERN = re.compile(r"\s*\bBREAK\b\s*")
WORD_PATTERN = re.compile(r"\w+|[^\w\s]", re.UNICODE)


@dataclass(frozen=True)
class Token:
    """One token: its id and the half-open character span of the text it came from."""

    id: int
    start: int
    end: int


@dataclass(frozen=True)
class PromptLayout:
    """A prompt's tokens, grouped into chunks of at most 75, with helpers to find their rows.

    `leading` is the number of rows before the first token of a chunk: 1 (BOS) for CLIP and BERT, 0 for
    tokenizers without a start token (T5).
    """

    text: str
    chunks: tuple[tuple[Token, ...], ...]
    leading: int = 1

    @property
    def n_rows(self) -> int:
        """Rows of the encoding: 77 per chunk."""
        return ROWS_PER_CHUNK * len(self.chunks)

    def row(self, chunk: int, index: int) -> int:
        """The encoding row of token `index` of chunk `chunk`."""
        return ROWS_PER_CHUNK * chunk + self.leading + index

    def token_rows(self) -> list[tuple[int, Token]]:
        """Every token with its row, in order."""
        return [(self.row(c, i), token) for c, chunk in enumerate(self.chunks) for i, token in enumerate(chunk)]

    def rows_for_span(self, start: int, end: int) -> list[int]:
        """Rows of the tokens whose text overlaps the character span [start, end)."""
        return [row for row, token in self.token_rows() if token.start < end and start < token.end]

    def tokens_for_span(self, start: int, end: int) -> list[Token]:
        """Tokens whose text overlaps the character span [start, end), in order."""
        return [token for _, token in self.token_rows() if token.start < end and start < token.end]

    def tail_rows(self, chunk: int) -> list[int]:
        """The EOS and padding rows of a chunk: they see the whole chunk in a causal encoder."""
        first = self.row(chunk, len(self.chunks[chunk]))
        return list(range(first, ROWS_PER_CHUNK * (chunk + 1)))


def tokenize_with_offsets(tokenizer, text: str) -> list[Token]:
    """Tokenize `text` without special tokens, keeping each token's character span.

    Fast tokenizers report offsets themselves. Slow ones (the WebUI's transformers 4.30 CLIPTokenizer)
    are fed one word or punctuation mark at a time, which for CLIP's word-level BPE gives the same ids.
    """
    if getattr(tokenizer, "is_fast", False):
        encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        return [Token(i, a, b) for i, (a, b) in zip(encoded["input_ids"], encoded["offset_mapping"])]
    tokens = []
    for match in WORD_PATTERN.finditer(text):
        ids = tokenizer(match.group(), add_special_tokens=False)["input_ids"]
        tokens += [Token(i, match.start(), match.end()) for i in ids]
    return tokens


def chunk_tokens(segments: list[list[Token]], comma_id: int | None) -> list[list[Token]]:
    """Group tokens into chunks of at most 75, the WebUI's way (see the module docstring).

    `segments` are the token runs between `BREAK`s; each starts a new chunk.
    """
    chunks: list[list[Token]] = []
    for number, segment in enumerate(segments):
        chunk: list[Token] = []
        last_comma = -1
        for token in segment:
            if token.id == comma_id:
                last_comma = len(chunk)
            elif len(chunk) == TOKENS_PER_CHUNK and last_comma != -1 and len(chunk) - last_comma <= COMMA_BACKTRACK:
                chunks.append(chunk[: last_comma + 1])
                chunk, last_comma = chunk[last_comma + 1 :], -1
            if len(chunk) == TOKENS_PER_CHUNK:
                chunks.append(chunk)
                chunk, last_comma = [], -1
            chunk.append(token)
        is_last = number == len(segments) - 1
        if chunk or not is_last or not chunks:  # a BREAK always closes a chunk; the end only a non-empty one
            chunks.append(chunk)
    return chunks


def layout_prompt(tokenizer, text: str, leading: int = 1) -> PromptLayout:
    """Tokenize `text` and lay its tokens out in 77-row chunks, breaking at `BREAK` as the WebUI does."""
    comma_ids = tokenizer(",", add_special_tokens=False)["input_ids"]
    comma_id = comma_ids[0] if len(comma_ids) == 1 else None
    segments, position = [], 0
    for match in [*BREAK_PATTERN.finditer(text), None]:
        end = match.start() if match else len(text)
        piece = text[position:end]
        tokens = tokenize_with_offsets(tokenizer, piece)
        segments.append([Token(t.id, t.start + position, t.end + position) for t in tokens])
        position = match.end() if match else len(text)
    chunks = chunk_tokens(segments, comma_id)
    return PromptLayout(text=text, chunks=tuple(tuple(chunk) for chunk in chunks), leading=leading)
