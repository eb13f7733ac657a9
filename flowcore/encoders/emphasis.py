"""Emphasis (`(word:1.3)`) applied to an encoding the way the AUTOMATIC1111 WebUI applies it.

The WebUI's documented behaviour (Settings -> Stable Diffusion -> "Emphasis mode"), after the text transformer:
- "Original": multiply each token's row by its weight, then rescale the chunk so that the mean of all its
  values is what it was before (one factor per chunk and per text encoder: SDXL's CLIP-L and CLIP-G each
  rescale their own columns);
- "No norm": multiply only;
- "Ignore": leave the rows as encoded (the brackets are still removed from the text).
Start, end and padding rows have weight 1. The pooled vector is left alone.

Patched rows get the factors of the rows they replace, computed from the prompt's own encoding, as the
WebUI extension does: an item's emphasis survives its patch, and unpatched rows are exactly the WebUI's.
"""

from __future__ import annotations

import torch

from flowcore.encoders.layout import PromptLayout
from flowcore.errors import OptionsError
from flowcore.prompts.prompt_syntax import ParsedPrompt

EMPHASIS_CHOICES = ("original", "no norm", "ignore")


def check_emphasis(emphasis: str) -> str:
    """`emphasis` lower-cased if it is one of `EMPHASIS_CHOICES`, else `OptionsError`."""
    mode = emphasis.lower() if isinstance(emphasis, str) else emphasis
    if mode not in EMPHASIS_CHOICES:
        raise OptionsError(f"`emphasis` must be one of {EMPHASIS_CHOICES} but is {emphasis!r}.")
    return mode


def row_weights(layout: PromptLayout, parsed: ParsedPrompt) -> torch.Tensor:
    """Each row's emphasis weight `(rows,)`: its token's fragment weight, 1 at start, end and padding rows."""
    weights = torch.ones(layout.n_rows)
    for row, token in layout.token_rows():
        weights[row] = parsed.weight_at(token.start)
    return weights


def emphasis_scale(
    rows: torch.Tensor, weights: torch.Tensor, chunk_rows: int, widths: list[int], emphasis: str = "original"
) -> torch.Tensor:
    """The factor of every value `(rows, dim)` that turns the encoding `rows` into the WebUI's emphasized one.

    Args:
        rows (`torch.Tensor` of shape `(rows, dim)`): the encoding without emphasis.
        weights (`torch.Tensor` of shape `(rows,)`): each row's emphasis weight (`row_weights`).
        chunk_rows (`int`): rows per chunk (77 for CLIP); each chunk is rescaled on its own.
        widths (`list[int]`): the widths of the concatenated text encoders (`[768, 1280]` for SDXL).
        emphasis (`str`): "original", "no norm" or "ignore".
    """
    n_rows, dim = rows.shape
    if sum(widths) != dim:
        widths = [dim]
    scale = weights.to(device=rows.device, dtype=torch.float32)[:, None].expand(n_rows, dim).clone()
    if emphasis == "ignore":
        return torch.ones_like(scale)
    if emphasis == "no norm":
        return scale
    values = rows.float()
    for first_row in range(0, n_rows, chunk_rows):
        chunk = slice(first_row, first_row + chunk_rows)
        first = 0
        for width in widths:
            block = (chunk, slice(first, first + width))
            before, after = values[block].mean(), (values[block] * scale[block]).mean()
            scale[block] *= before / after if after != 0 else 1.0
            first += width
    return scale


def encoder_widths(encoder, dim: int) -> list[int]:
    """The widths of an encoder's concatenated text transformers (one block of `dim` where it has no towers)."""
    towers = getattr(encoder, "towers", None)
    widths = [int(tower.width) for tower in towers] if towers else [dim]
    return widths if sum(widths) == dim else [dim]
