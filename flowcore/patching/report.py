"""What the patcher found and did, per item: plain data that serializes to JSON."""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field

import torch

from flowcore.encoders.layout import PromptLayout
from flowcore.prompts.items import LexicalItem


def fixed(value: float, decimals: int = 3, signed: bool = False) -> str:
    """`value` with `decimals` decimals (and a sign where `signed`), never "-0.000": a value that rounds to
    zero prints as zero, whatever side of it float error left it on."""
    rounded = round(value, decimals) + 0.0  # -0.0 + 0.0 is 0.0
    return f"{rounded:{'+' if signed else ''}.{decimals}f}"


@dataclass
class Pull:
    """The pull of `source` on an item (`flowcore.detection.leakage`): `value` is the calibrated, hubness-corrected
    score; `similarity` the calibrated cosine between the item in context and the source alone;
    `relatedness` the same between the item alone and the source alone."""

    source: LexicalItem
    value: float
    similarity: float
    relatedness: float


@dataclass
class ItemReport:
    """One item: where it sits, how leaked it looks, and what was done to it.

    - `rows`: its rows in the encoding; `representative_rows`: the rows that carry its meaning.
    - `leak_score`: the largest pull of another item on it (`flowcore.detection.leakage`), None when nothing could
      have pulled it or it was not scored; `source`: that item.
    - `share_of_unrelated`: the share of the encoder's calibration items (unrelated to each other) that score
      at least as high: 0.03 means only 3% of unrelated items look this pulled.
    - `pulls`: the pull of every item that could have influenced it, strongest first.
    - `presence`: how much of its own meaning the prompt's encoding still carries (1 = intact).
    - `patched`: whether its rows were replaced by its isolated encoding; `reason`: why or why not.
    - `removed_rows`: rows replaced by the clean-pad baseline by redundant-token removal.
    """

    item: LexicalItem
    rows: list[int]
    leak_score: float | None = None
    source: LexicalItem | None = None
    share_of_unrelated: float | None = None
    pulls: list[Pull] = field(default_factory=list)
    presence: float | None = None
    patched: bool = False
    reason: str = ""
    representative_rows: list[int] = field(default_factory=list)
    removed_rows: list[int] = field(default_factory=list)


@dataclass
class FlowReport:
    """The whole prompt: the marker-free text, the threshold used (and the share of unrelated items that
    reach it, `patch_share`), the threshold of items that are tags of a tag list (`tag_threshold`, measured on
    unrelated tags; None where the prompt has none), every item, and any warnings."""

    prompt: str
    text: str
    threshold: float
    patch_share: float = 0.0
    items: list[ItemReport] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    options: dict = field(default_factory=dict)
    tag_threshold: float | None = None

    def threshold_for(self, item: LexicalItem) -> float:
        """The threshold `item`'s leak score is compared with: `tag_threshold` for a tag of a tag list."""
        return self.tag_threshold if item.tag and self.tag_threshold is not None else self.threshold

    @property
    def patched_items(self) -> list[LexicalItem]:
        return [report.item for report in self.items if report.patched]

    def to_dict(self) -> dict:
        data = asdict(self)
        for name in ("threshold", "tag_threshold"):
            if data[name] is not None and abs(data[name]) == float("inf"):
                data[name] = None  # JSON has no infinity: sensitivity 0 patches nothing, 1 everything
        return data

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent, ensure_ascii=False)

    def describe_threshold(self) -> str:
        """The threshold for people: its value and the share of unrelated items that reach it."""
        if self.options.get("mode") == "every":
            spared = "^kept^ items" if self.options.get("patch_style_tags") else "^kept^ items and quality/style tags"
            return f"none (every-item mode: every item is patched but {spared})"
        if self.threshold == float("inf"):
            return "none (automatic detection off)" if self.patch_share == 0 else "none needed (no item was scored)"
        if self.threshold == float("-inf"):
            return "none: every item another item could have pulled is patched (sensitivity 1)"
        described = f"{self.threshold:.4f} (the top {self.patch_share:.1%} of unrelated items' scores reach it)"
        if self.tag_threshold is not None and math.isfinite(self.tag_threshold):
            described += f"; {self.tag_threshold:.4f} for tags of a tag list (measured on unrelated tags)"
        return described

    def summary(self) -> str:
        """One line per item, for logs and the WebUI's note under the image."""
        lines = []
        for report in self.items:
            source = f" <- {report.source.text!r}" if report.source else ""
            action = "patched" if report.patched else "kept"
            score = f"leak {report.leak_score:+.3f}" if report.leak_score is not None else "not scored"
            lines.append(f"{report.item.text!r}: {score}{source}, {action} ({report.reason})")
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
