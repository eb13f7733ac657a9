"""flowcore: find and fix semantic leakage between the items of a text-to-image prompt.

After "Follow the Flow" (Kaplan, Toker, Reif, Belinkov, Schwartz; arXiv 2504.01137): an item whose
encoding was pulled toward another item is re-encoded on its own and its vectors are patched into the
prompt's encoding. Importing flowcore imports neither diffusers nor gradio; spaCy loads on first use.
"""

from flowcore import encoders, interventions, markers
from flowcore.encoders import ClipEncoder, GenericEncoder, SdxlEncoder
from flowcore.errors import EncodingMismatchError, FlowcoreError, ModelNotFoundError, OptionsError
from flowcore.items import LexicalItem
from flowcore.layout import PromptLayout, Token
from flowcore.options import FlowOptions
from flowcore.patcher import FlowPatcher
from flowcore.report import FlowReport, FlowResult, ItemReport, Pull
from flowcore.segmentation import load_nlp, segment

__version__ = "0.1.0"

__all__ = [
    "ClipEncoder",
    "EncodingMismatchError",
    "FlowOptions",
    "FlowPatcher",
    "FlowReport",
    "FlowResult",
    "FlowcoreError",
    "GenericEncoder",
    "ItemReport",
    "LexicalItem",
    "ModelNotFoundError",
    "OptionsError",
    "PromptLayout",
    "Pull",
    "SdxlEncoder",
    "Token",
    "encoders",
    "interventions",
    "load_nlp",
    "markers",
    "segment",
]
