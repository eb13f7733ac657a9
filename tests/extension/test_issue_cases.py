"""One scoring in every host, and the WebUI cases that used to go wrong (each a regression test)."""

from __future__ import annotations

import logging

import pytest
import torch
from conftest import make_webui
from ext_helpers import captured_reports, changed_rows, conds, isolated, on
from modules import errors, shared

from flowcore import ClipEncoder, FlowOptions, FlowPatcher

ZEBRA = "a crosswalk next to a bus station with a standing zebra, a red car with bats and a baseball game"


def test_the_webui_scores_and_patches_as_the_core_does_on_the_same_weights(webui, monkeypatch, nlp):
    """The WebUI's encoder and the core's `ClipEncoder` over the same CLIP module: the same calibrated scores
    (within 1e-3, each host calibrating on its own) and the same patched items."""
    reports = captured_reports(monkeypatch)
    webui.txt2img(prompt=ZEBRA, alwayson=on("Automatic", sensitivity=0.7))
    (report,) = reports
    wrapped = shared.sd_model.cond_stage_model.wrapped
    core = FlowPatcher(ClipEncoder(wrapped.tokenizer, wrapped.transformer), FlowOptions(sensitivity=0.7), nlp=nlp)
    expected = core.run(ZEBRA).report
    assert [e.item.text for e in report.items] == [e.item.text for e in expected.items]
    scored = [(got, want) for got, want in zip(report.items, expected.items) if want.leak_score is not None]
    assert len(scored) >= 4
    for got, want in scored:
        assert got.leak_score == pytest.approx(want.leak_score, abs=1e-3), got.item.text
        assert got.source.text == want.source.text
    assert [e.item.text for e in report.items if e.patched] == [e.item.text for e in expected.items if e.patched]
    assert report.threshold == pytest.approx(expected.threshold, abs=1e-3)


def test_a_repeated_prompt_costs_no_encode(webui, monkeypatch):
    """The second generation of a prompt finds the calibration and every item's encodings in the caches kept
    across generations: no forward call of the text transformer by the extension."""
    webui.txt2img(prompt=ZEBRA, alwayson=on("Automatic"))
    from follow_the_flow_webui.script import parts_for as script_parts

    ((encoder, _),) = script_parts(shared.sd_model, shared.opts)
    calls = []
    handle = encoder.towers[0].layers[0].register_forward_hook(lambda *args: calls.append(1))
    try:
        webui.txt2img(prompt=ZEBRA, alwayson=on("Automatic"))
    finally:
        handle.remove()
    assert not calls  # the WebUI's cond cache and ours: nothing re-encoded


def test_markers_only_encodes_only_the_marked_item(webui, monkeypatch):
    webui.txt2img(prompt="a cat", alwayson=on("Automatic"))  # the encoder exists, calibrated
    from follow_the_flow_webui.script import parts_for as script_parts

    ((encoder, _),) = script_parts(shared.sd_model, shared.opts)
    shapes = []
    handle = encoder.towers[0].layers[0].register_forward_hook(lambda m, args, out: shapes.append(args[0].shape[1]))
    try:
        webui.txt2img(prompt="a crosswalk next to a bus station with a ~standing zebra~", alwayson=on())
    finally:
        handle.remove()
    assert shapes == [77, 3]  # the WebUI's own encode of the new prompt, then ours: [BOS standing zebra] only


def test_emphasis_none_patches_marked_items_with_brackets(plain_webui):
    """With emphasis "None" the WebUI reads brackets literally; the marked item is patched with the rows of
    its literal text alone."""
    shared.opts.emphasis = "None"
    try:
        ref = plain_webui.txt2img(prompt="a crosswalk next to a (standing zebra:1.3)")
        webui = make_webui("sd1")  # the same weights; its settings are reset too
        shared.opts.emphasis = "None"
        res = webui.txt2img(prompt="a crosswalk next to a ~(standing zebra:1.3)~", alwayson=on())
        rows = changed_rows(conds(res.sampling_records[0]), conds(ref.sampling_records[0]))
        alone = isolated("(standing zebra:1.3)")
        assert len(rows) == len(alone) and torch.allclose(conds(res.sampling_records[0])[rows], alone, atol=1e-5)
    finally:
        shared.opts.emphasis = "Original"
    assert not errors.reported


def test_a_malformed_marker_is_reported_once_per_generation(webui, caplog):
    with caplog.at_level(logging.WARNING, logger="follow_the_flow"):
        webui.txt2img(
            prompt="a crosswalk with a ~zebra",
            batch_size=2,
            n_iter=2,
            enable_hr=True,
            hr_second_pass_steps=2,
            alwayson=on("Automatic"),
        )
    messages = [r.getMessage() for r in caplog.records if r.name == "follow_the_flow"]
    assert len(messages) == 1 and "Unclosed marker" in messages[0]


def test_break_does_not_swallow_an_item_in_automatic_mode(webui, monkeypatch):
    reports = captured_reports(monkeypatch)
    webui.txt2img(prompt="a crosswalk next to a bus station BREAK with a standing zebra", alwayson=on("Automatic"))
    assert [e.item.text for e in reports[0].items] == ["crosswalk", "bus station", "standing zebra"]


def test_the_infotext_lists_each_images_own_patched_items(webui):
    prompts = ["a crosswalk next to a ~standing zebra~", "a red car with ~bats~"]
    res = webui.txt2img(prompt=prompts, batch_size=2, alwayson=on())
    first, second = res.infotexts[:2]
    assert "FtF patched: standing zebra" in first and "bats" not in first.split("FtF patched")[1]
    assert "FtF patched: bats" in second and "zebra" not in second.split("FtF patched")[1]


def test_a_failure_while_recording_leaves_one_warning_and_a_patched_image(webui, monkeypatch, caplog):
    from follow_the_flow_webui.script import FollowTheFlowScript

    def broken(*args, **kwargs):
        raise RuntimeError("record")

    monkeypatch.setattr(FollowTheFlowScript, "_record", broken)
    with caplog.at_level(logging.WARNING, logger="follow_the_flow"):
        res = webui.txt2img(prompt="a crosswalk next to a ~standing zebra~", alwayson=on())
    messages = [r.getMessage() for r in caplog.records if r.name == "follow_the_flow"]
    assert len(messages) == 1 and "record" in messages[0]
    assert res.sampling_records and not errors.reported


def test_offsets_survive_characters_that_lowercase_longer(plain_webui):
    """The capital dotted I lower-cases to two characters; the spans of later items must not shift."""
    ref = plain_webui.txt2img(prompt="İstanbul street with a standing zebra")
    webui = make_webui("sd1")
    res = webui.txt2img(prompt="İstanbul street with a ~standing zebra~", alwayson=on())
    rows = changed_rows(conds(res.sampling_records[0]), conds(ref.sampling_records[0]))
    alone = isolated("standing zebra")
    assert len(rows) == 2 and torch.allclose(conds(res.sampling_records[0])[rows], alone, atol=1e-5)


def test_a_marker_that_hides_an_and_leaves_the_rest_of_the_image_patched(webui, monkeypatch, caplog):
    """`cat~AND~` splits the marked prompt at AND but not the prompt without markers ("catAND"): that image's
    markers are ignored, and automatic detection still runs on it."""
    reports = captured_reports(monkeypatch)
    with caplog.at_level(logging.WARNING, logger="follow_the_flow"):
        webui.txt2img(prompt="a fat cat~AND~ a dog with a zebra", alwayson=on("Automatic"))
    assert reports and reports[0].items  # the sub-prompt was scored
    assert any("AND" in r.getMessage() for r in caplog.records if r.name == "follow_the_flow")
    assert not errors.reported


def test_the_report_says_which_items_came_before(webui, monkeypatch):
    reports = captured_reports(monkeypatch)
    webui.txt2img(prompt="a crosswalk with a zebra", alwayson=on("Automatic", sensitivity=0.0))
    first, second = reports[0].items
    assert first.reason == "no other item before it in its chunk could have pulled it"
    assert second.leak_score is not None and "threshold" in second.reason
