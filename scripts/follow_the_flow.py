"""The WebUI's entry file for Follow the Flow: the logic lives in `follow_the_flow_webui/` and `flowcore/`."""

import sys
from pathlib import Path

ROOT = str(Path(__file__).resolve().parent.parent)
if ROOT not in sys.path:
    sys.path.append(ROOT)  # appended: the WebUI's own modules keep precedence

import follow_the_flow_webui  # noqa: E402
from follow_the_flow_webui.script import FollowTheFlowScript  # noqa: E402, F401

follow_the_flow_webui.register_callbacks()
