"""The encoder protocol: what flowcore needs from a text encoder, whatever model or UI sits behind it.

Shapes: an encoding is `(rows, dim)` with `layout.format.rows` rows per chunk (see `flowcore.encoders.layout`); an
isolated item is `(tokens, dim)`, the rows of the item's own tokens when they are encoded alone.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import torch

from flowcore.encoders.layout import PromptLayout


@dataclass
class Encoding:
    """A prompt's encoding: `rows` of shape `(rows, dim)`, and the pooled vector where the model has one."""

    rows: torch.Tensor
    pooled: torch.Tensor | None = None


@dataclass(frozen=True)
class ItemRequest:
    """An item to encode alone: its text as the prompt spells it, its token ids in the prompt, and the
    position of its first token within its chunk (1, right after the start token, as when the text is
    the whole prompt; or the position it has in the prompt, so that only the missing context differs).

    `text` covers the item's tokens exactly, so a byte-level BPE's leading space (`" bats"`) is part of it.
    Encoders with their own tokenizer encode `token_ids`; encoders that only take text (the WebUI's) encode
    `text` and report the ids they got, which the patcher checks."""

    text: str
    token_ids: tuple[int, ...]
    start: int = 1


@dataclass
class IsolatedItem:
    """An item's tokens encoded on their own.

    `token_ids` are the tokens that were encoded (no start/end token), `rows` their output vectors
    `(tokens, dim)`. `layers` holds, per transformer tower, the hidden states at every layer
    `(layers + 1, tokens, hidden)`: encoders that can re-run a prompt with these states swapped in use them to
    re-derive the end-token/padding rows.
    """

    text: str
    token_ids: list[int]
    rows: torch.Tensor
    layers: tuple[torch.Tensor, ...] = field(default=())


@runtime_checkable
class TextEncoder(Protocol):
    """What `FlowPatcher` calls. Adapters: `ClipEncoder`, `SdxlEncoder`, `GenericEncoder`; each host's glue
    implements the same protocol on top of the host's own encoder."""

    causal: bool  # True when a token sees only the tokens before it (CLIP, LLMs); False for T5 or BERT
    supports_positions: bool  # whether `encode_isolated` can place an item at the positions it has in the prompt

    def layout(self, text: str) -> PromptLayout:
        """Tokenize `text` and place its tokens in the encoder's chunks."""
        ...

    def encode(self, layout: PromptLayout) -> Encoding:
        """Encode a laid-out prompt, chunk by chunk: `(layout.n_rows, dim)`."""
        ...

    def encode_isolated(self, requests: Sequence[ItemRequest]) -> list[IsolatedItem]:
        """Encode each item on its own (the paper's uncontextualized item encoding), its first token at
        `request.start` where `supports_positions` (else right after the start token)."""
        ...

    def empty(self) -> Encoding:
        """The clean-pad baseline: the empty prompt padded to one chunk, through the same layer."""
        ...

    def rederive(self, layout: PromptLayout, replaced: Sequence[tuple[list[int], IsolatedItem]]) -> Encoding:
        """Re-encode `layout` with the hidden states at the given rows replaced, at every layer, by the
        isolated item's, so that later rows (end token, padding) see the items without their leak.

        Raises NotImplementedError where the encoder cannot do this (the patcher then leaves those rows).
        """
        ...

    def identity(self) -> str:
        """A short key that changes when the encoder's weights or settings change: calibrations are cached
        on disk under it. Must be cheap (it is asked for on every new patcher)."""
        ...


def weights_fingerprint(*modules: torch.nn.Module, settings: object = ()) -> str:
    """A cheap key for modules' weights: their class, every parameter's name, shape and dtype, and a strided
    sample of 64 values from each parameter (a few thousand numbers in all), plus `settings` (clip skip, ...).

    A LoRA merged into the weights, another checkpoint or a changed dtype changes it. The samples are
    gathered on the weights' device and copied once, so it costs about a millisecond, on a GPU too."""
    digest = hashlib.sha256(repr(settings).encode())
    samples = []
    for module in modules:
        digest.update(type(module).__name__.encode())
        for name, parameter in module.named_parameters():
            flat = parameter.detach().reshape(-1)
            samples.append(flat[:: max(1, flat.numel() // 64)][:64].float())
            digest.update(f"{name}{tuple(parameter.shape)}{parameter.dtype}".encode())
    if samples:
        digest.update(torch.cat(samples).cpu().numpy().tobytes())
    return digest.hexdigest()[:16]
