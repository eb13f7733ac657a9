"""Several encoders, one decision: a prompt whose conditioning joins the rows of more than one text encoder.

SD 3.5 conditions on CLIP-L/G rows followed by T5 rows; each encoder sees the prompt its own way, leaks its own
way and is calibrated on its own. The rule: every encoder that has rows for an item scores it, and the item is
patched in every part where it has rows when any encoder flags it (or a marker asks for it). Each part's report
keeps its own encoder's scores, and says which encoder flagged an item it patched on another's word.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from flowcore.encoders.layout import PromptLayout
from flowcore.patching.options import FlowOptions
from flowcore.patching.patcher import FlowPatcher
from flowcore.patching.report import FlowResult


@dataclass
class Part:
    """One encoder's rows of the conditioning: its name ("CLIP", "T5"), its patcher, its rows `(rows, dim)` and
    where the prompt's tokens sit in them."""

    name: str
    patcher: FlowPatcher
    encoding: torch.Tensor
    layout: PromptLayout


def patch_jointly(parts: Sequence[Part], prompt: str, options: FlowOptions | None = None) -> list[FlowResult]:
    """Patch every part of one prompt's conditioning with one decision per item (see the module docstring).

    1. Each part is patched on its own encoder's scores (and the markers).
    2. An item patched in one part is patched in the others too, by its span in the marker-free text; parts that
       patched all of them already are not run again (every encoding is cached, so a second run costs lookups).
    Returns one `FlowResult` per part, in order.
    """
    results = [part.patcher.patch(part.encoding, prompt, layout=part.layout, options=options) for part in parts]
    if len(parts) < 2:
        return results
    flagged: dict[tuple[int, int], str] = {}
    for part, result in zip(parts, results):
        for entry in result.report.items:
            if entry.patched:
                flagged.setdefault((entry.item.start, entry.item.end), f"flagged by {part.name}: {entry.reason}")
    for index, (part, result) in enumerate(zip(parts, results)):
        done = {(entry.item.start, entry.item.end) for entry in result.report.items if entry.patched}
        if set(flagged) - done:
            results[index] = part.patcher.patch(
                part.encoding, prompt, layout=part.layout, options=options, force=flagged
            )
    return results
