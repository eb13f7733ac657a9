"""The WebUI's entry file for Follow the Flow: the logic lives in `extension/` and `flowcore/`."""

import sys
from pathlib import Path

ROOT = str(Path(__file__).resolve().parent.parent)
if ROOT not in sys.path:
    sys.path.append(ROOT)  # appended: the WebUI's own modules keep precedence

import extension  # noqa: E402
from extension.script import FollowTheFlowScript  # noqa: E402, F401

extension.register_callbacks()
