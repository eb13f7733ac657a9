"""A self-contained HTML page for one prompt: both images, the items and their scores, a token-by-token
heatmap of how far each item's encoding moved, and the patch plan. No external assets (images are inline
PNG data URIs, styles inline); every piece of prompt text is HTML-escaped.
"""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Sequence
from typing import TYPE_CHECKING

from flowcore.patching.patcher import FlowPatcher
from flowcore.patching.report import FlowResult, ItemReport, fixed
from flowcore.studies.explore import movement, token_in_word, token_text

if TYPE_CHECKING:
    from PIL.Image import Image

STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em; color: #222; max-width: 1200px; }
h1 { font-size: 1.4em; } h2 { font-size: 1.15em; margin-top: 1.6em; }
.prompt { font-family: monospace; background: #f4f4f4; padding: .6em; border-radius: 4px; }
.images { display: flex; gap: 1em; } .images figure { margin: 0; text-align: center; }
.images img { width: 384px; max-width: 45vw; image-rendering: pixelated; border: 1px solid #ccc; }
table { border-collapse: collapse; margin: .5em 0; } th, td { border: 1px solid #ccc; padding: 3px 6px; }
th { background: #f0f0f0; text-align: left; } td.num { text-align: right; font-family: monospace; }
.heat td { font-family: monospace; font-size: .85em; text-align: center; min-width: 3em; }
.patched { color: #0a6b0a; font-weight: bold; } .kept { color: #666; }
.note { color: #666; font-size: .9em; }
.heat th small { font-weight: normal; color: #555; }
.swatch { display: inline-block; width: 10em; height: .9em; vertical-align: middle;
          background: linear-gradient(to right, rgba(220, 60, 30, 0), rgba(220, 60, 30, 1)); border: 1px solid #ccc; }
"""


def image_data_uri(image: Image) -> str:
    """A PNG data URI for an inline `<img>`."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def context_shift(result: FlowResult, patcher: FlowPatcher) -> list[list[float]]:
    """Per item, per token: how far context moved the token's vector, 1 - cos(contextual row, the same token
    encoded alone at the same positions). Items whose tokens differ when encoded alone get an empty list.

    The encodings alone are the ones `patcher.run` scored the items with, so they come from its cache."""
    shifts = []
    for entry in result.report.items:
        if not entry.rows:
            continue
        alone = patcher.isolated_at(result.layout, entry.rows)
        if alone.rows.shape[0] != len(entry.rows):
            shifts.append([])
            continue
        shifts.append([movement(result.original[row], alone.rows[k]) for k, row in enumerate(entry.rows)])
    return shifts


def patch_change(result: FlowResult) -> list[float]:
    """Per token row: how far the patch moved it, 1 - cos(original row, patched row)."""
    return [movement(result.original[row], result.patched[row]) for row, _ in result.layout.token_rows()]


def _heat_cell(value: float | None, scale: float) -> str:
    if value is None:
        return "<td></td>"
    strength = min(1.0, max(0.0, value / scale)) if scale > 0 else 0.0
    color = f"rgba(220, 60, 30, {strength:.2f})"
    return f'<td style="background:{color}" title="{fixed(value, 4)}">{fixed(value)}</td>'


def _items_table(result: FlowResult) -> str:
    rows = []
    for entry in result.report.items:
        representative = ", ".join(html.escape(token_in_word(result, r)) for r in entry.representative_rows)
        source = html.escape(entry.source.text) if entry.source else "—"
        presence = fixed(entry.presence) if entry.presence is not None else "—"
        score = fixed(entry.leak_score, 4, signed=True) if entry.leak_score is not None else "—"
        action = '<span class="patched">patched</span>' if entry.patched else '<span class="kept">kept</span>'
        rows.append(
            f"<tr><td>{html.escape(entry.item.text)}</td><td>{html.escape(str(entry.rows))}</td>"
            f'<td class="num">{score}</td><td>{source}</td><td class="num">{presence}</td>'
            f"<td>{representative}</td><td>{action}</td><td>{html.escape(entry.reason)}</td></tr>"
        )
    header = (
        "<tr><th>item</th><th>rows</th><th>leak score</th><th>pulled by</th><th>presence</th>"
        "<th>representative token</th><th>action</th><th>why</th></tr>"
    )
    return f"<table>{header}{''.join(rows) or '<tr><td colspan=8>no items found</td></tr>'}</table>"


def _heatmap(result: FlowResult, shifts: Sequence[Sequence[float]]) -> str:
    token_rows = [row for row, _ in result.layout.token_rows()]
    header = "<tr><th></th>" + "".join(f"<th>{html.escape(token_text(result, r))}</th>" for r in token_rows) + "</tr>"
    values = [v for shift in shifts for v in shift]
    change = patch_change(result)
    scale = max([*values, *change, 1e-6])
    lines = []
    entries = [entry for entry in result.report.items if entry.rows]
    for entry, shift in zip(entries, shifts):
        by_row = dict(zip(entry.rows, shift))
        cells = "".join(_heat_cell(by_row.get(row), scale) for row in token_rows)
        lines.append(f"<tr><th>{html.escape(entry.item.text)}<br><small>{_verdict(entry)}</small></th>{cells}</tr>")
    cells = "".join(_heat_cell(value, scale) for value in change)
    lines.append(f"<tr><th>patch change</th>{cells}</tr>")
    legend = (
        f'<p class="note"><span class="swatch"></span> 0 to {fixed(scale)}: colour and number are how far a token '
        "moved (1 &minus; cosine), scaled to the largest value in this table.</p>"
    )
    return f'<table class="heat">{header}{"".join(lines)}</table>{legend}'


def _verdict(entry: ItemReport) -> str:
    """What decided the item, under its name in the heatmap: its leak score, the reason where the score did not
    decide (a style tag, a marker), and the action: "leak score +0.052, a quality/style tag: kept"."""
    parts = [] if entry.leak_score is None else [f"leak score {fixed(entry.leak_score, signed=True)}"]
    if not entry.reason.startswith("leak score"):
        parts.append(entry.reason.split(":")[0])
    return html.escape(", ".join(parts) + (": patched" if entry.patched else ": kept"))


def _patch_plan(result: FlowResult) -> str:
    lines = []
    for entry in result.report.items:
        if entry.patched:
            lines.append(
                f"<li>rows {html.escape(str(entry.rows))} (<b>{html.escape(entry.item.text)}</b>) &larr; "
                f"{html.escape(entry.item.text)} encoded alone: {html.escape(entry.reason)}</li>"
            )
        if entry.removed_rows:
            lines.append(
                f"<li>rows {html.escape(str(entry.removed_rows))} of {html.escape(entry.item.text)} &larr; "
                "clean-pad baseline (redundant tokens)</li>"
            )
    if not lines:
        return "<p>Nothing patched: the patched encoding equals the original, and so do the images.</p>"
    return f"<ul>{''.join(lines)}</ul>"


def render_html(
    result: FlowResult,
    original: Image | None = None,
    patched: Image | None = None,
    shifts: Sequence[Sequence[float]] = (),
    settings: dict | None = None,
) -> str:
    """The whole report page as one string. `shifts` comes from `context_shift` (one list per item with rows); an
    `original` without `patched` is shown alone, as the image both would be."""
    report = result.report
    images = ""
    if original is not None and patched is not None:
        images = (
            '<h2>Images (same seed)</h2><div class="images">'
            f'<figure><img alt="original" src="{image_data_uri(original)}"><figcaption>original</figcaption></figure>'
            f'<figure><img alt="patched" src="{image_data_uri(patched)}"><figcaption>patched</figcaption></figure>'
            "</div>"
        )
    elif original is not None:  # nothing changed: the patched image would be the same
        images = (
            '<h2>Image</h2><div class="images">'
            f'<figure><img alt="original" src="{image_data_uri(original)}"><figcaption>original = patched: no row '
            "changed, so it was generated once</figcaption></figure></div>"
        )
    threshold = report.describe_threshold()
    settings_rows = "".join(
        f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(str(v))}</td></tr>"
        for k, v in {**(settings or {}), **report.options, "threshold": threshold}.items()
    )
    warnings = "".join(f"<li>{html.escape(w)}</li>" for w in report.warnings)
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Follow the Flow: {html.escape(report.text)}</title>
<style>{STYLE}</style></head><body>
<h1>Follow the Flow report</h1>
<p class="prompt">{html.escape(report.prompt)}</p>
{images}
<h2>Items</h2>
{_items_table(result)}
<p class="note">Leak score: how much closer the item in context is to another item's own meaning than either is,
typically, to anything, on this encoder's calibrated scale (patched at or above the threshold, which only the
given share of unrelated items reach). Presence: cosine between the item in context and alone (1 = intact).</p>
<h2>How far each item's encoding moved, token by token</h2>
{_heatmap(result, shifts)}
<p class="note">Item rows: 1 &minus; cosine between each token in the prompt and the same token with its item encoded
alone at the same positions (what context did to it). Patch change: 1 &minus; cosine between the original and
the patched row. An item is not patched for moving far: context moves every token, the most where the context is
related. It is patched when its leak score (under its name) reaches the threshold, that is, when it moved toward
another item's own meaning more than unrelated items do (or when marked, or in every-item mode).</p>
<h2>Patch plan</h2>
{_patch_plan(result)}
{f"<h2>Warnings</h2><ul>{warnings}</ul>" if warnings else ""}
<h2>Settings</h2><table>{settings_rows}</table>
</body></html>
"""
