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

from flowcore.encoders.base import weights_fingerprint
from flowcore.encoders.layout import PromptLayout, tokenize_with_offsets
from flowcore.hosts.parts import HostT5Part
from flowcore.hosts.token_placement import PlacedLine

from .line_layout import emphasis_scale, escape, layout_line


class T5Part(HostT5Part):
    """A Forge `T5TextProcessingEngine` as a `flowcore.encoders.TextEncoder`."""

    def __init__(
        self,
        engine,
        emphasis: str,
        fragments: Callable[[str], list[tuple[str, float]]],
        context: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
        active: bool = True,
    ):
        self.engine = engine
        self.end_id, self.pad_id = engine.id_end, engine.id_pad
        self.active = active  # False: the rows are there (zeros) but not T5's; they are left alone
        self.emphasis = emphasis
        self.fragments = fragments
        self.context = context

    def identity(self) -> str:
        settings = (type(self).__name__, self.emphasis, int(self.engine.min_length))
        return weights_fingerprint(self.engine.text_encoder, settings=settings)

    @property
    def width(self) -> int:
        return int(self.empty().rows.shape[-1])

    # --- layout ---

    def line_layout(self, line: str) -> PlacedLine:
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
            lambda text: tokenize_with_offsets(self.engine.tokenizer, text),
            leading=0,
            filler_ids={self.engine.id_end, self.engine.id_pad},
        )

    def layout(self, text: str) -> PromptLayout:
        return self.line_layout(text if self.emphasis == "None" else escape(text)).layout

    # --- encodes: `HostT5Part`'s, through the engine's own transformer call ---

    def alone_positions(self, count: int) -> tuple[int, list[int]]:
        """A prompt of `count` tokens as Forge pads it: to the engine's `min_length`, or (Chroma's unpadded
        engine) to its own length with the end token."""
        return max(int(self.engine.min_length), count + 1), list(range(count))

    def encode_sequences(self, sequences: Sequence[list]) -> torch.Tensor:
        return self.engine.encode_with_transformers(torch.tensor(list(sequences)))

    # --- emphasis ---

    def row_scale(self, encoding: torch.Tensor, line: PlacedLine) -> torch.Tensor:
        """Each row's emphasis factor `(rows, width)`. In "Original" mode Forge multiplies a chunk's rows by
        their weights and rescales the chunk to keep its mean: the rescale keeps the mean, so it is the mean of
        the rows divided by their weights over the mean of the rows."""
        scale = emphasis_scale(line, self.emphasis, encoding)
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
