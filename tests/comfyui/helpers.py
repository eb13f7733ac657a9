"""Independent references for the node tests: ComfyUI's own encodes (the stand-in's CLIPTextEncode) and where a
text's tokens sit in them, found from the tokenizer's output alone."""

from __future__ import annotations

import comfy_standin  # noqa: F401
import torch
from nodes import CLIPTextEncode

# Per family, the parts of the conditioning: (tokenizer key, columns, leading start token)
PARTS = {
    "sd1": [("l", slice(0, 32), 1)],
    "sd2": [("h", slice(0, 40), 1)],
    "sdxl": [("l", slice(0, 80), 1)],
    "sd3": [("l", slice(0, 80), 1), ("t5xxl", slice(0, 96), 0)],
    "flux": [("t5xxl", slice(0, 96), 0)],
    "chroma": [("t5xxl", slice(0, 96), 0)],
}


def reference(clip, text):
    """`CLIPTextEncode`'s conditioning of `text`: (cond (rows, width), pooled)."""
    cond, extras = CLIPTextEncode().encode(clip, text)[0][0]
    return cond[0], extras["pooled_output"]


def _same(a, b) -> bool:
    if torch.is_tensor(a) or torch.is_tensor(b):
        return torch.is_tensor(a) and torch.is_tensor(b) and torch.equal(a, b)
    return a == b


def same_pooled(a, b) -> bool:
    """Pooled outputs bit-identical, or both absent (PixArt / Chroma have none)."""
    return _same(a, b)


def part_offsets(clip, family, text):
    """Where each part's rows start in the conditioning of `text`."""
    tokens = clip.tokenize(text)
    offsets, row = [], 0
    for key, _, _ in PARTS[family]:
        offsets.append(row)
        row += sum(len(chunk) for chunk in tokens[key])
    return offsets


def item_rows(clip, key, text, item):
    """Rows of `item`'s tokens (as `item` alone tokenizes) in `text`'s chunks of one key, and their rows in the
    encode of `item` alone."""

    def words(t):
        found = []
        for c, chunk in enumerate(clip.tokenize(t, return_word_ids=True)[key]):
            found += [(c * len(chunk) + p, token) for p, (token, _, word) in enumerate(chunk) if word != 0]
        return found

    prompt, alone = words(text), words(item)
    for start in range(len(prompt) - len(alone) + 1):
        if all(_same(prompt[start + n][1], alone[n][1]) for n in range(len(alone))):
            return [row for row, _ in prompt[start : start + len(alone)]], [row for row, _ in alone]
    raise AssertionError(f"{item!r} not found in {text!r}")


def changed_rows(a, b):
    return (a != b).any(dim=-1).nonzero().flatten().tolist()
