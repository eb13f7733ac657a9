"""The paper's analysis images: what each item's tokens, and each single token, generate on their own.

An image "from a subset of tokens" keeps the prompt's contextual vectors at the kept rows and fills every
other row (BOS, EOS, other tokens, padding) from the clean-pad baseline at the same position
(`flowcore.patching.interventions.keep_only`); for SDXL the pooled vector is the empty prompt's, as in the paper's code.
Also the small image helpers the CLI and the app share: a labelled grid and a side-by-side pair.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from flowcore.encoders.base import Encoding
from flowcore.errors import InputError
from flowcore.patching.interventions import keep_only
from flowcore.patching.patcher import FlowPatcher
from flowcore.patching.report import FlowResult

if TYPE_CHECKING:
    from PIL.Image import Image


LABEL_CHARS = 22  # a tile is at least this many characters wide, so that a label fits under a small image
LABEL_LINES = 3


@dataclass
class Subset:
    """Rows to keep, with a label for the image generated from them (`rows` None: the whole prompt)."""

    label: str
    rows: list[int] | None


def token_text(result: FlowResult, row: int) -> str:
    """The prompt text of the token at `row`: a word piece is its own characters ("keh" of "bokeh")."""
    for token_row, token in result.layout.token_rows():
        if token_row == row:
            return result.layout.text[token.start : token.end]
    return "<special>"


def token_in_word(result: FlowResult, row: int) -> str:
    """The token at `row` with the word it is part of, where it is only a piece of one: "bokeh (keh)",
    "85mm (mm)"; a whole word is itself ("zebra"). A piece alone says little to a reader."""
    for token_row, token in result.layout.token_rows():
        if token_row == row:
            text, start, end = result.layout.text, token.start, token.end
            while start > 0 and (text[start - 1].isalnum() or text[start - 1] == "_"):
                start -= 1
            while end < len(text) and (text[end].isalnum() or text[end] == "_"):
                end += 1
            piece, word = text[token.start : token.end], text[start:end]
            return piece if word == piece else f"{word} ({piece})"
    return "<special>"


def subsets_for(result: FlowResult, items: bool = True, tokens: bool = True) -> list[Subset]:
    """The whole prompt, then each item's rows, then each single token's row."""
    subsets = [Subset("full prompt", None)]
    if items:
        subsets += [Subset(f"item: {entry.item.text}", entry.rows) for entry in result.report.items if entry.rows]
    if tokens:
        subsets += [Subset(f"token: {token_text(result, row)}", [row]) for row, _ in result.layout.token_rows()]
    return subsets


def subset_encoding(result: FlowResult, subset: Subset, baseline: Encoding) -> Encoding:
    """The original encoding with only `subset.rows` kept and every other row from the baseline."""
    if subset.rows is None:
        return Encoding(result.original, result.pooled_original)
    rows = keep_only(result.original, subset.rows, baseline.rows.to(result.original))
    return Encoding(rows, baseline.pooled)


def explore(
    pipe,
    patcher: FlowPatcher,
    prompt: str,
    *,
    seed: int = 0,
    steps: int = 25,
    items: bool = True,
    tokens: bool = True,
    columns: int = 4,
    progress: bool = True,
    **generate_kwargs,
) -> tuple[Image, list[Subset]]:
    """Generate one image per subset (whole prompt, each item, each token) with the same seed, laid out in a grid.

    Returns the grid and the subsets in tile order.
    """
    from tqdm.auto import tqdm

    from flowcore.models.pipelines import generate

    # 1. Encode the prompt and the clean-pad baseline.
    result = patcher.run(prompt)
    baseline = patcher.baseline()

    # 2. Decide which subsets to render.
    subsets = subsets_for(result, items=items, tokens=tokens)

    # 3. Generate one image per subset, same seed for all.
    images = []
    for subset in tqdm(subsets, desc="explore", disable=not progress):
        encoding = subset_encoding(result, subset, baseline)
        images.append(
            generate(pipe, encoding, seed=seed, steps=steps, encoder=patcher.encoder, progress=False, **generate_kwargs)
        )

    # 4. Lay them out with their labels.
    return make_grid(images, [s.label for s in subsets], columns=columns), subsets


def wrap(text: str, font, width: int) -> list[str]:
    """`text` in lines at most `width` pixels wide in `font` (a longer word gets a line of its own), keeping
    its own line breaks: lines as long as the image allows, not a fixed number of characters."""
    lines = []
    for paragraph in text.split("\n"):
        line = ""
        for word in paragraph.split(" "):
            candidate = f"{line} {word}" if line else word
            if line and font.getlength(candidate) > width:
                lines.append(line)
                line = word
            else:
                line = candidate
        lines.append(line)
    return lines


def make_grid(images: list[Image], labels: list[str], columns: int = 4, title: str | None = None) -> Image:
    """Tiles in rows of `columns`, each with its label underneath (wrapped to the tile, up to three lines), under
    the `title` (wrapped to the grid, every line kept)."""
    from PIL import Image as PILImage
    from PIL import ImageDraw, ImageFont

    if not images:
        raise InputError("`images` is empty: nothing to lay out.")
    font = ImageFont.load_default(size=11)
    width, height = images[0].size
    line_height = 12
    label_height = LABEL_LINES * line_height + 6
    columns = max(1, min(columns, len(images)))
    n_rows = (len(images) + columns - 1) // columns
    tile_width = max(width, LABEL_CHARS * 6 + 8)
    title_lines = wrap(title, font, columns * tile_width - 8) if title else []
    title_height = (len(title_lines) * line_height + 8) if title else 0
    grid = PILImage.new("RGB", (columns * tile_width, title_height + n_rows * (height + label_height)), "white")
    draw = ImageDraw.Draw(grid)
    for number, line in enumerate(title_lines):
        draw.text((4, 4 + number * line_height), line, fill="black", font=font)
    for index, (image, label) in enumerate(zip(images, labels)):
        x = (index % columns) * tile_width + (tile_width - width) // 2
        y = title_height + (index // columns) * (height + label_height)
        grid.paste(image.convert("RGB").resize((width, height)), (x, y))
        lines = wrap(label, font, tile_width - 8)[:LABEL_LINES]
        for number, line in enumerate(lines):
            draw.text(
                ((index % columns) * tile_width + 4, y + height + 3 + number * line_height),
                line,
                fill="black",
                font=font,
            )
    return grid


def comparison(result: FlowResult, original: Image, patched: Image | None) -> Image:
    """`compare.png`: the original and the patched image side by side, under the prompt as written (markers
    kept) and what was patched; the original alone where `patched` is None (nothing changed, so it would be the
    same image)."""
    done = "; ".join(item.text for item in result.report.patched_items) or "nothing"
    title = f"{result.report.prompt}\npatched: {done}"
    if patched is None:
        return make_grid([original], ["original = patched (no row changed)"], columns=1, title=title)
    return make_grid([original, patched], ["original", "patched (Follow the Flow)"], columns=2, title=title)


def movement(a: torch.Tensor, b: torch.Tensor) -> float:
    """How far a row moved: 1 - cosine similarity (0 = unchanged direction), in float32."""
    return 1.0 - torch.nn.functional.cosine_similarity(a.float(), b.float(), dim=0).item()
