"""Where each token of a prompt sits in an encoder's chunked encoding.

Shape vocabulary used across flowcore: an encoding is `(rows, dim)` with `rows = format.rows * chunks`. Each
chunk is encoded by its own transformer call and laid out as `ChunkFormat` says: `leading` start-token rows
(CLIP's BOS, BERT's CLS; none for T5), up to `tokens` prompt tokens, then the end token and padding up to
`rows`. A token's row within its chunk is also its position id.

`CLIP_CHUNKS` is the AUTOMATIC1111 WebUI's layout for long prompts: 75 tokens + BOS + EOS = 77 rows per chunk,
chunks broken at `BREAK`, after 75 tokens, or (when the 75th token is reached) after the last comma among the
final 20 tokens, as the WebUI's `comma_padding_backtrack` option does by default. T5 (Flux, SD3) and causal LLM
encoders use longer chunks and other special tokens: their encoders give their own `ChunkFormat`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from flowcore.errors import OptionsError
from flowcore.prompts.prompt_syntax import BREAK_PATTERN

WORD_PATTERN = re.compile(r"\w+|[^\w\s]", re.UNICODE)


@dataclass(frozen=True)
class ChunkFormat:
    """How an encoder lays tokens out in chunks.

    - `tokens`: prompt tokens per chunk (CLIP: 75).
    - `leading`: start-token rows before the first prompt token (CLIP, BERT: 1; T5: 0).
    - `rows`: rows per chunk in the encoding, start and end tokens and padding included (CLIP: 77).
    - `comma_backtrack`: when a chunk fills up, break after the last comma among this many final tokens
      instead (the WebUI's default 20; 0 turns it off).
    """

    tokens: int = 75
    leading: int = 1
    rows: int = 77
    comma_backtrack: int = 20

    def __post_init__(self) -> None:
        if self.tokens < 1 or self.leading < 0 or self.rows < self.leading + self.tokens:
            raise OptionsError(
                f"`ChunkFormat`: a chunk of {self.rows} rows cannot hold {self.leading} start token(s) and "
                f"{self.tokens} tokens."
            )


CLIP_CHUNKS = ChunkFormat()  # the WebUI's 75 + BOS + EOS = 77 rows
TOKENS_PER_CHUNK = CLIP_CHUNKS.tokens
ROWS_PER_CHUNK = CLIP_CHUNKS.rows


@dataclass(frozen=True)
class Token:
    """One token: its id and the half-open character span of the text it came from."""

    id: int
    start: int
    end: int


@dataclass(frozen=True)
class PromptLayout:
    """A prompt's tokens, grouped into chunks of at most `format.tokens`, with helpers to find their rows."""

    text: str
    chunks: tuple[tuple[Token, ...], ...]
    format: ChunkFormat = CLIP_CHUNKS

    @property
    def leading(self) -> int:
        """Rows before the first token of a chunk: 1 (BOS) for CLIP and BERT, 0 for T5."""
        return self.format.leading

    @property
    def n_rows(self) -> int:
        """Rows of the encoding: `format.rows` per chunk."""
        return self.format.rows * len(self.chunks)

    def row(self, chunk: int, index: int) -> int:
        """The encoding row of token `index` of chunk `chunk`."""
        return self.format.rows * chunk + self.format.leading + index

    def chunk_of(self, row: int) -> int:
        """The chunk an encoding row belongs to."""
        return row // self.format.rows

    def position(self, row: int) -> int:
        """A row's position within its chunk (its position id in the chunk's transformer call)."""
        return row % self.format.rows

    def token_rows(self) -> list[tuple[int, Token]]:
        """Every token with its row, in order."""
        return [(self.row(c, i), token) for c, chunk in enumerate(self.chunks) for i, token in enumerate(chunk)]

    def rows_for_span(self, start: int, end: int) -> list[int]:
        """Rows of the tokens whose text overlaps the character span [start, end)."""
        return [row for row, token in self.token_rows() if token.start < end and start < token.end]

    def item_rows(self, start: int, end: int) -> list[int]:
        """Rows of an item spanning [start, end): the tokens overlapping it, and before them any tokens of
        whitespace alone that lead into it (SentencePiece's lone word-start `▁`), so that the item's tokens
        are those its text gets when it is tokenized alone. Where the item's first token already is such a
        word start (two tokens at the same offset: a dummy prefix, when the host tokenized the item's text as
        a fragment of its own), nothing before it is taken."""
        placed = self.token_rows()
        rows = self.rows_for_span(start, end)
        if not rows:
            return rows
        index = next(i for i, (row, _) in enumerate(placed) if row == rows[0])
        if index + 1 < len(placed) and placed[index + 1][1].start == placed[index][1].start:
            return rows
        while index > 0:
            row, token = placed[index - 1]
            follows = placed[index][1]
            if self.chunk_of(row) != self.chunk_of(rows[0]) or token.end != follows.start or token.start == token.end:
                break
            if not self.text[token.start : token.end].isspace():
                break
            rows.insert(0, row)
            index -= 1
        return rows

    def tokens_for_span(self, start: int, end: int) -> list[Token]:
        """Tokens whose text overlaps the character span [start, end), in order."""
        return [token for _, token in self.token_rows() if token.start < end and start < token.end]

    def tail_rows(self, chunk: int) -> list[int]:
        """The end-token and padding rows of a chunk: they see the whole chunk in a causal encoder."""
        first = self.row(chunk, len(self.chunks[chunk]))
        return list(range(first, self.format.rows * (chunk + 1)))


def tokenize_with_offsets(tokenizer, text: str) -> list[Token]:
    """Tokenize `text` without special tokens, keeping each token's character span.

    Fast tokenizers report offsets themselves. Slow ones (the WebUI's transformers 4.30 CLIPTokenizer)
    are fed one word or punctuation mark at a time, which for CLIP's word-level BPE gives the same ids.
    `verbose=False`: a long prompt is chunked here, so transformers' "longer than the specified maximum
    sequence length" warning would be a false alarm.
    """
    if getattr(tokenizer, "is_fast", False):
        encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True, verbose=False)
        return [Token(i, a, b) for i, (a, b) in zip(encoded["input_ids"], encoded["offset_mapping"])]
    tokens = []
    for match in WORD_PATTERN.finditer(text):
        ids = tokenizer(match.group(), add_special_tokens=False)["input_ids"]
        tokens += [Token(i, match.start(), match.end()) for i in ids]
    return tokens


def chunk_tokens(
    segments: list[list[Token]], comma_id: int | None, format: ChunkFormat = CLIP_CHUNKS
) -> list[list[Token]]:
    """Group tokens into chunks of at most `format.tokens`, the WebUI's way (see the module docstring).

    `segments` are the token runs between `BREAK`s; each starts a new chunk.
    """
    size, backtrack = format.tokens, format.comma_backtrack
    chunks: list[list[Token]] = []
    for number, segment in enumerate(segments):
        chunk: list[Token] = []
        last_comma = -1
        for token in segment:
            if token.id == comma_id:
                last_comma = len(chunk)
            elif len(chunk) == size and last_comma != -1 and len(chunk) - last_comma <= backtrack:
                chunks.append(chunk[: last_comma + 1])
                chunk, last_comma = chunk[last_comma + 1 :], -1
            if len(chunk) == size:
                chunks.append(chunk)
                chunk, last_comma = [], -1
            chunk.append(token)
        is_last = number == len(segments) - 1
        if chunk or not is_last or not chunks:  # a BREAK always closes a chunk; the end only a non-empty one
            chunks.append(chunk)
    return chunks


def break_segments(text: str) -> list[list[tuple[int, int]]]:
    """The stretches of `text` between `BREAK`s, each one span to tokenize: plain text's segments."""
    segments, position = [], 0
    for match in [*BREAK_PATTERN.finditer(text), None]:
        end = match.start() if match else len(text)
        segments.append([(position, end)])
        position = match.end() if match else len(text)
    return segments


def layout_prompt(
    tokenizer, text: str, format: ChunkFormat = CLIP_CHUNKS, segments: list[list[tuple[int, int]]] | None = None
) -> PromptLayout:
    """Tokenize `text` and lay its tokens out in chunks of `format`, breaking at `BREAK` as the WebUI does.

    `segments` (default: `break_segments(text)`) gives the spans of `text` to tokenize one by one, grouped by
    chunk-breaking `BREAK`s: the WebUI tokenizes each run of equal emphasis on its own
    (`flowcore.prompts.prompt_syntax.ParsedPrompt.segments`)."""
    comma_ids = tokenizer(",", add_special_tokens=False)["input_ids"]
    comma_id = comma_ids[0] if len(comma_ids) == 1 else None
    tokens_per_segment = []
    for spans in break_segments(text) if segments is None else segments:
        tokens: list[Token] = []
        for start, end in spans:
            tokens += [
                Token(t.id, t.start + start, t.end + start) for t in tokenize_with_offsets(tokenizer, text[start:end])
            ]
        tokens_per_segment.append(tokens)
    chunks = chunk_tokens(tokens_per_segment, comma_id, format)
    return PromptLayout(text=text, chunks=tuple(tuple(chunk) for chunk in chunks), format=format)
