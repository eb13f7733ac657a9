"""The paper's interventions as plain tensor functions on one encoding of shape `(rows, dim)`.

Each returns a new tensor of the same shape, dtype and device and changes only the rows it names.
`baseline` is the clean-pad encoding: the empty prompt padded to one chunk through the same layer (and final
norm) as the encoding, `(chunk rows, dim)` (77 for CLIP); a row filled "from the baseline" takes the baseline's
row at the same position within its chunk. Never zeros: the denoiser has never seen zero vectors.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from flowcore.errors import EncodingMismatchError


def _check(encoding: torch.Tensor, rows: Sequence[int]) -> None:
    if encoding.ndim != 2:
        raise EncodingMismatchError(f"`encoding` must have shape (rows, dim) but has shape {tuple(encoding.shape)}.")
    bad = [r for r in rows if not 0 <= r < encoding.shape[0]]
    if bad:
        raise EncodingMismatchError(f"Rows {bad} are outside an encoding of {encoding.shape[0]} rows.")


def tile_baseline(baseline: torch.Tensor, n_rows: int) -> torch.Tensor:
    """Repeat a `(chunk rows, dim)` baseline to `(n_rows, dim)`: row r holds the baseline's row r % chunk rows."""
    if baseline.ndim != 2 or not baseline.shape[0] or n_rows % baseline.shape[0]:
        raise EncodingMismatchError(
            f"`baseline` must be one chunk `(chunk rows, dim)` that divides {n_rows} rows, but has shape "
            f"{tuple(baseline.shape)}."
        )
    return baseline.repeat(n_rows // baseline.shape[0], 1)


def patch_rows(encoding: torch.Tensor, rows: Sequence[int], replacement: torch.Tensor) -> torch.Tensor:
    """Copy `replacement` (`(len(rows), dim)`, e.g. an isolated item's token rows) onto `rows`."""
    _check(encoding, rows)
    if replacement.shape != (len(rows), encoding.shape[1]):
        raise EncodingMismatchError(
            f"`replacement` must have shape ({len(rows)}, {encoding.shape[1]}) but has {tuple(replacement.shape)}."
        )
    patched = encoding.clone()
    if rows:
        patched[list(rows)] = replacement.to(device=encoding.device, dtype=encoding.dtype)
    return patched


def fill_from_baseline(encoding: torch.Tensor, rows: Sequence[int], baseline: torch.Tensor) -> torch.Tensor:
    """Overwrite `rows` with the clean-pad baseline at the same positions (e.g. an item's redundant tokens)."""
    _check(encoding, rows)
    tiled = tile_baseline(baseline, encoding.shape[0])
    return patch_rows(encoding, rows, tiled[list(rows)])


def keep_only(encoding: torch.Tensor, keep: Sequence[int], baseline: torch.Tensor) -> torch.Tensor:
    """Generate from a subset of tokens: keep `keep` and fill every other row (BOS, EOS, other tokens,
    padding) from the clean-pad baseline at the same position."""
    _check(encoding, keep)
    kept = set(keep)
    return fill_from_baseline(encoding, [r for r in range(encoding.shape[0]) if r not in kept], baseline)


def remove_redundant(
    encoding: torch.Tensor, item_rows: Sequence[int], representative: Sequence[int], baseline: torch.Tensor
) -> torch.Tensor:
    """Replace an item's non-representative rows with the clean-pad baseline (the paper's redundant-token
    removal); the representative rows, and every row outside the item, are untouched."""
    keep = set(representative)
    return fill_from_baseline(encoding, [r for r in item_rows if r not in keep], baseline)
