"""The base classes of a host's CLIP part and T5 part: a host's text encoder as a `flowcore` `TextEncoder`.

A host's conditioning rows are one or more parts side by side or one after the other (SDXL: CLIP-L and CLIP-G;
SD 3.5: CLIP, then T5). Every host's part lays a prompt out from the host's own tokenizer and encodes through
the host's own models; what is the same for every host is here:

- `HostPart`: every encode inside the host's context (autocast, the host loading its models and a LoRA's
  patches); the empty prompt computed once; the end-token and padding rows left as encoded (the hosts'
  encoders cannot re-run a prompt with hidden states swapped in).
- `HostClipPart`: the host's CLIP transformers driven as `flowcore.encoders.clip.Tower`s (items alone packed
  at any positions, one forward call per transformer).
- `HostT5Part`: T5 is bidirectional with relative positions, so an item alone is the item's tokens encoded as
  a whole prompt (its end token and the host's padding), whatever its place; items of one length go in one
  batched call of the host's own T5.

A host's subclass gives the layout (`layout`, `line_layout`) and the calls into the host's models.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence

import torch

from flowcore.encoders.base import Encoding, IsolatedItem, ItemRequest
from flowcore.encoders.clip import TowerEncoder
from flowcore.encoders.layout import PromptLayout


class HostPart:
    """What every host's part shares (see the module docstring). Subclasses give `name`, `layout`, `encode`
    and `rederive_note` (why the end-token and padding rows stay as encoded)."""

    name: str
    rederive_note: str
    _empty: Encoding | None = None

    def context(self) -> contextlib.AbstractContextManager:
        """What every encode runs inside; nothing by default."""
        return contextlib.nullcontext()

    def empty(self) -> Encoding:
        """The clean-pad baseline: the empty prompt laid out and encoded as the host does (computed once)."""
        if self._empty is None:
            self._empty = self.encode(self.layout(""))
        return self._empty

    def rederive(self, layout: PromptLayout, replaced: Sequence[tuple[list[int], IsolatedItem]]) -> Encoding:
        raise NotImplementedError(self.rederive_note)


class HostClipPart(HostPart, TowerEncoder):
    """A host's CLIP encoder(s) over `towers` (the host's transformers, in the order of the rows' columns)."""

    name = "CLIP"

    @property
    def width(self) -> int:
        """The width of this part's rows (SDXL: CLIP-L's plus CLIP-G's)."""
        return sum(tower.width for tower in self.towers)

    def encode_many(
        self, layout: PromptLayout | None, requests: Sequence[ItemRequest] = (), replaced: Sequence = ()
    ) -> tuple[Encoding | None, list[IsolatedItem]]:
        """`TowerEncoder.encode_many` (a prompt's chunks and items alone in one pass), inside the host's context."""
        with self.context():
            return super().encode_many(layout, requests, replaced)


class HostT5Part(HostPart):
    """A host's T5 encoder. Subclasses give `end_id` and `pad_id`, `alone_positions` (how the host pads a prompt
    of so many tokens) and `encode_sequences` (the host's own T5 call), and `token` where a token id stands for
    something else (an embedding's vector)."""

    name = "T5"
    causal = False
    supports_positions = False
    rederive_note = "T5 is bidirectional: its end-token and padding rows are left as encoded"
    end_id: int
    pad_id: int

    def alone_positions(self, count: int) -> tuple[int, list[int]]:
        """A prompt of `count` tokens as the host pads it: its length, and the tokens' rows in it."""
        raise NotImplementedError

    def encode_sequences(self, sequences: Sequence[list]) -> torch.Tensor:
        """`(batch, rows, dim)` for `sequences` of one length, through the host's own T5 call."""
        raise NotImplementedError

    def token(self, token_id: int) -> object:
        """What the host's T5 call takes for `token_id`: the id itself unless a subclass says otherwise."""
        return token_id

    def sequence(self, ids: Sequence[int], length: int) -> list:
        """A prompt of token `ids` as the host's T5 takes it: the tokens, the end token, padding up to `length`."""
        tokens = [self.token(int(i)) for i in ids] + [self.end_id]
        return tokens + [self.pad_id] * (length - len(tokens))

    def run(self, sequences: Sequence[list]) -> torch.Tensor:
        """`(batch, rows, dim)` in float32, inside the host's context and without gradients."""
        with self.context(), torch.no_grad():
            return self.encode_sequences(sequences).float()

    def encode(self, layout: PromptLayout) -> Encoding:
        rows = layout.format.rows
        encoded = self.run([self.sequence([token.id for token in chunk], rows) for chunk in layout.chunks])
        return Encoding(encoded.reshape(-1, encoded.shape[-1]))  # (chunks * rows, dim)

    def encode_isolated(self, requests: Sequence[ItemRequest]) -> list[IsolatedItem]:
        """Each item as the host encodes its tokens as a whole prompt, padded as it pads that prompt (T5 attends
        the padding). One batched call per length."""
        lengths = [self.alone_positions(len(request.token_ids))[0] for request in requests]
        rows: list[torch.Tensor | None] = [None] * len(requests)
        for length in sorted(set(lengths)):
            group = [index for index, n in enumerate(lengths) if n == length]
            encoded = self.run([self.sequence(requests[index].token_ids, length) for index in group])
            for position, index in enumerate(group):
                rows[index] = encoded[position, : len(requests[index].token_ids)]
        return [IsolatedItem(r.text, list(r.token_ids), r_rows) for r, r_rows in zip(requests, rows)]
