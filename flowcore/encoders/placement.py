"""Where a lexical item sits in an encoding, and what to encode it alone with.

An item found in the prompt's text covers some of the layout's rows. `place` turns it into a `PlacedItem`: its
rows and two requests to encode its tokens alone, at the positions they have in the prompt (to score it) and
right after the start token (to patch it with, as the paper does). The rest says which items could have
influenced an item (`candidates`) and why an item cannot be placed or patched one to one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from flowcore.encoders.base import IsolatedItem, ItemRequest
from flowcore.encoders.layout import PromptLayout
from flowcore.prompts.items import LexicalItem


@dataclass
class PlacedItem:
    """An item with rows in the encoding, and its tokens as requests to encode them alone: at the item's own
    position (to score it) and right after the start token (to patch it with, as the paper does)."""

    item: LexicalItem
    rows: list[int]
    request: ItemRequest
    patch_request: ItemRequest


def item_request(layout: PromptLayout, rows: list[int], start: int | None = None) -> ItemRequest:
    """The item on those rows as a request to encode it alone: the prompt's own token ids and the text they
    cover, first token at `start` (default: the position it has in the prompt)."""
    wanted = set(rows)
    tokens = [token for row, token in layout.token_rows() if row in wanted]
    text = layout.text[tokens[0].start : tokens[-1].end]
    return ItemRequest(text, tuple(t.id for t in tokens), layout.position(rows[0]) if start is None else start)


def chunk_requests(layout: PromptLayout) -> list[ItemRequest]:
    """Each chunk's tokens as one request to encode them alone at their own positions (chunks with tokens only)."""
    rows_by_chunk: dict[int, list[int]] = {}
    for row, _ in layout.token_rows():
        rows_by_chunk.setdefault(layout.chunk_of(row), []).append(row)
    return [item_request(layout, rows) for rows in rows_by_chunk.values()]


def place(item: LexicalItem, rows: list[int], layout: PromptLayout) -> PlacedItem:
    """`item` on `rows` of `layout`, with its two requests (see `PlacedItem`)."""
    return PlacedItem(item, rows, item_request(layout, rows), item_request(layout, rows, layout.leading))


def placement_problem(rows: list[int], layout: PromptLayout) -> str:
    """Why an item on `rows` cannot be scored or patched ("" where it can)."""
    if not rows:
        return "no tokens in the encoding (truncated or empty)"
    if layout.chunk_of(rows[0]) != layout.chunk_of(rows[-1]):
        return "split across two chunks; each chunk is encoded separately"
    return ""


def place_all(items: Sequence[LexicalItem], layout: PromptLayout) -> list[PlacedItem]:
    """The items that can be placed on `layout`, placed (the others are left out)."""
    placed = []
    for item in items:
        rows = layout.item_rows(item.start, item.end)
        if not placement_problem(rows, layout):
            placed.append(place(item, rows, layout))
    return placed


def scoring_request(entry: PlacedItem, can_position: bool) -> ItemRequest:
    """The item alone at its own positions, where the encoder can place it (else right after the start)."""
    return entry.request if can_position else entry.patch_request


def candidates(index: int, placed: Sequence[PlacedItem], layout: PromptLayout, causal: bool) -> list[int]:
    """Items that could have influenced item `index`: same chunk, and before it in a causal encoder."""
    rows = placed[index].rows
    found = []
    for other, entry in enumerate(placed):
        if other == index or layout.chunk_of(entry.rows[0]) != layout.chunk_of(rows[0]):
            continue
        if causal and entry.rows[-1] >= rows[0]:
            continue
        found.append(other)
    return found


def mismatch(request: ItemRequest, alone: IsolatedItem) -> str:
    """Why an item cannot be patched one to one: its tokens alone differ from those in the prompt."""
    return (
        f"encoded alone, {request.text!r} gives tokens {list(alone.token_ids)} but the prompt has "
        f"{list(request.token_ids)}; cannot patch one to one"
    )
