"""The WebUI's log while a model is calibrated: one info line when it starts, one with its time when done."""

from __future__ import annotations

import logging

import pytest
from ext_helpers import on

from flowcore.detection import calibration
from follow_the_flow_webui import script

PROMPT = "a crosswalk next to a bus station with a standing zebra"


@pytest.fixture()
def fresh_calibration(monkeypatch, tmp_path):
    """An empty calibration cache, a few calibration prompts, and no patcher kept from earlier tests (before and
    after: later tests must not get this calibration)."""
    monkeypatch.setenv("FLOWCORE_CACHE", str(tmp_path))
    prompts = calibration.calibration_prompts()
    monkeypatch.setattr(calibration, "calibration_prompts", lambda: [*prompts[:12], *prompts[-2:]])
    script._ENCODERS.clear()
    yield
    script._ENCODERS.clear()


def calibration_lines(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "follow_the_flow" and "alibrat" in r.getMessage()]


def test_a_calibration_logs_one_line_when_it_starts_and_its_time_when_done(webui, fresh_calibration, caplog):
    with caplog.at_level(logging.INFO, logger="follow_the_flow"):
        webui.txt2img(prompt=PROMPT, alwayson=on("Automatic"))
        started, done = calibration_lines(caplog)
        assert started.startswith("[Follow the Flow] Calibrating the CLIP encoder once on 14 neutral prompts")
        assert done.startswith("[Follow the Flow] Calibrated the CLIP encoder in ") and done.endswith(" s.")

        webui.txt2img(prompt="a red car with bats", alwayson=on("Automatic"))  # calibrated: nothing more
        script._ENCODERS.clear()
        webui.txt2img(prompt=PROMPT, alwayson=on("Automatic"))  # a new patcher reads the disk cache
    assert len(calibration_lines(caplog)) == 2
