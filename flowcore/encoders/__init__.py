"""Encoders: where each token sits in an encoding, and the adapters that encode it. Layer 2.

- `layout`: a prompt's tokens in an encoder's chunks and rows; `placement`: an item on those rows, and what
  to encode it alone with; `emphasis`: the WebUI's `(word:1.3)` applied to rows.
- `base`: the protocol every encoder meets (`TextEncoder`); `clip` (SD 1.x/2.x, SDXL), `generic` (T5, BERT,
  a causal LLM in its own layout), `templated` (a causal LLM inside a chat template): the adapters.

May import: `flowcore.errors`, `flowcore.prompts`. The adapters are exported here.
"""

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
