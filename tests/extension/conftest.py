"""Fixtures for the extension's tests: the WebUI stand-in (tests/webui_standin) with the script loaded."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
for path in (ROOT / "tests" / "webui_standin", ROOT):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

import standin  # noqa: E402


def make_webui(family="sd1", with_script=True):
    webui = standin.WebUI(family)
    if with_script:
        import follow_the_flow_webui
        from follow_the_flow_webui.conditioning import PENDING
        from follow_the_flow_webui.script import FollowTheFlowScript

        PENDING.restore_all()
        webui.add_script(FollowTheFlowScript)
        follow_the_flow_webui.register_callbacks()
    return webui


@pytest.fixture()
def webui():
    return make_webui("sd1")


@pytest.fixture()
def plain_webui():
    """The same WebUI (same weights) without the extension."""
    return make_webui("sd1", with_script=False)
