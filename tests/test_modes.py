"""The three modes (automatic, markers only, every item), the old `detect=` spelling, and quality/style tags,
which are never patched by default but are still scored and can still be a leak's source."""

import dataclasses

import pytest
import torch

from flowcore import FlowOptions, FlowPatcher
from flowcore.errors import OptionsError

COLOURS = "masterpiece, a cute girl, white shirt with green tie, red shoes, blue hair, ^yellow eyes^, bokeh"
SUBJECTS = ["cute girl", "white shirt", "green tie", "red shoes", "blue hair"]


def changed_rows(result):
    return (result.patched != result.original).any(dim=1).nonzero().flatten().tolist()


def test_detect_is_the_old_spelling_of_the_mode():
    assert FlowOptions() == FlowOptions(mode="auto") == FlowOptions(detect=True)
    assert FlowOptions(detect=False) == FlowOptions(mode="markers")
    assert FlowOptions(detect=False).detect is False and FlowOptions().detect is True
    assert FlowOptions(mode="every").detect is False and FlowOptions(mode="every").parse is True
    assert FlowOptions(detect=False, mode="markers").mode == "markers"
    assert dataclasses.replace(FlowOptions(detect=False), sensitivity=0.7).mode == "markers"
    assert FlowOptions(mode="every").to_dict()["mode"] == "every"


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"mode": "sideways"}, "`mode` must be one of"),
        ({"mode": False}, "old spelling of `mode='markers'`"),
        ({"detect": True, "mode": "every"}, "pass one"),
        ({"detect": "yes"}, "`detect` must be True or False"),
        ({"patch_style_tags": 1}, "patch_style_tags"),
        ({"style_tags": "bokeh"}, "style_tags"),
    ],
)
def test_bad_modes_are_errors(kwargs, match):
    with pytest.raises(OptionsError, match=match):
        FlowOptions(**kwargs)


def test_every_item_mode_patches_every_item_but_kept_and_style_ones(clip_encoder, nlp, monkeypatch):
    patcher = FlowPatcher(clip_encoder, FlowOptions(mode="every"), nlp=nlp)
    monkeypatch.setattr(FlowPatcher, "calibrate", lambda *a, **k: pytest.fail("every-item mode ran the detector"))
    result = patcher.run(COLOURS)
    report = result.report
    decisions = {entry.item.text: (entry.patched, entry.reason) for entry in report.items}
    assert decisions == {
        "masterpiece": (False, "a quality/style tag: never patched unless `patch_style_tags` is on"),
        **{subject: (True, "every-item mode") for subject in SUBJECTS},
        "yellow eyes": (False, "marked ^keep^"),
        "bokeh": (False, "a quality/style tag: never patched unless `patch_style_tags` is on"),
    }
    assert all(entry.leak_score is None for entry in report.items)  # no detector
    assert "every-item mode" in report.describe_threshold()
    patched_rows = []
    for entry in report.items:
        if entry.patched:  # each patched item's rows are exactly its isolated encoding
            assert torch.equal(result.patched[entry.rows], patcher.isolated(entry.item.text).rows)
            patched_rows += entry.rows
    assert changed_rows(result) == sorted(patched_rows)


def test_every_item_mode_can_patch_style_tags_too(clip_encoder, nlp):
    options = FlowOptions(mode="every", patch_style_tags=True)
    report = FlowPatcher(clip_encoder, options, nlp=nlp).run(COLOURS).report
    assert [e.item.text for e in report.items if not e.patched] == ["yellow eyes"]
    assert "^kept^ items)" in report.describe_threshold()


def test_every_item_mode_encodes_in_the_prompts_pass(clip_encoder, nlp, monkeypatch):
    """`run` asks for every item it will patch in the prompt's own encode call: `patch` finds them cached."""
    patcher = FlowPatcher(clip_encoder, FlowOptions(mode="every"), nlp=nlp)
    calls = []
    original = type(clip_encoder).encode_isolated
    monkeypatch.setattr(type(clip_encoder), "encode_isolated", lambda self, r: calls.append(r) or original(self, r))
    patcher.run(COLOURS)
    assert calls == []


def test_style_tags_are_scored_and_can_be_a_source_but_are_not_patched(minilm_encoder, nlp):
    """Automatic mode at sensitivity 1 patches every item another item could have pulled: not the style tags,
    which are still scored and still pull the others."""
    prompt = "masterpiece, red car, bokeh, old barn"
    result = FlowPatcher(minilm_encoder, FlowOptions(sensitivity=1.0), nlp=nlp).run(prompt)
    entries = {entry.item.text: entry for entry in result.report.items}
    assert [text for text, entry in entries.items() if entry.patched] == ["red car", "old barn"]
    for style in ("masterpiece", "bokeh"):
        assert entries[style].leak_score is not None and "quality/style tag" in entries[style].reason
    sources = {pull.source.text for pull in entries["red car"].pulls}
    assert {"masterpiece", "bokeh"} <= sources
    allowed = FlowPatcher(minilm_encoder, FlowOptions(sensitivity=1.0, patch_style_tags=True), nlp=nlp)
    assert len(allowed.run(prompt).report.patched_items) == 4


def test_extra_style_tags_from_the_options(clip_encoder, nlp):
    prompt = "kodak portra 400, red car"
    every = FlowPatcher(clip_encoder, FlowOptions(mode="every"), nlp=nlp)
    assert [i.text for i in every.run(prompt).report.patched_items] == ["kodak portra 400", "red car"]
    extra = FlowOptions(mode="every", style_tags=("kodak portra 400",))
    assert [i.text for i in every.run(prompt, extra).report.patched_items] == ["red car"]


def test_markers_override_style_tags(clip_encoder, nlp):
    report = FlowPatcher(clip_encoder, FlowOptions(mode="markers"), nlp=nlp).run("~masterpiece~, red car").report
    assert [(e.item.text, e.patched, e.reason) for e in report.items] == [("masterpiece", True, "marked ~isolate~")]


def test_tags_of_a_tag_list_are_judged_against_the_tags_null(clip_encoder, nlp):
    """A calibration whose sentence null is out of reach and whose tag null is below every score: the tags of
    the list are patched, the items of the phrase are not, and the report gives both thresholds."""
    from flowcore.detection.calibration import Calibration

    dim = clip_encoder.encode(clip_encoder.layout("x")).rows.shape[-1]
    calibration = Calibration.identity(dim)
    calibration.null, calibration.tag_null = torch.full((100,), 10.0), torch.full((100,), -10.0)
    patcher = FlowPatcher(clip_encoder, nlp=nlp, calibration=calibration)
    report = patcher.run("a cat sleeping on a sofa, red car, blue hat, green lamp").report
    by_text = {entry.item.text: entry for entry in report.items}
    assert [text for text, entry in by_text.items() if entry.item.tag] == ["red car", "blue hat", "green lamp"]
    assert report.threshold == 10.0 and report.tag_threshold == -10.0
    for entry in report.items:
        if entry.leak_score is not None:
            assert entry.patched == entry.item.tag, entry.item.text
            assert entry.share_of_unrelated == (0.0 if entry.item.tag else 1.0)  # of the null it is judged by
    assert by_text["blue hat"].patched and by_text["green lamp"].patched
    assert "for tags of a tag list" in report.describe_threshold()
