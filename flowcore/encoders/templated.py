"""A causal language model whose prompt sits inside a fixed template, as LLM-conditioned text-to-image models use
one: Lumina 2 puts a system prompt before the prompt, Qwen-Image a chat template around it (and keeps no rows of
the template before the prompt), HiDream only a start token.

`PromptTemplate` says which token ids come before and after the prompt and which rows the conditioning keeps.
An item alone is encoded inside the same template: the template's tokens before the prompt at their positions,
then the item's tokens at the positions they have in the prompt (or right after the template, as when the item
is the whole prompt), so that only the missing context differs. In a causal model the tokens after the item
(the rest of the template) cannot change its rows, so they are left out.

`TemplatedEncoder` is that for a transformers causal LM (`GenericEncoder.for_causal_lm`, its layer handling
included); hosts that run their own copy of the model (ComfyUI) build the same sequences with `sequence`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from flowcore.encoders.base import Encoding, IsolatedItem, ItemRequest, weights_fingerprint
from flowcore.encoders.generic import GenericEncoder
from flowcore.encoders.layout import ChunkFormat, PromptLayout, Token, tokenize_with_offsets
from flowcore.errors import OptionsError


@dataclass(frozen=True)
class PromptTemplate:
    """Token ids around a prompt: `prefix` before it (start token included), `suffix` after it; the encoding
    keeps the rows from `first_row` on (the rows before it are encoded, then dropped)."""

    prefix: tuple[int, ...]
    suffix: tuple[int, ...] = ()
    first_row: int = 0

    def __post_init__(self) -> None:
        if not 0 <= self.first_row <= len(self.prefix):
            raise OptionsError(f"`first_row` must be within the {len(self.prefix)} prefix tokens: {self.first_row}.")

    @property
    def leading(self) -> int:
        """Rows of the encoding before the prompt's first token (the template's kept prefix rows)."""
        return len(self.prefix) - self.first_row

    def chunk_format(self, tokens: int, padding: int = 0) -> ChunkFormat:
        """The encoding's rows for a prompt of `tokens` tokens (at least one), then `padding` padding rows."""
        rows = self.leading + tokens + len(self.suffix) + padding
        rows = max(rows, self.leading + 1)
        return ChunkFormat(tokens=max(1, tokens), leading=self.leading, rows=rows, comma_backtrack=0)

    def sequence(self, ids: Sequence[int], start: int) -> tuple[list[int], list[int]]:
        """`ids` inside the template, their first token at row `start` of the encoding: the prefix at positions
        0.., then `ids` at `first_row + start`.. (a gap where the prompt had tokens before them)."""
        first = self.first_row + start
        positions = list(range(len(self.prefix))) + list(range(first, first + len(ids)))
        return [*self.prefix, *ids], positions

    def whole(self, ids: Sequence[int]) -> list[int]:
        """The full sequence of a prompt of `ids`: prefix, prompt, suffix."""
        return [*self.prefix, *ids, *self.suffix]


def template_around(tokenizer, template: str, placeholder: str = "{}") -> PromptTemplate:
    """A chat template's text (`placeholder` where the prompt goes) as token ids, tokenized in two halves (the
    caller checks that its tokenizer splits a prompt there, as a chat template's special tokens make sure)."""
    before, _, after = template.partition(placeholder)
    prefix = tokenizer(before, add_special_tokens=False)["input_ids"] if before else []
    suffix = tokenizer(after, add_special_tokens=False)["input_ids"] if after else []
    return PromptTemplate(tuple(prefix), tuple(suffix))


class TemplatedEncoder:
    """A causal `GenericEncoder` (`GenericEncoder.for_causal_lm`: its layer, -1 being the last after the final
    norm) reading prompts inside `template`. One chunk, no chunking: rows are the kept prefix rows, the prompt's
    tokens and the suffix's."""

    causal = True
    supports_positions = True

    def __init__(self, encoder: GenericEncoder, template: PromptTemplate):
        if not encoder.causal or not encoder.supports_positions:
            raise OptionsError("`TemplatedEncoder` needs a causal encoder that takes position ids.")
        self.encoder = encoder
        self.template = template
        self.tokenizer = encoder.tokenizer

    @property
    def device(self) -> torch.device:
        return self.encoder.device

    def identity(self) -> str:
        settings = (type(self).__name__, self.encoder.layer, self.template)
        return weights_fingerprint(self.encoder.encoder_module, settings=settings)

    def layout(self, text: str) -> PromptLayout:
        """`text`'s tokens in one chunk inside the template."""
        tokens = tokenize_with_offsets(self.tokenizer, text)
        return PromptLayout(text, (tuple(tokens),), self.template.chunk_format(len(tokens)))

    def encode(self, layout: PromptLayout) -> Encoding:
        """The whole templated prompt through the model, the rows before `first_row` dropped."""
        ids = self.template.whole([t.id for t in layout.chunks[0]] if layout.chunks else [])
        states = self.encoder._run([(ids, list(range(len(ids))))], len(ids))[0]
        return Encoding(states[self.template.first_row :])

    def empty(self) -> Encoding:
        return self.encode(self.layout(""))

    def encode_isolated(self, requests: Sequence[ItemRequest]) -> list[IsolatedItem]:
        if not requests:
            return []
        sequences = [self.template.sequence(list(request.token_ids), request.start) for request in requests]
        states = self.encoder._run(sequences, max(len(ids) for ids, _ in sequences))
        first = len(self.template.prefix)
        return [
            IsolatedItem(request.text, list(request.token_ids), states[index, first : first + len(request.token_ids)])
            for index, request in enumerate(requests)
        ]

    def rederive(self, layout: PromptLayout, replaced) -> Encoding:
        raise NotImplementedError("the template's rows after the prompt are left as encoded")


def prompt_tokens(tokens: Sequence[Token], text: str, start: int, end: int) -> tuple[int, list[Token], int]:
    """Split the tokens of a templated `text` at the prompt `[start, end)`: how many tokens come before it (the
    template's), the prompt's tokens with their spans made relative to it, and how many come after it.

    A token that reaches into the prompt across whitespace only (SentencePiece's `▁a` after a template ending in
    a space) is the prompt's, its span cut to the prompt; so is a lone space token right before the prompt (a
    SentencePiece `▁` split from the prompt's first word: alone, the word would have it too). A token of no width
    (a lone `▁` that ended a piece) belongs to the prompt unless it stands inside the template. Raises
    `ValueError` where a token joins template text with prompt text, or the three kinds are not in that order."""
    kinds, found = [], []
    for token in tokens:
        if token.start == token.end:
            kind = 0 if token.start < start else 2 if token.start > end else 1
        elif token.end == start and text[token.start : token.end] == " ":
            kind = 1
        else:
            kind = 0 if token.end <= start else 2 if token.start >= end else 1
        if kind == 1:
            first, last = min(max(token.start, start), end), max(min(token.end, end), start)
            if text[token.start : first].strip() or text[last : token.end].strip():
                raise ValueError(f"a token joins the template and the prompt at {token.start}..{token.end}")
            found.append(Token(token.id, first - start, last - start))
        kinds.append(kind)
    if kinds != sorted(kinds):
        raise ValueError("the prompt's tokens are not in one run inside the template")
    return kinds.count(0), found, kinds.count(2)
