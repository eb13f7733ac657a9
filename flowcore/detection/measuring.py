"""Measuring an encoder on the calibration prompts: their token rows and their items' vectors, in context and
alone, as `calibration.fit` takes them.

The prompts come laid out and segmented (`FlowPatcher.calibrate` reads them as it reads any prompt); this
module encodes them a batch at a time and turns each usable item into an `ItemSample`.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence

import torch

from flowcore.detection.calibration import ItemSample
from flowcore.detection.leakage import item_vector
from flowcore.encoders.base import IsolatedItem, ItemRequest, TextEncoder
from flowcore.encoders.layout import PromptLayout
from flowcore.encoders.placement import PlacedItem, candidates, chunk_requests, scoring_request

LaidOut = tuple[PromptLayout, list[PlacedItem]]  # a calibration prompt's layout and its placed items
EncodeAlone = Callable[[list[ItemRequest]], list[IsolatedItem]]  # requests -> their encodings alone (cached)


def encode_prompts(
    encoder: TextEncoder, prompts: Sequence[LaidOut], encode_alone: EncodeAlone
) -> list[tuple[torch.Tensor, list[IsolatedItem]]]:
    """Per laid-out calibration prompt: its token rows `(tokens, dim)`, in the order of `layout.token_rows()`,
    and each of its items alone at its own positions.

    In a causal encoder a chunk's token rows depend only on the start token and the tokens themselves, as an
    item's do: each chunk is encoded as one more item alone (`chunk_requests`), so its end token and padding
    are never computed and the prompts of a batch share forward calls. A bidirectional encoder encodes each
    prompt whole, its items alone in one call (`encode_alone`), as `FlowPatcher.run` does."""
    can_position = bool(getattr(encoder, "supports_positions", False))
    items = [[scoring_request(entry, can_position) for entry in placed] for _, placed in prompts]
    if not encoder.causal:
        return [
            (encoder.encode(layout).rows[[row for row, _ in layout.token_rows()]], encode_alone(requests))
            for (layout, _), requests in zip(prompts, items)
        ]
    chunks = [chunk_requests(layout) for layout, _ in prompts]
    encoded = iter(encoder.encode_isolated([*itertools.chain(*chunks), *itertools.chain(*items)]))
    token_rows = [torch.cat([next(encoded).rows for _ in requests]) for requests in chunks]
    return [(rows, [next(encoded) for _ in requests]) for rows, requests in zip(token_rows, items)]


def item_samples(
    number: int,
    prompt: LaidOut,
    rows: torch.Tensor,
    alone: list[IsolatedItem],
    first: int,
    causal: bool,
) -> list[ItemSample]:
    """Calibration prompt `number`'s items as samples, the first of them sample `first`: each item's vector in
    the prompt (from its token `rows`, see `encode_prompts`) and alone at its own positions, and the samples
    that could have pulled it. Items whose tokens alone differ from the prompt's are left out."""
    layout, placed = prompt
    order = {row: index for index, (row, _) in enumerate(layout.token_rows())}  # layout row -> index in `rows`
    usable = [
        index
        for index, (entry, item) in enumerate(zip(placed, alone))
        if list(item.token_ids) == list(entry.request.token_ids)
    ]
    samples = []
    for index in usable:
        entry = placed[index]
        sources = candidates(index, placed, layout, causal)
        samples.append(
            ItemSample(
                item_vector(rows[[order[row] for row in entry.rows]], causal).float().cpu(),
                item_vector(alone[index].rows, causal).float().cpu(),
                number,
                tuple(first + usable.index(j) for j in sources if j in usable),
                entry.item.tag,
            )
        )
    return samples
