"""What the patcher found and did, per item: plain data that serializes to JSON."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

import torch

from flowcore.items import LexicalItem
from flowcore.layout import PromptLayout


@dataclass
class Pull:
    """The pull of `source` on an item: `shift` (how much closer to the source's own meaning the context
    brought it) times `relatedness` (how close the two are in isolation); see `flowcore.analysis`."""

    source: LexicalItem
    value: float
    shift: float
    relatedness: float


@dataclass
class ItemReport:
    """One item: where it sits, how leaked it looks, and what was done to it.

    - `rows`: its rows in the encoding; `representative_rows`: the rows that carry its meaning.
    - `leak_score`: the largest pull of another item on it (`flowcore.analysis`); `source`: that item.
    - `pulls`: the pull of every item that could have influenced it, strongest first.
    - `presence`: how much of its own meaning the prompt's encoding still carries (1 = intact).
    - `patched`: whether its rows were replaced by its isolated encoding; `reason`: why or why not.
    - `removed_rows`: rows replaced by the clean-pad baseline by redundant-token removal.
    """

    item: LexicalItem
    rows: list[int]
    leak_score: float = 0.0
    source: LexicalItem | None = None
    pulls: list[Pull] = field(default_factory=list)
    presence: float | None = None
    patched: bool = False
    reason: str = ""
    representative_rows: list[int] = field(default_factory=list)
    removed_rows: list[int] = field(default_factory=list)


@dataclass
class FlowReport:
    """The whole prompt: the marker-free text, the threshold used, every item, and any warnings."""

    prompt: str
    text: str
    threshold: float
    items: list[ItemReport] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    options: dict = field(default_factory=dict)

    @property
    def patched_items(self) -> list[LexicalItem]:
        return [report.item for report in self.items if report.patched]

    def to_dict(self) -> dict:
        data = asdict(self)
        if data["threshold"] == float("inf"):
            data["threshold"] = None  # JSON has no infinity: sensitivity 0 patches nothing
        return data

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent, ensure_ascii=False)

    def summary(self) -> str:
        """One line per item, for logs and the WebUI's note under the image."""
        lines = []
        for report in self.items:
            source = f" <- {report.source.text!r}" if report.source else ""
            action = "patched" if report.patched else "kept"
            lines.append(f"{report.item.text!r}: leak {report.leak_score:+.3f}{source}, {action} ({report.reason})")
        return "\n".join(lines) if lines else "no items found"


@dataclass
class FlowResult:
    """The original and patched encodings `(77 * chunks, dim)` (same dtype and device), the pooled vectors
    where the model has them (`(pooled_dim,)`, SDXL), the token layout and the report."""

    original: torch.Tensor
    patched: torch.Tensor
    report: FlowReport
    layout: PromptLayout
    pooled_original: torch.Tensor | None = None
    pooled_patched: torch.Tensor | None = None
