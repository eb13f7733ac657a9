"""The node against the ComfyUI stand-in: patched rows equal ComfyUI's own encode of the item alone (with the
same weights), every other row and the pooled output are `CLIPTextEncode`'s bit for bit, for every family."""

from __future__ import annotations

import tempfile

import comfy_standin
import pytest
import torch
from helpers import PARTS, changed_rows, item_rows, part_offsets, reference, same_pooled
from nodes import CLIPSetLastLayer

from comfyui_nodes.nodes import FollowTheFlowTextEncode

PROMPT = "a crosswalk next to a bus station with a standing zebra"
MARKED = "a crosswalk next to a bus station with a ~standing zebra~"
ATOL = 2e-5


def run(clip, text, mode="Markers only", sensitivity=0.5):
    cond, report, picture = FollowTheFlowTextEncode().encode(clip, text, mode, sensitivity)
    assert len(cond) == 1
    return cond[0][0][0], cond[0][1], report, picture


def check_patched(clip, family, marked_text, plain_text, item_text, alone_text=None):
    """The item's rows equal `alone_text` (default: the item) encoded alone by ComfyUI; the rest is
    CLIPTextEncode's of `plain_text` bit for bit."""
    cond, extras, report, _ = run(clip, marked_text)
    original, pooled = reference(clip, plain_text)
    alone, _ = reference(clip, alone_text or item_text)
    assert cond.shape == original.shape
    assert same_pooled(extras["pooled_output"], pooled)
    expected_changed = []
    offsets = part_offsets(clip, family, plain_text)
    alone_offsets = part_offsets(clip, family, alone_text or item_text)
    for (key, columns, _), offset, alone_offset in zip(PARTS[family], offsets, alone_offsets):
        rows, alone_rows = item_rows(clip, key, plain_text, item_text)
        got = cond[[offset + r for r in rows]][:, columns]
        want = alone[[alone_offset + r for r in alone_rows]][:, columns]
        torch.testing.assert_close(got, want, atol=ATOL, rtol=0)
        expected_changed += [offset + r for r in rows]
    changed = changed_rows(cond, original)
    assert set(changed) <= set(expected_changed), report
    untouched = [r for r in range(cond.shape[0]) if r not in expected_changed]
    assert torch.equal(cond[untouched], original[untouched])
    return cond, report


@pytest.mark.parametrize("family", comfy_standin.FAMILIES)
def test_markers_only_without_markers_is_clip_text_encode(clips, family):
    clip = clips[family]
    cond, extras, report, picture = run(clip, PROMPT)
    original, pooled = reference(clip, PROMPT)
    assert torch.equal(cond, original) and same_pooled(extras["pooled_output"], pooled)
    assert "nothing to patch" in report
    assert picture.ndim == 4 and picture.shape[0] == 1 and picture.shape[-1] == 3


@pytest.mark.parametrize("family", comfy_standin.FAMILIES)
def test_a_marked_item_is_its_own_encode_alone(clips, family):
    _, report = check_patched(clips[family], family, MARKED, PROMPT, "standing zebra")
    assert "Patched: 'standing zebra'" in report


@pytest.mark.parametrize("family", comfy_standin.FAMILIES)
def test_weights_inside_the_item_are_comfyuis_weights_of_the_item_alone(clips, family):
    marked = "a (crosswalk:1.2) next to a bus station with a ~(standing zebra:1.3)~"
    plain = "a (crosswalk:1.2) next to a bus station with a (standing zebra:1.3)"
    check_patched(clips[family], family, marked, plain, "standing zebra", alone_text="(standing zebra:1.3)")


@pytest.mark.parametrize("family", ["sd1", "sdxl", "flux"])
def test_weights_elsewhere_leave_the_item_unweighted(clips, family):
    marked = "a (crosswalk:1.4) next to a ((bus station)) with a ~standing zebra~"
    plain = "a (crosswalk:1.4) next to a ((bus station)) with a standing zebra"
    check_patched(clips[family], family, marked, plain, "standing zebra")


def test_zero_weights_and_escapes(clips):
    marked = r"a (crosswalk:0) next to a \(bus\) station with a ~(standing zebra:0.5)~"
    plain = r"a (crosswalk:0) next to a \(bus\) station with a (standing zebra:0.5)"
    check_patched(clips["sd1"], "sd1", marked, plain, "standing zebra", alone_text="(standing zebra:0.5)")


def test_clip_skip(clips):
    (clip,) = CLIPSetLastLayer().set_last_layer(clips["sd1"], -2)
    check_patched(clip, "sd1", MARKED, PROMPT, "standing zebra")
    (clip,) = CLIPSetLastLayer().set_last_layer(clips["sdxl"], -1)
    check_patched(clip, "sdxl", MARKED, PROMPT, "standing zebra")


def test_lora_on_the_text_encoder(clips):
    base = clips["sd1"]
    lora = base.clone()
    lora.add_patches(comfy_standin.make_lora(base))
    with_lora, _ = check_patched(lora, "sd1", MARKED, PROMPT, "standing zebra")
    without, _ = check_patched(base, "sd1", MARKED, PROMPT, "standing zebra")  # nothing cached across them
    assert not torch.equal(with_lora, without)


@pytest.mark.parametrize("family", ["sd1", "sdxl", "sd3"])
def test_an_embedding_inside_the_item(family):
    folder = tempfile.mkdtemp()
    generator = torch.Generator().manual_seed(3)
    comfy_standin.add_embedding(
        folder,
        "zorb",
        {
            "clip_l": torch.randn(2, 32, generator=generator),
            "clip_g": torch.randn(2, 48, generator=generator),
            "t5xxl": torch.randn(2, 96, generator=generator),
        },
    )
    clip = comfy_standin.make_clip(family, seed=7, embedding_directory=folder)
    marked = "a photo of a ~embedding:zorb cat~ on a sofa"
    plain = "a photo of a embedding:zorb cat on a sofa"
    item = "embedding:zorb cat"
    cond, report = check_patched(clip, family, marked, plain, item)
    assert "Patched: 'embedding:zorb cat'" in report


def test_a_long_prompt_patches_in_its_second_chunk(clips):
    filler = ", ".join(f"word{n}" for n in range(30))
    marked = f"{filler}, a crosswalk next to a bus station with a ~standing zebra~"
    plain = f"{filler}, a crosswalk next to a bus station with a standing zebra"
    cond, _ = check_patched(clips["sdxl"], "sdxl", marked, plain, "standing zebra")
    assert cond.shape[0] == 154


def test_t5_minimum_length_option(clips):
    clip = clips["flux"].clone()
    clip.set_tokenizer_option("t5xxl_min_length", 16)
    check_patched(clip, "flux", MARKED, PROMPT, "standing zebra")


def test_keep_marker_and_empty_prompt(clips):
    cond, _, report, _ = run(clips["sd1"], "a ^standing zebra^ on a ~crosswalk~")
    assert "marked ^keep^" in report
    cond, _, report, _ = run(clips["sd1"], "", mode="Automatic")
    assert torch.equal(cond, reference(clips["sd1"], "")[0])


def test_an_embedding_one_encoder_drops_leaves_the_prompt_unpatched():
    folder = tempfile.mkdtemp()
    comfy_standin.add_embedding(folder, "zorb", {"clip_l": torch.randn(2, 32), "clip_g": torch.randn(2, 48)})
    clip = comfy_standin.make_clip("sd3", seed=7, embedding_directory=folder)
    cond, _, report, _ = run(clip, "a photo of a ~embedding:zorb cat~ on a sofa")
    assert torch.equal(cond, reference(clip, "a photo of a embedding:zorb cat on a sofa")[0])
    assert "left unpatched: an embedding has no vectors of the width of the encoder 't5xxl'" in report
