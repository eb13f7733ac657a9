"""The CLIP rows of a host's conditioning as a `flowcore` text encoder, over the host's own transformers.

Every WebUI (A1111, Forge) encodes a prompt line with CLIP the same way: `tokenize_line` chunks (75 tokens +
BOS + EOS = 77 rows, emphasis multipliers, textual-inversion vectors), one transformer call per chunk, the rows
of one or two encoders side by side (SDXL: CLIP-L then CLIP-G). `ClipPart` is that, given by a host module
(`a1111`, `forge`) as the engine that tokenizes and the `Tower`s that drive the host's transformers:

- the layout of a line comes from the engine's own `tokenize_line` (`line_layout`);
- items alone (at any positions), calibration prompts and the empty prompt go through the towers, all items of
  a prompt packed into one forward call per transformer (`flowcore.hosts.parts.HostClipPart`);
- `row_scale` recovers each row's emphasis factor, so that the glue hands the core emphasis-free rows.

The prompt's own rows are always the host's conditioning itself. Textual-inversion vectors travel as negative
token ids (`TextualInversion`), which the towers turn back into the embedding's vectors.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence

import torch

from flowcore.encoders.base import weights_fingerprint
from flowcore.encoders.clip import Tower
from flowcore.encoders.layout import PromptLayout
from flowcore.hosts.embeddings import EmbeddingTable, with_vectors
from flowcore.hosts.parts import HostClipPart
from flowcore.hosts.token_placement import PlacedLine, clip_tokens

from .line_layout import emphasis_scale, escape, layout_line


class TextualInversion(EmbeddingTable):
    """The WebUI's textual-inversion vectors in an `EmbeddingTable`: an entry is an embedding and the index of
    one of its vectors, keyed by the embedding's name and hash."""

    def embedding_id(self, embedding, index: int) -> int:
        """The negative id of vector `index` of `embedding`."""
        key = (str(getattr(embedding, "name", "")), str(getattr(embedding, "shorthash", id(embedding))), index)
        return self.id_of(key, (embedding, index))

    def vector(self, token_id: int, key: str) -> torch.Tensor:
        """The vector behind a negative id, for the encoder whose textual-inversion key is `key`
        (SDXL's embeddings hold one tensor per encoder: "clip_l", "clip_g")."""
        embedding, index = self.entry(token_id)
        vectors = embedding.vec[key] if isinstance(embedding.vec, dict) else embedding.vec
        return vectors[index]

    def lookup(self, module: torch.nn.Module, input_ids: torch.Tensor) -> torch.Tensor:
        """Token embeddings `(1, seq, hidden)` from a host's token embedding, read through the wrapper the host
        puts around it (A1111's `EmbeddingsWithFixes`, Forge's `CLIPEmbeddingForTextualInversion`, both with
        the original table in `wrapped`), with this table's vectors at negative ids."""
        table = getattr(module, "wrapped", module)
        key = getattr(module, "textual_inversion_key", "clip_l")
        return with_vectors(table(input_ids.clamp(min=0)), input_ids, lambda token_id: self.vector(token_id, key))


class ClipPart(HostClipPart):
    """A WebUI's CLIP encoder(s) as a `flowcore.encoders.TextEncoder` (see the module docstring).

    - `engine`: the object with the host's `tokenize_line` and `tokenize` (A1111's hijacked text encoder,
      Forge's `ClassicTextProcessingEngine`); `id_end` and `id_pad` are its end and padding ids.
    - `towers`: the host's transformers with the layers it reads, in the order of the rows' columns.
    - `fragments(line)`: the host's emphasis parser, `(text, weight)` pieces, `BREAK` with weight -1.
    - `context()`: what every encode runs inside (autocast; Forge also loads the patched weights first).
    """

    active = True  # its rows are patched (see `t5_part.T5Part.active`)
    rederive_note = "re-deriving the EOS/padding rows is not available in the WebUI extension yet"

    def __init__(
        self,
        engine,
        towers: list[Tower],
        inversion: TextualInversion,
        emphasis: str,
        fragments: Callable[[str], list[tuple[str, float]]],
        context: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
    ):
        self.engine = engine
        self.towers = towers
        self.inversion = inversion
        self.emphasis = emphasis
        self.fragments = fragments
        self.context = context

    def identity(self) -> str:
        """A sampled fingerprint of the transformers' weights (a LoRA merged into them changes it), with the
        layers read and the emphasis mode."""
        settings = [(type(self).__name__, self.emphasis)]
        settings += [(type(tower).__name__, tower.layer, tower.final_norm) for tower in self.towers]
        return weights_fingerprint(*(tower.model for tower in self.towers), settings=settings)

    # --- layout ---

    def line_layout(self, line: str) -> PlacedLine:
        """Where each token of `line` (a WebUI prompt line: emphasis allowed, no AND/scheduling) sits."""
        chunks, _ = self.engine.tokenize_line(line)
        return layout_line(
            self.fragments(line),
            chunks,
            lambda text: clip_tokens(self.engine.tokenize, text),
            leading=1,
            filler_ids={self.engine.id_end, self.engine.id_pad},
            embedding_tokens=self._embedding_tokens,
        )

    def _embedding_tokens(self, embedding, count: int) -> tuple[int, list[int]]:
        used = len(self.engine.tokenize([embedding.name])[0])
        return used, [self.inversion.embedding_id(embedding, k) for k in range(count)]

    def layout(self, text: str) -> PromptLayout:
        """Plain text (no emphasis syntax) laid out as the host would lay it out."""
        return self.line_layout(text if self.emphasis == "None" else escape(text)).layout

    # --- emphasis ---

    def row_scale(self, encoding: torch.Tensor, line: PlacedLine) -> torch.Tensor:
        """Each row's emphasis factor `(rows, width)`: its token's multiplier times its chunk's rescale.

        The rescale ("Original" mode) is one number per chunk and encoder, over the whole batch the host
        encoded at once (other prompts included); the BOS row depends on nothing but the model in a causal
        encoder, so comparing it with the empty prompt's BOS row recovers it."""
        scale = emphasis_scale(line, self.emphasis, encoding)
        if self.emphasis != "Original":
            return scale
        rows = encoding.shape[0]
        bos_empty = self.empty().rows[0].to(encoding.device)
        chunk_rows = line.layout.format.rows
        for chunk in range(rows // chunk_rows):
            bos = encoding[chunk * chunk_rows].float()
            for columns in _tower_columns(self.towers):
                reference = bos_empty[columns]
                norm = torch.dot(reference, reference)
                factor = torch.dot(bos[columns], reference) / norm if norm > 0 else 1.0
                scale[chunk * chunk_rows : (chunk + 1) * chunk_rows, columns] *= factor
        return scale


def _tower_columns(towers: Sequence[Tower]) -> Iterator[slice]:
    first = 0
    for tower in towers:
        yield slice(first, first + tower.width)
        first += tower.width
