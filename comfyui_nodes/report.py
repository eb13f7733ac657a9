"""The node's report, as text and as a picture: one line (one bar) per item, what was done and why."""

from __future__ import annotations

import math

import torch

from flowcore.patching.report import FlowReport

from .conditioning import Outcome

PATCHED = (230, 120, 30)
KEPT = (120, 130, 145)
THRESHOLD = (200, 40, 40)
INK = (30, 30, 30)
PAPER = (250, 250, 247)


def text(outcome: Outcome, heading: str) -> str:
    """Every part's report, one line per item, with the notes and problems."""
    lines = [heading]
    if outcome.problems:
        lines += [f"Problem: {problem}" for problem in outcome.problems]
        lines.append("The conditioning is CLIPTextEncode's, unpatched.")
    elif outcome.reports:
        lines.append("Patched: " + (", ".join(repr(item) for item in outcome.patched) or "nothing"))
    for name, report in outcome.reports:
        lines.append(f"{name}: threshold {report.describe_threshold()}")
        lines += [f"  {line}" for line in report.summary().splitlines()]
        lines += [f"  warning: {warning}" for warning in report.warnings]
    lines += [f"Note: {note}" for note in outcome.notes]
    return "\n".join(lines)


def _font(size: int):
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1 has one bitmap size
        return ImageFont.load_default()


def image(outcome: Outcome, heading: str, width: int = 768) -> torch.Tensor:
    """The report as an IMAGE `(1, height, width, 3)` in 0..1: per item of the first part that scored it, a
    bar of its leak score (orange: patched, grey: kept) against its threshold (red tick; tags of a tag list have
    their own), and the reason."""
    from PIL import Image, ImageDraw

    font, small = _font(16), _font(13)
    report = _main_report(outcome)
    items = report.items if report is not None else []
    line = 26
    height = 20 + line * (2 + max(1, len(items))) + (line if outcome.problems else 0)
    picture = Image.new("RGB", (width, height), PAPER)
    draw = ImageDraw.Draw(picture)
    draw.text((12, 10), heading, fill=INK, font=font)
    y = 10 + line
    if outcome.problems:
        draw.text((12, y), outcome.problems[0][:110], fill=THRESHOLD, font=small)
        y += line
    if not items:
        draw.text((12, y), "; ".join(outcome.notes)[:110] or "no items found", fill=INK, font=small)
    scores = [entry.leak_score for entry in items if entry.leak_score is not None]
    thresholds = [report.threshold_for(entry.item) for entry in items]
    low = min([0.0, *scores, *(value for value in thresholds if math.isfinite(value))])
    high = max([0.0, *scores, *(value for value in thresholds if math.isfinite(value))])
    span = (high - low) or 1.0
    left, right = 250, width - 260  # bar area
    scale = lambda value: left + (value - low) / span * (right - left)  # noqa: E731
    for entry, threshold in zip(items, thresholds):
        colour = PATCHED if entry.patched else KEPT
        draw.text((12, y + 4), entry.item.text[:30], fill=INK, font=font)
        if entry.leak_score is not None:
            zero, end = scale(0.0), scale(entry.leak_score)
            draw.rectangle([min(zero, end), y + 6, max(zero, end) + 1, y + line - 6], fill=colour)
        else:
            draw.rectangle([left, y + line // 2 - 1, left + 12, y + line // 2 + 1], fill=colour)
        if math.isfinite(threshold):
            draw.line([scale(threshold), y + 2, scale(threshold), y + line - 2], fill=THRESHOLD, width=2)
        action = "patched" if entry.patched else "kept"
        draw.text((right + 14, y + 6), f"{action}: {entry.reason}"[:40], fill=colour, font=small)
        y += line
    if any(math.isfinite(value) for value in thresholds):
        draw.text((left, y + 2), "red tick: threshold", fill=THRESHOLD, font=small)
    pixels = torch.tensor(list(picture.getdata()), dtype=torch.float32).reshape(height, width, 3) / 255.0
    return pixels[None]


def _main_report(outcome: Outcome) -> FlowReport | None:
    """The report the picture shows: the first part's (CLIP where the model has it)."""
    return outcome.reports[0][1] if outcome.reports else None
