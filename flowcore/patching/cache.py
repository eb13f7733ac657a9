"""A small least-recently-used cache: the patcher keeps its isolated encodings, items, prompt encodings and
spaCy readers in these, so a repeated prompt costs lookups only."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable
from typing import Any


class LruCache:
    """Up to `size` entries; the least recently used goes first."""

    def __init__(self, size: int):
        self.size = size
        self.data: OrderedDict[Hashable, Any] = OrderedDict()

    def get(self, key: Hashable) -> Any:
        """The value of `key` (now the most recently used), or None."""
        if key in self.data:
            self.data.move_to_end(key)
            return self.data[key]
        return None

    def put(self, key: Hashable, value: Any) -> None:
        """Keep `value` under `key`, dropping the least recently used entries beyond `size`."""
        self.data[key] = value
        self.data.move_to_end(key)
        while len(self.data) > self.size:
            self.data.popitem(last=False)
