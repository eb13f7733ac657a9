"""The extension in Forge (against the stand-in's Forge mode): SD 1.5, SDXL, SD 3.5 (CLIP and T5) and Flux.

References are Forge's own encodes through its text engines (the item's text alone), and a run of the same
prompt without the extension (every other row, the pooled vector and the negative must keep their bits)."""

from __future__ import annotations

import logging

import pytest
import standin
import torch
from conftest import make_webui
from ext_helpers import captured_reports, changed_rows, conds, crossattn, on
from modules import errors, shared

PLAIN = "a crosswalk next to a standing zebra"
MARKED = "a crosswalk next to a ~standing zebra~"
ZEBRA_CLIP_ROWS = [7, 8]  # BOS, a, cross, walk, next, to, a | standing, zebra


def run(family: str, prompt: str, alwayson=None, settings: dict | None = None, **kwargs):
    """The first pass of a Forge generation (a fresh WebUI, so caches and settings start clean)."""
    webui = make_webui(family, with_script=alwayson is not None)
    shared.opts.data.update(settings or {})
    return webui.txt2img(prompt=prompt, alwayson=alwayson, **kwargs).sampling_records[0]


def clip_alone(text: str) -> torch.Tensor:
    """Forge's own CLIP encode of `text` alone (SD 1.5: its engine; SDXL, SD 3.5: L and G side by side):
    token rows 1..k."""
    model = shared.sd_model
    engine = getattr(model, "text_processing_engine", None) or model.text_processing_engine_l
    k = len(engine.tokenize([text])[0])
    names = (
        ["text_processing_engine"]
        if hasattr(model, "text_processing_engine")
        else ["text_processing_engine_l", "text_processing_engine_g"]
    )
    outputs = []
    with torch.inference_mode():
        for name in names:
            out = getattr(model, name)([text])
            outputs.append(out[0] if isinstance(out, tuple) else out)  # engines that pool return (rows, pooled)
    return torch.cat(outputs, -1)[0, 1 : 1 + k].clone()


def t5_alone(text: str) -> torch.Tensor:
    """Forge's own T5 encode of `text` alone: its token rows."""
    engine = shared.sd_model.text_processing_engine_t5
    k = len(engine.tokenize([text])[0])
    with torch.inference_mode():
        return engine([text])[0, :k].clone()


@pytest.mark.parametrize("family", ["forge-sd15", "forge-sdxl"])
def test_clip_families_patch_the_marked_item_with_forges_own_encode_of_it(family):
    ref = run(family, PLAIN)
    got = run(family, MARKED, on())
    assert changed_rows(conds(got), conds(ref)) == ZEBRA_CLIP_ROWS
    torch.testing.assert_close(
        crossattn(conds(got))[ZEBRA_CLIP_ROWS], clip_alone("standing zebra"), atol=1e-5, rtol=1e-4
    )
    if isinstance(conds(got), dict):
        assert torch.equal(conds(got)["vector"], conds(ref)["vector"])
    assert torch.equal(crossattn(got.uc[0][0].cond), crossattn(ref.uc[0][0].cond))
    assert not errors.reported


@pytest.mark.parametrize("t5", [True, False])
def test_sd35_patches_the_item_in_the_clip_rows_and_in_the_t5_rows(t5):
    settings = {"sd3_enable_t5": t5}
    ref = run("forge-sd35", PLAIN, settings=settings)
    got = run("forge-sd35", MARKED, on(), settings=settings)
    rows = changed_rows(conds(got), conds(ref))
    t5_start = crossattn(conds(got)).shape[0] - 256
    clip_rows = [r for r in rows if r < t5_start]
    assert clip_rows == ZEBRA_CLIP_ROWS
    width = clip_alone("zebra").shape[-1]
    torch.testing.assert_close(
        crossattn(conds(got))[clip_rows, :width], clip_alone("standing zebra"), atol=1e-5, rtol=1e-4
    )
    assert torch.equal(crossattn(conds(got))[clip_rows, width:], crossattn(conds(ref))[clip_rows, width:])  # padding
    t5_rows = [r - t5_start for r in rows if r >= t5_start]
    if t5:
        alone = t5_alone("standing zebra")
        assert len(t5_rows) == len(alone)
        torch.testing.assert_close(crossattn(conds(got))[[t5_start + r for r in t5_rows]], alone, atol=1e-5, rtol=1e-4)
    else:
        assert t5_rows == []  # T5 disabled: its zero rows stay as they are
    assert torch.equal(conds(got)["vector"], conds(ref)["vector"])
    assert not errors.reported


def test_flux_patches_t5_rows_at_cfg_1_without_a_negative():
    ref = run("forge-flux", PLAIN, cfg_scale=1)
    got = run("forge-flux", MARKED, on(), cfg_scale=1)
    assert got.uc is None
    rows = changed_rows(conds(got), conds(ref))
    alone = t5_alone("standing zebra")
    assert len(rows) == len(alone) and rows == list(range(rows[0], rows[0] + len(alone)))
    torch.testing.assert_close(crossattn(conds(got))[rows], alone, atol=1e-5, rtol=1e-4)
    assert torch.equal(conds(got)["vector"], conds(ref)["vector"])
    assert torch.equal(conds(got)["guidance"], conds(ref)["guidance"])
    assert not errors.reported


def test_chroma_t5_without_padding_patches_the_item(caplog):
    """Forge's Chroma builds its T5 engine with `min_length=1`: no padding, so the empty prompt is one row (its
    end token). That row alone must not stop the patch (the real Forge left Chroma unpatched here)."""

    def chroma(prompt: str, alwayson=None):
        webui = make_webui("forge-flux", with_script=alwayson is not None)
        shared.sd_model.text_processing_engine_t5.min_length = 1
        return webui.txt2img(prompt=prompt, alwayson=alwayson, cfg_scale=1).sampling_records[0]

    ref = chroma(PLAIN)
    with caplog.at_level(logging.WARNING):
        got = chroma(MARKED, on())
    assert crossattn(conds(got)).shape[0] < 256  # not padded
    rows = changed_rows(conds(got), conds(ref))
    alone = t5_alone("standing zebra")
    assert len(rows) == len(alone)
    torch.testing.assert_close(crossattn(conds(got))[rows], alone, atol=1e-5, rtol=1e-4)
    assert "unpatched" not in caplog.text
    assert not errors.reported


def test_chroma_items_of_different_lengths_each_match_their_encode_alone():
    """Without padding, Forge encodes an item alone at its own length; items batched together must not get
    the longer item's padding rows (the real Forge's Chroma was off on the shorter item of three)."""

    def chroma(prompt: str, alwayson=None):
        webui = make_webui("forge-flux", with_script=alwayson is not None)
        shared.sd_model.text_processing_engine_t5.min_length = 1
        return webui.txt2img(prompt=prompt, alwayson=alwayson, cfg_scale=1).sampling_records[0]

    prompt = "a red crosswalk sign next to a zebra"
    ref = chroma(prompt)
    got = chroma("a ~red crosswalk sign~ next to a ~zebra~", on())
    rows = changed_rows(conds(got), conds(ref))
    long, short = t5_alone("red crosswalk sign"), t5_alone("zebra")
    assert len(long) > len(short) and len(rows) == len(long) + len(short)
    torch.testing.assert_close(crossattn(conds(got))[rows[: len(long)]], long, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(crossattn(conds(got))[rows[len(long) :]], short, atol=1e-6, rtol=1e-5)
    assert not errors.reported


def test_t5_emphasis_is_kept_on_patched_rows():
    """Forge's "Original" emphasis multiplies T5 rows and rescales each chunk to its mean; the patched rows get
    the same factor."""
    ref = run("forge-flux", "a crosswalk next to a (zebra:1.3)", cfg_scale=1)
    got = run("forge-flux", "a crosswalk next to a ~(zebra:1.3)~", on(), cfg_scale=1)
    rows = changed_rows(conds(got), conds(ref))
    assert rows and all(crossattn(conds(got))[r].abs().sum() > 0 for r in rows)
    alone = t5_alone("zebra")
    scaled = crossattn(conds(got))[rows]
    factor = (scaled / alone).mean()
    torch.testing.assert_close(scaled, alone * factor, atol=1e-4, rtol=1e-3)
    assert 1.2 < float(factor) < 1.4  # the weight 1.3, times a rescale close to 1


def test_hires_passes_are_patched_once_each_and_off_after_on_keeps_the_caches_clean():
    webui = make_webui("forge-sd15")
    res = webui.txt2img(prompt=MARKED, enable_hr=True, hr_second_pass_steps=2, alwayson=on())
    first, hires = res.sampling_records[:2]
    ref = make_webui("forge-sd15", with_script=False).txt2img(prompt=PLAIN, enable_hr=True, hr_second_pass_steps=2)
    for got, plain in zip((first, hires), ref.sampling_records[:2]):
        assert changed_rows(conds(got), conds(plain)) == ZEBRA_CLIP_ROWS  # the hook ran twice, patched once
    webui.txt2img(prompt=MARKED, alwayson=on())
    off = webui.txt2img(prompt=MARKED).sampling_records[0]  # the box off: markers are plain text
    plain_marked = make_webui("forge-sd15", with_script=False).txt2img(prompt=MARKED).sampling_records[0]
    assert torch.equal(crossattn(conds(off)), crossattn(conds(plain_marked)))
    assert not errors.reported


def test_textual_inversion_and_lora_are_forges(caplog):
    reference = make_webui("forge-sdxl", with_script=False)
    standin.add_embedding("zorb", vectors=2, seed=3)
    standin.add_lora("style", seed=1, scale=0.2)
    ref_res = reference.txt2img(prompt="<lora:style:1> a crosswalk next to a standing zorb")
    ref = ref_res.sampling_records[0]
    webui = make_webui("forge-sdxl")
    standin.add_embedding("zorb", vectors=2, seed=3)
    standin.add_lora("style", seed=1, scale=0.2)
    res = webui.txt2img(prompt="<lora:style:1> a crosswalk next to a ~standing zorb~", alwayson=on())
    got = res.sampling_records[0]
    rows = changed_rows(conds(got), conds(ref))
    assert rows == [7, 8, 9]  # standing, and the embedding's two vectors
    torch.testing.assert_close(crossattn(conds(got))[rows], clip_alone("standing zorb"), atol=1e-5, rtol=1e-4)
    # our encodes write no infotext note of their own ("TI" is Forge's, from its encode of the prompt)
    assert res.p.extra_generation_params.get("TI") == ref_res.p.extra_generation_params.get("TI") is not None
    assert not errors.reported


def test_automatic_mode_scores_in_forge_as_the_core_does(monkeypatch, nlp):
    from flowcore import ClipEncoder, FlowOptions, FlowPatcher

    reports = captured_reports(monkeypatch)
    prompt = "a crosswalk next to a bus station with a standing zebra, a red car with bats"
    run("forge-sd15", prompt, on("Automatic", sensitivity=0.7))
    engine = shared.sd_model.text_processing_engine
    core = FlowPatcher(
        ClipEncoder(engine.tokenizer, engine.text_encoder.transformer), FlowOptions(sensitivity=0.7), nlp=nlp
    )
    expected = core.run(prompt).report
    got = reports[0]
    assert [e.item.text for e in got.items] == [e.item.text for e in expected.items]
    for mine, theirs in zip(got.items, expected.items):
        if theirs.leak_score is not None:
            assert mine.leak_score == pytest.approx(theirs.leak_score, abs=1e-3)
    assert [e.patched for e in got.items] == [e.patched for e in expected.items]


def test_an_unknown_forge_model_is_skipped_with_one_message(monkeypatch, caplog):
    from follow_the_flow_webui import forge, script

    script._said.clear()
    webui = make_webui("forge-sd15")
    monkeypatch.setattr(forge, "engines", lambda sd_model: {})  # a family flowcore does not know
    with caplog.at_level(logging.WARNING, logger="follow_the_flow"):
        webui.txt2img(prompt=MARKED, alwayson=on())
        webui.txt2img(prompt=MARKED, alwayson=on())
    messages = [r.getMessage() for r in caplog.records if r.name == "follow_the_flow"]
    assert len(messages) == 1 and "no text engine" in messages[0]
    assert not errors.reported


def test_sd35_infotext_names_an_item_patched_in_the_clip_and_the_t5_rows_once():
    """Found in the real Forge: "FtF patched: standing zebra; standing zebra" (one name per encoder's part)."""
    webui = make_webui("forge-sd35", with_script=True)
    shared.opts.data.update({"sd3_enable_t5": True})
    res = webui.txt2img(prompt=MARKED, alwayson=on())
    entry = res.infotexts[0].split("FtF patched: ")[1].split(",")[0]
    assert entry == "standing zebra"
