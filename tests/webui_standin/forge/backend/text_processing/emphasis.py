"""Stand-in for ``backend/text_processing/emphasis.py`` (the same four modes as the WebUI's
``sd_emphasis``; Forge's module has no ``options`` entries of its own, the classes are the stand-in's)."""

from __future__ import annotations

from modules.sd_emphasis import (  # noqa: F401
    Emphasis,
    EmphasisIgnore,
    EmphasisNone,
    EmphasisOriginal,
    EmphasisOriginalNoNorm,
    get_options_descriptions,
)

options = [EmphasisNone, EmphasisIgnore, EmphasisOriginal, EmphasisOriginalNoNorm]


def get_current_option(emphasis_option_name):
    return next((x for x in options if x.name == emphasis_option_name), EmphasisOriginal)
