"""The HTML report: self-contained, escaped, one heatmap row per item."""

from __future__ import annotations

import re

from PIL import Image

from flowcore.frontends.html_report import context_shift, patch_change, render_html


def test_report_is_self_contained_and_escapes_prompt_text(patcher):
    prompt = 'a <b>crosswalk</b> & "bus station" with a ~standing zebra~ <script>alert(1)</script>'
    result = patcher.run(prompt)
    shifts = context_shift(result, patcher)
    image = Image.new("RGB", (8, 8), "red")
    page = render_html(result, image, image, shifts, settings={"model": "<tiny>"})

    assert "<script" not in page and "<b>crosswalk" not in page
    assert "&lt;script&gt;" in page and "&lt;b&gt;crosswalk" in page and "&lt;tiny&gt;" in page
    assert not re.search(r"(src|href)=\"(https?:|//)", page) and "<link" not in page
    assert page.count('src="data:image/png;base64,') == 2
    heat = page.split('<table class="heat">')[1].split("</table>")[0]
    items_with_rows = [entry for entry in result.report.items if entry.rows]
    assert heat.count("<tr>") == 1 + len(items_with_rows) + 1  # tokens, one per item, the patch change
    assert "standing zebra" in page.split("<h2>Patch plan</h2>")[1]


def test_movement_numbers(patcher):
    result = patcher.run("a crosswalk next to a bus station with a ~standing zebra~")
    change = patch_change(result)
    patched_rows = {row for entry in result.report.items if entry.patched for row in entry.rows}
    assert patched_rows >= {11, 12}  # "standing zebra", marked
    token_rows = [row for row, _ in result.layout.token_rows()]
    for row, value in zip(token_rows, change):
        assert (value > 1e-6) == (row in patched_rows)
    shifts = context_shift(result, patcher)
    assert [len(s) for s in shifts] == [len(e.rows) for e in result.report.items if e.rows]
    assert all(value >= -1e-6 for shift in shifts for value in shift)


def test_tables_read_for_people(patcher):
    """Word pieces shown with their word, the heatmap says what decided each item, no negative zeros."""
    result = patcher.run("masterpiece, bokeh, 85mm, a crosswalk next to a bus station with a ~standing zebra~")
    page = render_html(result, shifts=context_shift(result, patcher))
    items = page.split("<h2>Items</h2>")[1].split("</table>")[0]
    assert "<td>bokeh (keh)</td>" in items and "<td>85mm (mm)</td>" in items and "<td>zebra</td>" in items
    heat = page.split('<table class="heat">')[1].split("<h2>Patch plan</h2>")[0]
    scores = {e.item.text: f"leak score {e.leak_score:+.3f}" for e in result.report.items if e.leak_score is not None}
    assert f"standing zebra<br><small>{scores['standing zebra']}, marked ~isolate~: patched</small>" in heat
    assert f"bokeh<br><small>{scores['bokeh']}, a quality/style tag: kept</small>" in heat
    assert "scaled to the largest value in this table" in heat
    assert not re.search(r"-0\.0+(?![0-9])", page)


def test_numbers_that_round_to_zero_print_without_a_sign():
    from flowcore.patching.report import fixed

    assert [fixed(-1e-7), fixed(-4e-5, 4), fixed(-1e-9, signed=True), fixed(-0.25, signed=True)] == [
        "0.000",
        "0.0000",
        "+0.000",
        "-0.250",
    ]
