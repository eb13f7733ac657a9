"""Follow the Flow for the AUTOMATIC1111 WebUI: the glue between the WebUI and `flowcore`.

`scripts/follow_the_flow.py` (the WebUI's entry file) imports `FollowTheFlowScript` from here and calls
`register_callbacks()`. The WebUI's `modules` are imported lazily, inside the functions that need them.
"""

from __future__ import annotations


def register_callbacks() -> None:
    """Settings defaults, the token counter's marker stripping, and the X/Y/Z plot axes."""
    from modules import script_callbacks

    from . import settings, token_counter, xyz

    script_callbacks.on_ui_settings(settings.add_settings, name="follow_the_flow_settings")
    script_callbacks.on_before_token_counter(token_counter.before_token_counter, name="follow_the_flow_markers")
    if hasattr(script_callbacks, "on_before_ui"):
        script_callbacks.on_before_ui(xyz.register_axes, name="follow_the_flow_xyz")
    else:
        xyz.register_axes()
