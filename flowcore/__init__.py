"""flowcore: find and fix semantic leakage between the items of a text-to-image prompt.

After "Follow the Flow" (Kaplan, Toker, Reif, Belinkov, Schwartz; arXiv 2504.01137): an item whose
encoding was pulled toward another item is re-encoded on its own and its vectors are patched into the
prompt's encoding. Importing flowcore imports nothing heavy: torch, transformers and spaCy load when a name
that needs them is first used (`from flowcore import FlowPatcher`), so `flowcore --help` answers at once;
diffusers and gradio load only in the modules that use them.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from flowcore.errors import (
    EncodingMismatchError,
    FlowcoreError,
    InputError,
    ModelFileError,
    ModelNotFoundError,
    OptionsError,
    PromptError,
)

__version__ = "0.1.0"

# name -> the module that defines it, imported on first use (PEP 562)
_LAZY = {
    "ClipEncoder": "flowcore.encoders",
    "GenericEncoder": "flowcore.encoders",
    "SdxlEncoder": "flowcore.encoders",
    "LexicalItem": "flowcore.prompts.items",
    "PromptLayout": "flowcore.encoders.layout",
    "Token": "flowcore.encoders.layout",
    "FlowOptions": "flowcore.patching.options",
    "FlowPatcher": "flowcore.patching.patcher",
    "FlowReport": "flowcore.patching.report",
    "FlowResult": "flowcore.patching.report",
    "ItemReport": "flowcore.patching.report",
    "Pull": "flowcore.patching.report",
    "load_nlp": "flowcore.prompts.segmentation",
    "segment": "flowcore.prompts.segmentation",
    "parse_prompt": "flowcore.prompts.prompt_syntax",
}
# submodule name -> where it lives since the core was split into layers
_SUBMODULES = {
    "encoders": "flowcore.encoders",
    "interventions": "flowcore.patching.interventions",
    "markers": "flowcore.prompts.markers",
    "prompt_syntax": "flowcore.prompts.prompt_syntax",
}

__all__ = [
    "ClipEncoder",
    "EncodingMismatchError",
    "FlowOptions",
    "FlowPatcher",
    "FlowReport",
    "FlowResult",
    "FlowcoreError",
    "GenericEncoder",
    "InputError",
    "ItemReport",
    "LexicalItem",
    "ModelFileError",
    "ModelNotFoundError",
    "OptionsError",
    "PromptError",
    "PromptLayout",
    "Pull",
    "SdxlEncoder",
    "Token",
    "encoders",
    "interventions",
    "load_nlp",
    "markers",
    "parse_prompt",
    "prompt_syntax",
    "segment",
]


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
    elif name in _SUBMODULES:
        value = importlib.import_module(_SUBMODULES[name])
    else:
        raise AttributeError(f"module 'flowcore' has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})


if TYPE_CHECKING:
    from flowcore import encoders
    from flowcore.encoders import ClipEncoder, GenericEncoder, SdxlEncoder
    from flowcore.encoders.layout import PromptLayout, Token
    from flowcore.patching import interventions
    from flowcore.patching.options import FlowOptions
    from flowcore.patching.patcher import FlowPatcher
    from flowcore.patching.report import FlowReport, FlowResult, ItemReport, Pull
    from flowcore.prompts import markers, prompt_syntax
    from flowcore.prompts.items import LexicalItem
    from flowcore.prompts.prompt_syntax import parse_prompt
    from flowcore.prompts.segmentation import load_nlp, segment
