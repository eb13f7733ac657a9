"""Prompts that are not English: the guess (`flowcore.prompts.language`), and what the patcher does with them: nothing
that English segmentation found is patched, markers still are, and a pipeline of the language is used where one
is installed."""

from __future__ import annotations

import copy

import pytest

from flowcore import FlowOptions, FlowPatcher
from flowcore.prompts import segmentation
from flowcore.prompts.language import guess_language

EVERY = FlowOptions(mode="every")


@pytest.mark.parametrize(
    ("prompt", "code"),
    [
        ("ein Zebra auf einem Zebrastreifen neben einer Bushaltestelle", "de"),
        ("eine Katze mit einem roten Ball, Garten", "de"),
        ("un zèbre debout sur un passage piéton à côté d'un arrêt de bus", "fr"),
        ("une femme avec un chapeau rouge dans un jardin", "fr"),
        ("una cebra sobre un paso de peatones junto a una parada de autobús", "es"),
        ("一只斑马站在公交车站旁边的人行横道上", "zh"),
        ("横断歩道の上に立つシマウマ", "ja"),
        ("зебра на пешеходном переходе", "ru"),
    ],
)
def test_other_languages_are_recognised(prompt, code):
    assert guess_language(prompt).code == code


@pytest.mark.parametrize(
    "prompt",
    [
        "a crosswalk next to a bus station with a standing zebra",
        "masterpiece, best quality, 1girl, solo, white shirt, green tie, looking at viewer",
        "old man, hat, war, rest",  # German function-word look-alikes, and no English function word
        "portrait by Pierre-Auguste Renoir, le déjeuner des canotiers",  # an English prompt naming a French title
        "la la land poster, starry night, Vincent van Gogh",
        "a girl in a kimono, 桜",
        "score_9, 1boy, 85mm, bokeh, 8k",
        "",
    ],
)
def test_english_and_tag_lists_stay_english(prompt):
    assert guess_language(prompt).english


@pytest.mark.parametrize(
    ("prompt", "language"),
    [
        ("ein Zebra auf einem Zebrastreifen neben einer Bushaltestelle", "German"),
        ("un zèbre debout sur un passage piéton à côté d'un arrêt de bus", "French"),
        ("一只斑马站在公交车站旁边的人行横道上", "Chinese"),
    ],
)
def test_nothing_segmentation_found_is_patched_in_a_language_it_cannot_read(patcher, prompt, language):
    for options in (EVERY, FlowOptions(mode="auto", sensitivity=1.0)):
        report = patcher.run(prompt, options).report
        assert report.items and not report.patched_items
        assert all(f"reads as {language}, which segmentation cannot read" in e.reason for e in report.items)
        assert sum(f"The prompt reads as {language}" in warning for warning in report.warnings) == 1


def test_markers_still_patch_in_another_language(patcher):
    report = patcher.run("ein ~Zebra~ auf einem Zebrastreifen neben einer Bushaltestelle", EVERY).report
    assert [item.text for item in report.patched_items] == ["Zebra"]
    assert [e.reason for e in report.items if e.patched] == ["marked ~isolate~"]
    markers_only = patcher.run("ein ~Zebra~ auf einem Zebrastreifen", FlowOptions(mode="markers")).report
    assert [item.text for item in markers_only.patched_items] == ["Zebra"] and not markers_only.warnings


def test_english_controls_are_patched_as_before(patcher):
    report = patcher.run("masterpiece, white shirt, green tie, red shoes", EVERY).report
    assert [item.text for item in report.patched_items] == ["white shirt", "green tie", "red shoes"]
    assert not report.warnings


def test_an_installed_pipeline_of_the_language_is_used(clip_encoder, nlp, monkeypatch):
    """Stands in for `de_core_news_sm` with the English pipeline: what matters is that it is found and used."""
    german = copy.copy(nlp)
    german.lang = "de"  # the instance says German, as de_core_news_sm would; the class stays English
    monkeypatch.setattr(segmentation, "_loaded", {})
    monkeypatch.setattr(segmentation, "_load_if_installed", lambda name: german if name == "de_core_news_sm" else None)
    assert segmentation.pipeline_for("de") is german and segmentation.pipeline_for("fr") is None

    report = FlowPatcher(clip_encoder, nlp=nlp).run("ein Zebra auf einem Zebrastreifen", EVERY).report
    assert report.patched_items and not report.warnings


def test_a_configured_pipeline_must_be_installed(monkeypatch):
    monkeypatch.setenv("FLOWCORE_SPACY_MODEL_DE", "no_such_pipeline_de")
    with pytest.raises(segmentation.ModelNotFoundError, match="no_such_pipeline_de"):
        segmentation.pipeline_for("de")
