"""The argument table drives ui(), the API order, the infotext, the paste fields and the X/Y/Z axes."""

from __future__ import annotations

import dataclasses
import re

import pytest
import torch
from conftest import make_webui
from ext_helpers import TITLE, conds, on
from modules import errors

from flowcore.patching.options import FlowOptions
from follow_the_flow_webui.args import ARG_TABLE, FlowArgs, from_infotext, paste_getter


def parse_infotext(text: str) -> dict:
    """The parameters line of an infotext as the WebUI's parser reads it (no quoted values here)."""
    last = text.strip().splitlines()[-1]
    return dict(re.findall(r"\s*([\w /\-]+): ([^,]+)(?:,|$)", last))


def paste(script, params: dict) -> dict:
    """What the WebUI's paste does with `script.infotext_fields`: call each getter, None = no change."""
    return {component.label or "enabled": getter(params) for component, getter in script.infotext_fields}


def our_script(webui):
    runner = webui.runner or webui.build_ui()
    return runner.script(TITLE)


def test_table_dataclass_and_ui_agree(webui):
    assert [f.name for f in dataclasses.fields(FlowArgs)] == [spec.field for spec in ARG_TABLE]
    assert [f.default for f in dataclasses.fields(FlowArgs)] == [spec.default for spec in ARG_TABLE]
    script = our_script(webui)
    components = script.ui(False)
    assert [c.value for c in components] == [spec.default for spec in ARG_TABLE]
    assert [c.label for c in components[1:]] == [spec.ui_label for spec in ARG_TABLE[1:]]
    assert [c.info for c in components[1:]] == [spec.info or None for spec in ARG_TABLE[1:]]
    assert "1 in 10 at 0.5" in components[2].info  # the sensitivity says what it means
    assert script.paste_field_names == [spec.label for spec in ARG_TABLE]
    assert len(script.infotext_fields) == len(ARG_TABLE)
    assert components[0].get_block_name() == "checkbox" and components[0].value is False  # off by default


def test_api_arg_order_and_partial_lists(webui):
    script = our_script(webui)
    args = webui.script_args({TITLE: [True, "markers", 0.7]})
    values = args[script.args_from : script.args_to]
    assert values == [True, "markers", 0.7, "leave", False, False, False]
    assert FlowArgs.from_values(values) == FlowArgs(enabled=True, mode="Markers only", sensitivity=0.7)


@pytest.mark.parametrize(
    ("sent", "mode", "core"),
    [
        ("Automatic", "Automatic", "auto"),
        ("auto", "Automatic", "auto"),
        ("Markers only", "Markers only", "markers"),
        ("markers", "Markers only", "markers"),
        ("Every item", "Every item", "every"),
        ("every", "Every item", "every"),
        ("ALL", "Every item", "every"),
    ],
)
def test_modes_and_their_api_aliases(sent, mode, core):
    args = FlowArgs.from_values([True, sent])
    assert args.mode == mode and args.flow_options().mode == core


def test_api_lists_written_before_the_last_arguments_still_work():
    old = [True, "Markers only", 0.7, "leave", True, True]  # before `patch_style_tags` was added
    assert FlowArgs.from_values(old) == FlowArgs(True, "Markers only", 0.7, "leave", True, True, False)
    assert FlowArgs.from_values([True, "every", 0.5, "leave", False, False, True]).flow_options() == FlowOptions(
        mode="every", patch_style_tags=True
    )


def test_invalid_api_values_fall_back_to_defaults(caplog):
    args = FlowArgs.from_values([True, "sideways", 7])
    assert args == FlowArgs(enabled=True)
    assert "`mode`" in caplog.text and "`sensitivity`" in caplog.text


def test_infotext_round_trip(webui):
    res = webui.txt2img(prompt="a ~standing zebra~", alwayson=on(sensitivity=0.8, remove_redundant=True))
    params = parse_infotext(res.infotexts[0])
    assert params[TITLE] == "True" and params["FtF sensitivity"] == "0.8"
    assert "FtF tail" not in params  # defaults are left out
    restored = from_infotext(params)
    assert restored == FlowArgs(True, "Markers only", 0.8, "leave", True, False)
    pasted = paste(our_script(webui), params)
    assert list(pasted.values()) == [True, "Markers only", 0.8, "leave", True, False, False]
    # infotext of an image made without the extension: the box is turned off, the options left alone
    assert list(paste(our_script(webui), {"Steps": "20"}).values()) == [False] + [None] * (len(ARG_TABLE) - 1)


def test_every_item_infotext_round_trip_and_old_infotexts(webui):
    args = FlowArgs(True, "Every item", patch_style_tags=True)
    params = {key: str(value) for key, value in args.infotext().items()}
    assert params == {TITLE: "True", "FtF mode": "Every item", "FtF patch style tags": "True"}
    assert from_infotext(params) == args
    assert list(paste(our_script(webui), params).values())[1] == "Every item"
    old = {TITLE: "True", "FtF mode": "Markers only", "FtF sensitivity": "0.8"}  # an infotext of an older version
    assert from_infotext(old) == FlowArgs(True, "Markers only", 0.8)


def test_setting_defaults_feed_the_ui(webui):
    from modules import shared

    webui.build_ui()  # fires on_ui_settings
    assert shared.opts.follow_the_flow_sensitivity == 0.5
    shared.opts.follow_the_flow_sensitivity = 0.9
    assert our_script(webui).ui(False)[2].value == 0.9


def test_paste_getters_coerce_strings():
    spec = ARG_TABLE[2]
    assert paste_getter(spec)({TITLE: "True", spec.label: "0.25"}) == 0.25
    with pytest.raises(ValueError):
        paste_getter(spec)({TITLE: "True", spec.label: "2"})


def test_token_counter_ignores_markers(webui):
    plain = webui.count_tokens("a crosswalk next to a standing zebra")
    assert webui.count_tokens("a crosswalk next to a ~standing zebra~ and ^bats^") == webui.count_tokens(
        "a crosswalk next to a standing zebra and bats"
    )
    assert webui.count_tokens("a crosswalk next to a ~standing zebra~") == plain
    assert webui.count_tokens("~blurry~", is_positive=False)[0] > webui.count_tokens("blurry", is_positive=False)[0]


def test_xyz_axes_registered_and_applied(webui):
    module = webui.xyz_grid_module()
    labels = [option.label for option in module.axis_options]
    axes = [f"[Follow the Flow] {spec.axis}" for spec in ARG_TABLE if spec.axis]
    assert axes == ["[Follow the Flow] Enabled", "[Follow the Flow] Mode", "[Follow the Flow] Sensitivity"]
    assert all(labels.count(axis) == 1 for axis in axes)
    mode_axis = next(o for o in module.axis_options if o.label == axes[1])
    assert mode_axis.choices() == ["Automatic", "Markers only", "Every item"]
    enabled_axis = next(o for o in module.axis_options if o.label == axes[0])
    p = webui.make_p(prompt="a crosswalk next to a ~standing zebra~")  # box off in the UI
    on_, off = module.run_axis(p, enabled_axis, ["True", "False"])  # cells share p's dicts (shallow copies)
    assert not errors.reported
    assert "FtF patched: standing zebra" in on_.infotexts[0]
    assert TITLE not in off.infotexts[0] and "FtF patched" not in off.infotexts[0]
    records = off.sampling_records  # the cells share one list of records too
    assert not torch.equal(conds(records[0]), conds(records[1]))


def test_xyz_axes_wait_for_before_ui(monkeypatch):
    from modules import script_callbacks

    import follow_the_flow_webui

    registered = []
    monkeypatch.setattr(script_callbacks, "on_before_ui", lambda fn, name=None: registered.append(fn), raising=False)
    webui = make_webui("sd1", with_script=False)
    follow_the_flow_webui.register_callbacks()
    assert len(registered) == 1
    assert registered[0]() == 3 and registered[0]() == 0  # added once
    assert webui.xyz_grid_module()


SIX_COLOURS = "a cute girl, white shirt with green tie, red shoes, blue hair, yellow eyes, pink skirt"
COLOUR_ITEMS = "cute girl; white shirt; green tie; red shoes; blue hair; yellow eyes; pink skirt"


def test_every_item_mode_patches_every_colour_item(webui):
    res = webui.txt2img(prompt=SIX_COLOURS, alwayson=on("Every item"))
    assert not errors.reported
    params = parse_infotext(res.infotexts[0])
    assert params["FtF mode"] == "Every item"
    assert res.infotexts[0].count(f"FtF patched: {COLOUR_ITEMS}") == 1
