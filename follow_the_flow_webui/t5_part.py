"""The T5 rows of a Forge conditioning (Flux, Chroma, SD 3.5) as a `flowcore` text encoder.

Forge's T5 engine lays a line out with no start token: its tokens, the end token (id 1), then padding (id 0)
up to 256 rows or to the longest chunk, all of it attended. T5 is bidirectional with relative positions, so an
item alone is encoded as Forge would encode the item's text as a whole prompt: its tokens, the end token and
the padding, through the engine's own `encode_with_transformers` (batched, one call per length); where it
sits does not change its rows. Emphasis is applied per chunk, so each chunk's "Original" rescale is recovered
from the conditioning itself (`row_scale`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence

import torch

from flowcore.encoders.base import Encoding, IsolatedItem, ItemRequest, weights_fingerprint
from flowcore.layout import PromptLayout

from .line_layout import LineLayout, escape, fast_tokens, layout_line


class T5Part:
    """A Forge `T5TextProcessingEngine` as a `flowcore.encoders.TextEncoder`."""

    name = "T5"
    causal = False
    supports_positions = False

    def __init__(
        self,
        engine,
        emphasis: str,
        fragments: Callable[[str], list[tuple[str, float]]],
        context: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
        active: bool = True,
    ):
        self.engine = engine
        self.active = active  # False: the rows are there (zeros) but not T5's; they are left alone
        self.emphasis = emphasis
        self.fragments = fragments
        self.context = context
        self._empty: Encoding | None = None

    def identity(self) -> str:
        settings = (type(self).__name__, self.emphasis, int(self.engine.min_length))
        return weights_fingerprint(self.engine.text_encoder, settings=settings)

    @property
    def width(self) -> int:
        return int(self.empty().rows.shape[-1])

    # --- layout ---

    def line_layout(self, line: str) -> LineLayout:
        """Where each token of `line` sits: the engine's chunks, padded to the longest as Forge pads them."""
        chunks, _ = self.engine.tokenize_line(line)
        rows = max(len(chunk.tokens) for chunk in chunks)
        for chunk in chunks:
            missing = rows - len(chunk.tokens)
            chunk.tokens = list(chunk.tokens) + [self.engine.id_pad] * missing
            chunk.multipliers = list(chunk.multipliers) + [1.0] * missing
        return layout_line(
            self.fragments(line),
            chunks,
            fast_tokens(self.engine.tokenizer),
            leading=0,
            filler_ids={self.engine.id_end, self.engine.id_pad},
        )

    def layout(self, text: str) -> PromptLayout:
        return self.line_layout(text if self.emphasis == "None" else escape(text)).layout

    # --- encodes ---

    def _run(self, sequences: Sequence[list[int]]) -> torch.Tensor:
        """`(batch, rows, dim)` for sequences of equal length, through the engine's own transformer call."""
        with self.context(), torch.no_grad():
            return self.engine.encode_with_transformers(torch.tensor(list(sequences))).float()

    def encode(self, layout: PromptLayout) -> Encoding:
        rows = layout.format.rows
        sequences = []
        for chunk in layout.chunks:
            ids = [token.id for token in chunk] + [self.engine.id_end]
            sequences.append(ids + [self.engine.id_pad] * (rows - len(ids)))
        encoded = self._run(sequences)  # (chunks, rows, dim)
        return Encoding(encoded.reshape(-1, encoded.shape[-1]))

    def encode_isolated(self, requests: Sequence[ItemRequest]) -> list[IsolatedItem]:
        """Each item as Forge encodes its text as a whole prompt: padded to the engine's `min_length`, or (Chroma's
        unpadded engine) at its own length, since T5 attends the padding. One batched call per length."""
        lengths = [max(int(self.engine.min_length), len(r.token_ids) + 1) for r in requests]
        rows: list[torch.Tensor | None] = [None] * len(requests)
        for length in sorted(set(lengths)):
            group = [index for index, n in enumerate(lengths) if n == length]
            sequences = [[*requests[index].token_ids, self.engine.id_end] for index in group]
            encoded = self._run([ids + [self.engine.id_pad] * (length - len(ids)) for ids in sequences])
            for position, index in enumerate(group):
                rows[index] = encoded[position, : len(requests[index].token_ids)]
        return [IsolatedItem(r.text, list(r.token_ids), r_rows) for r, r_rows in zip(requests, rows)]

    def empty(self) -> Encoding:
        if self._empty is None:
            self._empty = self.encode(self.layout(""))
        return self._empty

    def rederive(self, layout: PromptLayout, replaced) -> Encoding:
        raise NotImplementedError("T5 is bidirectional: its end-token and padding rows are left as encoded")

    # --- emphasis ---

    def row_scale(self, encoding: torch.Tensor, line: LineLayout) -> torch.Tensor:
        """Each row's emphasis factor `(rows, width)`. In "Original" mode Forge multiplies a chunk's rows by
        their weights and rescales the chunk to keep its mean: the rescale keeps the mean, so it is the mean of
        the rows divided by their weights over the mean of the rows."""
        scale = line.token_scale(self.emphasis, encoding)
        if self.emphasis != "Original":
            return scale
        rows = encoding.shape[0]
        chunk_rows = line.layout.format.rows
        for first in range(0, rows, chunk_rows):
            chunk = slice(first, first + chunk_rows)
            mean = encoding[chunk].float().mean()
            if mean != 0:
                scale[chunk] *= (encoding[chunk].float() / scale[chunk]).mean() / mean
        return scale
