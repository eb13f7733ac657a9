"""The extension against the WebUI stand-in: what the sampler gets with the box on and off."""

from __future__ import annotations

import importlib
import logging
import sys

import pytest
import torch
from conftest import make_webui
from ext_helpers import TITLE, changed_rows, conds, crossattn, isolated, on
from modules import errors, shared

ZEBRA = "a crosswalk next to a ~standing zebra~"
PLAIN = "a crosswalk next to a standing zebra"


def test_marked_item_gets_its_isolated_rows_everything_else_untouched(plain_webui):
    # the same weights without the extension: the reference (its own class-level caches are reset)
    reference = plain_webui.txt2img(prompt=PLAIN, negative_prompt="blurry", batch_size=2)
    ref = reference.sampling_records[0]
    webui = make_webui("sd1")
    res = webui.txt2img(prompt=ZEBRA, negative_prompt="blurry", batch_size=2, alwayson=on())
    first = res.sampling_records[0]
    for image in range(2):
        rows = changed_rows(conds(first, image), conds(ref, image))
        assert rows == [7, 8]  # BOS, a, cross, walk, next, to, a | standing, zebra
        assert torch.allclose(conds(first, image)[rows], isolated("standing zebra"), atol=1e-5)
    for got, want in zip(first.uc, ref.uc):  # the negative prompt is never patched
        assert torch.equal(got[0].cond, want[0].cond)
    assert not errors.reported
    assert res.infotexts[0].startswith(ZEBRA)  # the markers stay in the infotext: the image reproduces
    assert f"{TITLE}: True" in res.infotexts[0] and "FtF patched: standing zebra" in res.infotexts[0]


def test_box_off_is_bit_identical_and_caches_stay_clean(plain_webui):
    reference = plain_webui.txt2img(prompt=PLAIN, batch_size=2, enable_hr=True, hr_second_pass_steps=2)
    webui = make_webui("sd1")
    off = webui.txt2img(prompt=PLAIN, batch_size=2, enable_hr=True, hr_second_pass_steps=2)
    # a box-on run with the same (marker-free) prompt hits the same cache entries and patches them...
    patched = webui.txt2img(prompt=ZEBRA, batch_size=2, enable_hr=True, hr_second_pass_steps=2, alwayson=on())
    # ...and a later box-off run gets exactly the unpatched conds
    later = webui.txt2img(prompt=PLAIN, batch_size=2, enable_hr=True, hr_second_pass_steps=2)
    for run in (off, later):
        for got, want in zip(run.sampling_records, reference.sampling_records):
            assert torch.equal(got.text_cond[0], want.text_cond[0])
            assert torch.equal(got.text_uncond[0], want.text_uncond[0])
    assert changed_rows(conds(patched.sampling_records[0]), conds(reference.sampling_records[0])) == [7, 8]
    assert changed_rows(conds(patched.sampling_records[1]), conds(reference.sampling_records[1])) == [7, 8]


def test_hires_and_n_iter_patched_once_per_pass(webui, monkeypatch):
    from flowcore.patching.patcher import FlowPatcher

    calls = []
    original = FlowPatcher.patch

    def counting(self, encoding, prompt, **kwargs):
        calls.append(prompt)
        return original(self, encoding, prompt, **kwargs)

    monkeypatch.setattr(FlowPatcher, "patch", counting)
    res = webui.txt2img(prompt=ZEBRA, batch_size=2, n_iter=2, enable_hr=True, hr_second_pass_steps=2, alwayson=on())
    passes = [(r.pass_name, r.iteration) for r in res.sampling_records]
    assert passes == [("first", 0), ("hires", 0), ("first", 1), ("hires", 1)]
    expected = isolated("standing zebra")
    for record in res.sampling_records:
        for image in range(2):
            assert torch.allclose(conds(record, image)[7:9], expected, atol=1e-5)
        assert torch.equal(conds(record, 0), conds(res.sampling_records[0], 0))
    # duplicated prompts share one cond: one core call per pass, not per image
    assert calls == ["a crosswalk next to a ~standing zebra~"] * 4


def test_and_schedules_break_and_long_prompts(plain_webui):
    filler = ", ".join(["green grass"] * 40)  # 80 tokens: the item lands in the second chunk
    prompt = f"a ~red car~ AND a [cat:~striped tiger~:2] on a hill BREAK a blue ~old bus~ AND {filler}, a ~tiny dog~"
    plain = prompt.replace("~", "")
    reference = plain_webui.txt2img(prompt=plain, steps=4)
    res = make_webui("sd1").txt2img(prompt=prompt, steps=4, alwayson=on())
    ref, got = reference.sampling_records[0], res.sampling_records[0]
    assert not errors.reported

    def rows_and_values(part, entry):
        rows = changed_rows(conds(got, 0, part, entry), conds(ref, 0, part, entry))
        return rows, conds(got, 0, part, entry)[rows]

    rows, values = rows_and_values(0, 0)  # "a ~red car~"
    assert rows == [2, 3] and torch.allclose(values, isolated("red car"), atol=1e-5)
    tiger, bus = isolated("striped tiger"), isolated("old bus")
    rows, values = rows_and_values(1, 0)  # up to step 2: "a cat on a hill BREAK a blue ~old bus~"
    assert rows == [77 + 3, 77 + 4]  # the BREAK starts chunk 2: BOS, a, blue | old, bus
    assert torch.allclose(values, bus, atol=1e-5)
    rows, values = rows_and_values(1, 1)  # then: "a ~striped tiger~ on a hill BREAK a blue ~old bus~"
    assert rows == [2, 3, 77 + 3, 77 + 4]
    assert torch.allclose(values, torch.cat([tiger, bus]), atol=1e-5)
    rows, values = rows_and_values(2, 0)  # the long sub-prompt: the item sits in the second chunk
    assert rows and min(rows) > 77 and torch.allclose(values, isolated("tiny dog"), atol=1e-5)


def test_emphasis_is_kept_on_patched_rows(plain_webui):
    shared.opts.emphasis = "No norm"  # multiply only: the expected rows are exact
    ref = plain_webui.txt2img(prompt="a crosswalk next to a (zebra:1.3)").sampling_records[0]
    webui = make_webui("sd1")
    shared.opts.emphasis = "No norm"
    got = webui.txt2img(prompt="a crosswalk next to a ~(zebra:1.3)~", alwayson=on()).sampling_records[0]
    assert changed_rows(conds(got), conds(ref)) == [7]
    assert torch.allclose(conds(got)[7], 1.3 * isolated("zebra")[0], atol=1e-5)


def test_emphasis_original_rescale(webui):
    prompt = "a crosswalk next to a ~(zebra:1.5)~, (grass:0.5)"
    res = webui.txt2img(prompt=prompt, alwayson=on())
    row = conds(res.sampling_records[0])[7]
    alone = isolated("zebra")[0]
    assert torch.nn.functional.cosine_similarity(row, alone, dim=0) > 0.9999
    assert 1.2 < float(row.norm() / alone.norm()) < 1.8  # 1.5 times the chunk's rescale factor


def test_sdxl_dict_conds():
    reference = make_webui("sdxl", with_script=False).txt2img(prompt=PLAIN, width=128, height=128)
    res = make_webui("sdxl").txt2img(prompt=ZEBRA, width=128, height=128, alwayson=on())
    ref, got = reference.sampling_records[0], res.sampling_records[0]
    assert changed_rows(conds(got), conds(ref)) == [7, 8]
    assert torch.allclose(conds(got)["crossattn"][7:9], isolated("standing zebra"), atol=1e-5)
    assert torch.equal(conds(got)["vector"], conds(ref)["vector"])
    assert torch.equal(got.uc[0][0].cond["crossattn"], ref.uc[0][0].cond["crossattn"])
    assert not errors.reported


def test_automatic_detection_runs_and_reports(webui):
    res = webui.txt2img(prompt=PLAIN, alwayson=on("Automatic", sensitivity=1.0, show_report=True))
    assert not errors.reported
    comment = res.p.comments and next(iter(res.p.comments))
    assert comment.startswith("Follow the Flow, first pass:") and "'standing zebra'" in comment


def test_an_error_inside_leaves_the_image_unpatched_with_one_warning(plain_webui, monkeypatch, caplog):
    from flowcore.patching.patcher import FlowPatcher

    reference = plain_webui.txt2img(prompt=PLAIN).sampling_records[0]
    webui = make_webui("sd1")

    def broken(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(FlowPatcher, "patch", broken)
    with caplog.at_level(logging.WARNING, logger="follow_the_flow"):
        res = webui.txt2img(prompt=ZEBRA, alwayson=on())
    assert torch.equal(res.sampling_records[0].text_cond[0], reference.text_cond[0])
    warnings = [r for r in caplog.records if r.name == "follow_the_flow"]
    assert len(warnings) == 1 and "boom" in warnings[0].getMessage()
    assert not errors.reported


def test_unmappable_prompt_is_skipped_with_a_warning(webui, caplog):
    with caplog.at_level(logging.WARNING, logger="follow_the_flow"):
        res = webui.txt2img(prompt="a ~cat AND a dog~", alwayson=on())  # a marker across AND
    assert len([r for r in caplog.records if r.name == "follow_the_flow"]) == 1
    assert not errors.reported and res.sampling_records


def test_forge_models_without_known_engines_or_unsupported_models_skip_with_one_message(webui, caplog):
    from types import SimpleNamespace

    from follow_the_flow_webui import script

    forge_model = SimpleNamespace(forge_objects=object(), cond_stage_model=None)  # Forge's, no engine we know
    assert script.is_forge(forge_model) and "Forge" in script.unsupported_reason(forge_model)
    script._said.clear()
    webui.model.is_sd1, webui.model.is_sd3 = False, True
    with caplog.at_level(logging.WARNING, logger="follow_the_flow"):
        webui.txt2img(prompt=ZEBRA, alwayson=on())
        webui.txt2img(prompt=ZEBRA, alwayson=on())
    messages = [r.getMessage() for r in caplog.records if r.name == "follow_the_flow"]
    assert len(messages) == 1 and "sd3" in messages[0]


def test_a_reforge_model_with_a1111s_text_encoder_takes_the_a1111_path(webui):
    """reForge's models carry `forge_objects` but keep A1111's `cond_stage_model`."""
    webui.model.forge_objects = object()
    try:
        res = webui.txt2img(prompt=ZEBRA, alwayson=on())
    finally:
        del webui.model.forge_objects
    assert "FtF patched: standing zebra" in res.infotexts[0]


def test_script_file_loads_and_registers(webui):
    from pathlib import Path

    module = webui.load_script_file(Path(__file__).resolve().parents[2] / "scripts" / "follow_the_flow.py")
    assert module.FollowTheFlowScript.__name__ == "FollowTheFlowScript"


def test_script_file_finds_its_glue_beside_another_extensions_package(webui, tmp_path, monkeypatch):
    """Another extension's folder on `sys.path` first, with a package named `extension` already imported (a
    common folder name): the entry script still gets our glue, which has a name of its own."""
    from pathlib import Path

    decoy = tmp_path / "extension"
    decoy.mkdir()
    (decoy / "__init__.py").write_text("def register_callbacks():\n    raise RuntimeError('the decoy')\n")
    (decoy / "script.py").write_text("FollowTheFlowScript = None\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "extension", raising=False)
    importlib.import_module("extension")
    module = webui.load_script_file(Path(__file__).resolve().parents[2] / "scripts" / "follow_the_flow.py")
    assert module.FollowTheFlowScript.__module__ == "follow_the_flow_webui.script"
    assert sys.modules["extension"].__file__ == str(decoy / "__init__.py")  # theirs is left as it was


@pytest.mark.parametrize("family", ["sd1", "sdxl"])
def test_refiner_switch_does_not_break(family):
    from standin import make_sd1_model, make_sdxl_model

    webui = make_webui(family)
    refiner = make_sd1_model(seed=5, name="refiner") if family == "sd1" else make_sdxl_model(seed=5, name="refiner")
    res = webui.txt2img(prompt=ZEBRA, refiner_checkpoint=refiner, refiner_switch_at=0.5, alwayson=on())
    assert res.sampling_records[0].refiner_switched and not errors.reported
    assert crossattn(res.sampling_records[0].c.batch[0][0].schedules[0].cond)[7:9].shape[0] == 2
