"""Encoder adapters: turn a tokenizer and text model into what `FlowPatcher` calls (`TextEncoder`)."""

from flowcore.encoders.base import Encoding, IsolatedItem, TextEncoder
from flowcore.encoders.clip import ClipEncoder, SdxlEncoder
from flowcore.encoders.generic import GenericEncoder

__all__ = ["ClipEncoder", "Encoding", "GenericEncoder", "IsolatedItem", "SdxlEncoder", "TextEncoder"]
