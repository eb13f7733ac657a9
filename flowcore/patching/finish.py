"""The last, optional step of a patch: redundant-token removal, then the end-token and padding rows.

Both act on an encoding whose items are patched already. Redundant removal (the paper's second intervention)
replaces every item token but its representative ones with the clean-pad baseline. The end-token and padding
rows ("tail") summarise the whole prompt; re-deriving them (`tail="rederive"`) re-runs the encoder with the
patched items' rows, where the encoder can.
"""

from __future__ import annotations

import torch

from flowcore.encoders.base import IsolatedItem, TextEncoder
from flowcore.encoders.layout import PromptLayout
from flowcore.patching import interventions
from flowcore.patching.report import FlowReport
from flowcore.prompts.items import KEEP


def remove_redundant(patched: torch.Tensor, report: FlowReport, baseline: torch.Tensor) -> torch.Tensor:
    """Every reported item's non-representative rows replaced by `baseline`'s (items marked ^keep^ stay);
    each item's report records the rows it lost (`removed_rows`)."""
    for entry in report.items:
        if not entry.rows or not entry.representative_rows or entry.item.marker == KEEP:
            continue
        entry.removed_rows = [r for r in entry.rows if r not in entry.representative_rows]
        patched = interventions.remove_redundant(patched, entry.rows, entry.representative_rows, baseline)
    return patched


def rederive_tail(
    encoder: TextEncoder,
    patched: torch.Tensor,
    pooled: torch.Tensor | None,
    layout: PromptLayout,
    patched_items: list[tuple[list[int], IsolatedItem]],
    report: FlowReport,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The end-token and padding rows of every chunk with a patched item, and the pooled vector where the first
    chunk has one, re-derived by `encoder` from the patched rows; left as encoded, with a warning in `report`,
    where the encoder cannot."""
    try:
        rederived = encoder.rederive(layout, patched_items)
    except NotImplementedError as error:
        report.warnings.append(f"End-token/padding rows left as encoded: {error}")
        return patched, pooled
    chunks = sorted({layout.chunk_of(rows[0]) for rows, _ in patched_items})
    tail = [row for chunk in chunks for row in layout.tail_rows(chunk)]
    patched = interventions.patch_rows(patched, tail, rederived.rows[tail])
    if 0 in chunks and rederived.pooled is not None and pooled is not None:
        pooled = rederived.pooled.to(device=pooled.device, dtype=pooled.dtype)
    return patched, pooled
