"""The encoder protocol: what flowcore needs from a text encoder, whatever model or UI sits behind it.

Shapes: an encoding is `(rows, dim)` with 77 rows per chunk (see `flowcore.layout`); an isolated item is
`(tokens, dim)`, the rows of the item's own tokens when the item text is encoded alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import torch

from flowcore.layout import PromptLayout


@dataclass
class Encoding:
    """A prompt's encoding: `rows` of shape `(77 * chunks, dim)`, and the pooled vector where the model has one."""

    rows: torch.Tensor
    pooled: torch.Tensor | None = None


@dataclass
class IsolatedItem:
    """An item's text encoded on its own.

    `token_ids` are the item's tokens (no BOS/EOS), `rows` their output vectors `(tokens, dim)`. `layers`
    holds, per transformer tower, the hidden states at every layer `(layers + 1, tokens, hidden)`: encoders
    that can re-run a prompt with these states swapped in use them to re-derive the EOS/padding rows.
    """

    text: str
    token_ids: list[int]
    rows: torch.Tensor
    layers: tuple[torch.Tensor, ...] = field(default=())


@runtime_checkable
class TextEncoder(Protocol):
    """What `FlowPatcher` calls. Adapters: `ClipEncoder`, `SdxlEncoder`, `GenericEncoder`; the WebUI glue
    implements the same protocol on top of the WebUI's own encoder."""

    causal: bool  # True when a token sees only the tokens before it (CLIP); False for T5 or BERT
    supports_positions: bool  # whether `encode_isolated` can place an item at the positions it has in the prompt

    def layout(self, text: str) -> PromptLayout:
        """Tokenize `text` and place its tokens in 77-row chunks."""
        ...

    def encode(self, layout: PromptLayout) -> Encoding:
        """Encode a laid-out prompt, chunk by chunk: `(77 * chunks, dim)`."""
        ...

    def encode_isolated(self, texts: Sequence[str], starts: Sequence[int] | None = None) -> list[IsolatedItem]:
        """Encode each text on its own (the paper's uncontextualized item encoding).

        By default the tokens sit right after the start token, as when the text is the whole prompt.
        `starts` (where `supports_positions`) gives each text's first token position instead: the position
        it has within its chunk of the prompt, so that only the missing context differs.
        """
        ...

    def empty(self) -> Encoding:
        """The clean-pad baseline: the empty prompt padded to one 77-row chunk, through the same layer."""
        ...

    def rederive(self, layout: PromptLayout, replaced: Sequence[tuple[list[int], IsolatedItem]]) -> Encoding:
        """Re-encode `layout` with the hidden states at the given rows replaced, at every layer, by the
        isolated item's, so that later rows (EOS, padding) see the items without their leak.

        Raises NotImplementedError where the encoder cannot do this (the patcher then leaves those rows).
        """
        ...
