"""Items encoded through the WebUI model's own text transformers equal the WebUI's own encodes, in every
family and with everything that changes an encode: clip skip, emphasis, textual inversion, LoRA.

References are the WebUI's `get_learned_conditioning` of the item's text alone (through the stand-in's
hijacked encoders, as the WebUI does it), or the transformer's own forward pass built by hand."""

from __future__ import annotations

import pytest
import standin
import torch
from conftest import make_webui
from ext_helpers import changed_rows, conds, crossattn, isolated, on, text_encoder
from modules import errors, shared

from flowcore.encoders.base import ItemRequest
from follow_the_flow_webui.a1111 import parts_for

PLAIN = "a crosswalk next to a standing zebra"
MARKED = "a crosswalk next to a ~standing zebra~"
ZEBRA_ROWS = [7, 8]  # BOS, a, cross, walk, next, to, a | standing, zebra


def patched_and_reference(family: str, marked: str, plain: str, settings: dict | None = None):
    """The first pass's cond with the extension on `marked`, and without it on `plain` (same weights)."""
    reference = make_webui(family, with_script=False)
    shared.opts.data.update(settings or {})
    ref = reference.txt2img(prompt=plain).sampling_records[0]
    webui = make_webui(family)
    shared.opts.data.update(settings or {})
    got = webui.txt2img(prompt=marked, alwayson=on()).sampling_records[0]
    return got, ref


@pytest.mark.parametrize("family", ["sd1", "sd2", "sdxl"])
def test_marked_rows_equal_the_webuis_own_encode_of_the_item_alone(family):
    got, ref = patched_and_reference(family, MARKED, PLAIN)
    assert changed_rows(conds(got), conds(ref)) == ZEBRA_ROWS  # every other row keeps its bits
    torch.testing.assert_close(crossattn(conds(got))[ZEBRA_ROWS], isolated("standing zebra"), atol=1e-5, rtol=1e-4)
    if family == "sdxl":  # the pooled vector and the negative stay as encoded
        assert torch.equal(conds(got)["vector"], conds(ref)["vector"])
    assert torch.equal(crossattn(got.uc[0][0].cond), crossattn(ref.uc[0][0].cond))
    assert not errors.reported


@pytest.mark.parametrize(("family", "skip"), [("sd1", 2), ("sdxl", 3)])  # SDXL reads CLIP-L's layer -2 anyway
def test_clip_skip_is_the_webuis(family, skip):
    settings = {"CLIP_stop_at_last_layers": skip, "sdxl_clip_l_skip": True}
    got, ref = patched_and_reference(family, MARKED, PLAIN, settings)
    assert changed_rows(conds(got), conds(ref)) == ZEBRA_ROWS
    torch.testing.assert_close(crossattn(conds(got))[ZEBRA_ROWS], isolated("standing zebra"), atol=1e-5, rtol=1e-4)
    shared.opts.data.update({"CLIP_stop_at_last_layers": 1, "sdxl_clip_l_skip": False})
    assert not torch.allclose(crossattn(conds(got))[ZEBRA_ROWS], isolated("standing zebra"), atol=1e-3)


@pytest.mark.parametrize("family", ["sd1", "sd2", "sdxl"])
def test_emphasis_is_kept_on_patched_rows(family):
    settings = {"emphasis": "No norm"}  # multiply only: the expected rows are exact
    got, ref = patched_and_reference(
        family, "a crosswalk next to a ~(zebra:1.3)~", "a crosswalk next to a (zebra:1.3)", settings
    )
    assert changed_rows(conds(got), conds(ref)) == [7]
    torch.testing.assert_close(crossattn(conds(got))[7], 1.3 * isolated("zebra")[0], atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("family", ["sd1", "sd2", "sdxl"])
def test_textual_inversion_vectors_inside_a_marked_item(family):
    reference = make_webui(family, with_script=False)
    standin.add_embedding("zorb", vectors=2, seed=3)
    ref = reference.txt2img(prompt="a crosswalk next to a standing zorb").sampling_records[0]
    webui = make_webui(family)
    standin.add_embedding("zorb", vectors=2, seed=3)
    got = webui.txt2img(prompt="a crosswalk next to a ~standing zorb~", alwayson=on()).sampling_records[0]
    rows = changed_rows(conds(got), conds(ref))
    assert rows == [7, 8, 9]  # standing, then the embedding's two vectors
    torch.testing.assert_close(crossattn(conds(got))[rows], isolated("standing zorb"), atol=1e-5, rtol=1e-4)
    assert not errors.reported


@pytest.mark.parametrize("family", ["sd1", "sdxl"])
def test_lora_on_the_text_encoder(family):
    lora = "<lora:style:1>"
    reference = make_webui(family, with_script=False)
    standin.add_lora("style", seed=1, scale=0.2)
    ref = reference.txt2img(prompt=f"{lora} {PLAIN}").sampling_records[0]
    alone_with_lora = crossattn(
        reference.txt2img(prompt=f"{lora} standing zebra").sampling_records[0].c.batch[0][0].schedules[0].cond
    )[1:3]
    webui = make_webui(family)
    standin.add_lora("style", seed=1, scale=0.2)
    got = webui.txt2img(prompt=f"{lora} {MARKED}", alwayson=on()).sampling_records[0]
    assert changed_rows(conds(got), conds(ref)) == ZEBRA_ROWS
    torch.testing.assert_close(crossattn(conds(got))[ZEBRA_ROWS], alone_with_lora, atol=1e-5, rtol=1e-4)
    # the WebUI strips the LoRA tag from the prompts it encodes, not from those the infotext reads
    infotext = webui.txt2img(prompt=f"{lora} {MARKED}", alwayson=on()).infotexts[0]
    assert "FtF patched: standing zebra" in infotext
    plain = make_webui(family, with_script=False)
    without = crossattn(plain.txt2img(prompt="standing zebra").sampling_records[0].c.batch[0][0].schedules[0].cond)[1:3]
    assert not torch.allclose(alone_with_lora, without, atol=1e-3)  # the LoRA did change the encode


def test_open_clip_items_alone_sit_at_their_prompt_positions():
    """SD 2's OpenCLIP: an item alone at position 6 equals the module's own forward pass over [BOS, 5 fillers,
    item] in which every row but the fillers' own sees the fillers masked out (so only BOS and the item)."""
    make_webui("sd2")
    encoder = parts_for(shared.sd_model, shared.opts)[0]
    ids = tuple(text_encoder().tokenize(["zebra"])[0])
    (item,) = encoder.encode_isolated([ItemRequest("zebra", ids, start=6)])
    model = shared.sd_model.cond_stage_model.wrapped.model
    sequence = torch.tensor([[49406, 0, 0, 0, 0, 0, *ids]])
    length = sequence.shape[1]
    allowed = torch.ones(length, length).tril().bool()
    allowed[6:, 1:6] = False  # the item does not see the fillers
    mask = torch.zeros(length, length).masked_fill(~allowed, float("-inf"))
    with torch.no_grad():
        x = model.token_embedding.wrapped(sequence) + model.positional_embedding[:length]
        x = x.permute(1, 0, 2)
        for block in model.transformer.resblocks[:-1]:  # the penultimate layer, then ln_final (SD 2)
            x = block(x, attn_mask=mask)
        expected = model.ln_final(x.permute(1, 0, 2))[0, 6:]
    torch.testing.assert_close(item.rows, expected, atol=1e-5, rtol=1e-4)
