"""Forge f2.0.1v1.10.1: not implemented yet. Every family gets one "not implemented" row (exit status 2)."""

from __future__ import annotations

from pathlib import Path

from host_common import NOT_IMPLEMENTED, Row, say

CLAIMED = (
    "sd15",
    "sdxl",
    "sd35",
    "flux-dev",
    "flux-schnell",
    "chroma",
)  # what the README claims for the extension in Forge


def check(args, out: Path) -> list[Row]:
    say("the Forge checks are not implemented yet: nothing was installed or started")
    return [
        Row("Forge", name, "-", "all checks", NOT_IMPLEMENTED, detail="not implemented yet") for name in args.models
    ]
