"""Encoder adapters: turn a tokenizer and text model into what `FlowPatcher` calls (`TextEncoder`)."""

from flowcore.encoders.base import Encoding, IsolatedItem, ItemRequest, TextEncoder
from flowcore.encoders.clip import ClipEncoder, ClipTower, SdxlEncoder, Tower, TowerEncoder
from flowcore.encoders.generic import GenericEncoder

__all__ = [
    "ClipEncoder",
    "ClipTower",
    "Encoding",
    "GenericEncoder",
    "IsolatedItem",
    "ItemRequest",
    "SdxlEncoder",
    "TextEncoder",
    "Tower",
    "TowerEncoder",
]
