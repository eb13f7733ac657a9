"""Puts the ComfyUI stand-in (`tests/comfyui/comfy_standin/`) on `sys.path` and builds its CLIP objects."""

from __future__ import annotations

import sys
from pathlib import Path

FOLDER = str(Path(__file__).resolve().parent / "comfy_standin")
TESTS = str(Path(__file__).resolve().parent.parent)  # tokenizer_families
for folder in (TESTS, FOLDER):
    if folder not in sys.path:
        sys.path.insert(0, folder)

from comfy_standin_builders import FAMILIES, LLM_FAMILIES, add_embedding, make_clip, make_lora  # noqa: E402, F401
