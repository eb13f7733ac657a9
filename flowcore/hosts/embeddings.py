"""Embedding vectors (A1111's and Forge's textual inversion, ComfyUI's `embedding:name`) as negative token ids.

A host puts an embedding's vectors in a prompt's rows where the text names it. The adapters give each such
row a negative token id, so that a layout's tokens (and the core's cache keys made of them) say which vector
each row takes, and the towers that encode items alone turn the ids back into the vectors.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable

import torch


class EmbeddingTable:
    """Negative token ids for embedding vectors: id -(k + 1) is entry k. An entry is whatever the adapter needs
    to find the vector again (an embedding object and a vector index, or the vectors themselves); the same key
    always gets the same id."""

    def __init__(self) -> None:
        self.entries: list = []
        self._ids: dict[Hashable, int] = {}

    def id_of(self, key: Hashable, entry: object) -> int:
        """The id of the vector `key` names; `entry` is stored the first time the key is met."""
        if key not in self._ids:
            self.entries.append(entry)
            self._ids[key] = -len(self.entries)
        return self._ids[key]

    def entry(self, token_id: int) -> object:
        """The entry behind a negative id."""
        return self.entries[-token_id - 1]


def with_vectors(
    embedded: torch.Tensor, input_ids: torch.Tensor, vector_of: Callable[[int], torch.Tensor]
) -> torch.Tensor:
    """Token embeddings `(1, seq, hidden)` of `input_ids` `(1, seq)` (looked up with negative ids clamped to 0),
    with `vector_of(id)` at the negative ids. Returns `embedded` itself where there is none, else a copy."""
    negative = (input_ids[0] < 0).nonzero().flatten().tolist()
    if not negative:
        return embedded
    embedded = embedded.clone()
    for position in negative:
        embedded[0, position] = vector_of(int(input_ids[0, position])).reshape(-1).to(embedded)
    return embedded
