"""Stand-in for the attribute helpers of ``backend/utils.py`` (dotted parameter keys)."""

from __future__ import annotations


def get_attr_with_parent(obj, key: str):
    """``(parent module, last name, attribute)`` for a dotted key such as ``clip_l.transformer....weight``."""
    *path, last = key.split(".")
    parent = obj
    for name in path:
        parent = getattr(parent, name)
    return parent, last, getattr(parent, last)


def get_attr(obj, key: str):
    return get_attr_with_parent(obj, key)[2]


def set_attr_raw(obj, key: str, value):
    """Replace the attribute (a new ``Parameter`` object for weights, as Forge's LoRA loader does)."""
    parent, last, _ = get_attr_with_parent(obj, key)
    setattr(parent, last, value)
