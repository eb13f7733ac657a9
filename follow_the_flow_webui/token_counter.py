"""Markers are not tokens: remove them before the WebUI counts the prompt's tokens."""

from __future__ import annotations

from flowcore.prompts.markers import strip_markers


def before_token_counter(params) -> None:
    """`on_before_token_counter` callback: markers count nothing (only the positive prompt has them).

    Runs on every keystroke, so half-typed markers are not logged.
    """
    if getattr(params, "is_positive", True):
        params.prompt = strip_markers(params.prompt)
