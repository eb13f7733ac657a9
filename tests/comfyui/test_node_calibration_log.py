"""ComfyUI's log while a text encoder is calibrated: one info line when it starts, one with its time when done."""

from __future__ import annotations

import logging

import pytest

from comfyui_nodes import conditioning
from flowcore import FlowOptions
from flowcore.detection import calibration

PROMPT = "a crosswalk next to a bus station with a standing zebra"


@pytest.fixture()
def fresh_calibration(monkeypatch, tmp_path):
    """An empty calibration cache, a few calibration prompts, and no patcher kept from earlier tests (before and
    after: later tests must not get this calibration)."""
    monkeypatch.setenv("FLOWCORE_CACHE", str(tmp_path))
    prompts = calibration.calibration_prompts()
    monkeypatch.setattr(calibration, "calibration_prompts", lambda: [*prompts[:12], *prompts[-2:]])
    conditioning._PATCHERS.clear()
    yield
    conditioning._PATCHERS.clear()


def calibration_lines(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "follow_the_flow" and "alibrat" in r.getMessage()]


def test_a_calibration_logs_one_line_when_it_starts_and_its_time_when_done(clips, fresh_calibration, caplog):
    with caplog.at_level(logging.INFO, logger="follow_the_flow"):
        assert not conditioning.encode(clips["sd1"], PROMPT, FlowOptions()).problems
        started, done = calibration_lines(caplog)
        assert started.startswith("[Follow the Flow] Calibrating the CLIP encoder once on 14 neutral prompts")
        assert done.startswith("[Follow the Flow] Calibrated the CLIP encoder in ") and done.endswith(" s.")

        conditioning.encode(clips["sd1"], "a red car with bats", FlowOptions())  # calibrated: nothing more
        conditioning._PATCHERS.clear()
        conditioning.encode(clips["sd1"], PROMPT, FlowOptions())  # a new patcher reads the disk cache
    assert len(calibration_lines(caplog)) == 2


def test_a_calibration_is_logged_once_where_every_logger_shows_info(clips, fresh_calibration, caplog):
    """ComfyUI's root logger shows INFO: the core's own calibration lines must not repeat the node's."""
    with caplog.at_level(logging.INFO):
        conditioning.encode(clips["sd1"], PROMPT, FlowOptions())
    assert len([r for r in caplog.records if "alibrat" in r.getMessage()]) == 2
