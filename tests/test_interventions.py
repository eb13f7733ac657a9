import pytest
import torch

from flowcore.errors import EncodingMismatchError
from flowcore.patching.interventions import fill_from_baseline, keep_only, patch_rows, remove_redundant, tile_baseline


@pytest.fixture()
def encoding():
    torch.manual_seed(0)
    return torch.randn(154, 8, dtype=torch.float16)


@pytest.fixture()
def baseline():
    return torch.arange(77 * 8, dtype=torch.float32).reshape(77, 8)


def test_patch_rows_changes_only_those_rows_and_keeps_dtype(encoding):
    replacement = torch.ones(2, 8, dtype=torch.float32)
    patched = patch_rows(encoding, [3, 80], replacement)
    assert patched.dtype == encoding.dtype and patched.shape == encoding.shape
    assert torch.equal(patched[[3, 80]], replacement.half())
    untouched = [r for r in range(154) if r not in (3, 80)]
    assert torch.equal(patched[untouched], encoding[untouched])
    assert not torch.equal(encoding[3], patched[3])  # the input is not modified


def test_baseline_rows_come_from_the_same_position_in_the_chunk(encoding, baseline):
    tiled = tile_baseline(baseline, 154)
    assert torch.equal(tiled[77 + 5], baseline[5])
    filled = fill_from_baseline(encoding, [5, 82], baseline)
    assert torch.equal(filled[5], baseline[5].half()) and torch.equal(filled[82], baseline[5].half())


def test_keep_only_fills_everything_else_from_the_baseline(encoding, baseline):
    kept = keep_only(encoding, [2, 3], baseline)
    assert torch.equal(kept[[2, 3]], encoding[[2, 3]])
    assert torch.equal(kept[0], baseline[0].half()) and torch.equal(kept[100], baseline[23].half())


def test_remove_redundant_keeps_the_representative_row(encoding, baseline):
    out = remove_redundant(encoding, [4, 5, 6], [6], baseline)
    assert torch.equal(out[6], encoding[6])
    assert torch.equal(out[[4, 5]], baseline[[4, 5]].half())
    assert torch.equal(out[7:], encoding[7:])


def test_bad_shapes_are_clear_errors(encoding, baseline):
    with pytest.raises(EncodingMismatchError, match="outside"):
        patch_rows(encoding, [200], torch.zeros(1, 8))
    with pytest.raises(EncodingMismatchError, match="replacement"):
        patch_rows(encoding, [1, 2], torch.zeros(1, 8))
    with pytest.raises(EncodingMismatchError, match="baseline"):
        keep_only(encoding, [1], baseline[:10])
