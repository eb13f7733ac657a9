"""Third-party notices that are harmless in flowcore's use, hidden one by one around the calls that raise them.

No global filter: each context manager adds a filter for one known message to the one logger that emits it,
and removes it on the way out, so the same message from the caller's own code still shows.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

# transformers 5 without torchvision, when diffusers imports its pipelines (which name CLIPImageProcessor, the
# safety checker's feature extractor): flowcore never runs an image processor.
TORCHVISION_FALLBACK = ("transformers.utils.import_utils", "requires torchvision (not installed); falling back")
# diffusers' `ModelMixin.to(dtype)`, which a load calls on each model (the VAE of every single-file checkpoint),
# warns even where the model keeps no module in float32: the list is empty, so the cast is exact. Only that
# empty-list form is hidden; a model that does keep modules in float32 still warns.
EMPTY_FP32_CAST = ("diffusers.models.modeling_utils", "that should be kept in float32: []. ")


class _Drop(logging.Filter):
    def __init__(self, fragment: str):
        super().__init__()
        self.fragment = fragment

    def filter(self, record: logging.LogRecord) -> bool:
        return self.fragment not in record.getMessage()


@contextlib.contextmanager
def hidden(logger_name: str, fragment: str) -> Iterator[None]:
    """Drop the records of `logger_name` whose message contains `fragment`, inside the `with` block only."""
    logger, drop = logging.getLogger(logger_name), _Drop(fragment)
    logger.addFilter(drop)
    try:
        yield
    finally:
        logger.removeFilter(drop)


def diffusers_import_notices() -> contextlib.AbstractContextManager:
    """Around importing or loading diffusers pipelines: transformers' torchvision fallback notice."""
    return hidden(*TORCHVISION_FALLBACK)


def empty_fp32_cast_notice() -> contextlib.AbstractContextManager:
    """Around loading a diffusers pipeline: the warning about casting a model with no float32 modules."""
    return hidden(*EMPTY_FP32_CAST)


@contextlib.contextmanager
def weight_loading_bars_hidden() -> Iterator[None]:
    """transformers' per-model "Loading weights" bars (one per text encoder, UNet and VAE; a tiny model shows
    three) hidden while flowcore loads, and the caller's setting back afterwards."""
    from transformers.utils import logging as transformers_logging

    enabled = transformers_logging.is_progress_bar_enabled()
    transformers_logging.disable_progress_bar()
    try:
        yield
    finally:
        if enabled:
            transformers_logging.enable_progress_bar()
