"""Beside ADetailer (Bing-su/adetailer v25.3.0, scripts/!adetailer.py), imitated where it meets us.

In `postprocess_image` ADetailer inpaints each detected region with a processing object of its own (`_ad_inner`)
that gets a copy of the generation's script arguments but, by default, only the always-on scripts whose file
name (stem) is in its setting `ad_script_names` (its own default list when unset). Its prompt is its own, or the
image's prompt from `p.all_prompts` (markers and all) when left empty. Around its passes it runs every script's
`postprocess` on a copy of `p` (first image of a batch, before the passes) and `before_process` + `process` on
another copy (last image, after them). Found in the real A1111 1.10.1: without Follow the Flow in that list,
the inpaint pass encoded `~bats~` with its tildes, unpatched; and the `process` re-run on the copy took "FtF
patched" out of the infotext entries the copy shares with `p`.
"""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from conftest import ROOT, make_webui
from ext_helpers import changed_rows, conds, isolated, on
from modules import errors, processing, script_callbacks, scripts
from modules.options import OptionInfo
from modules.shared import opts

from follow_the_flow_webui import adetailer

AD_DEFAULT = "dynamic_prompting,dynamic_thresholding,lora_block_weight,negpip,wildcard_recursive,wildcards"


class ADetailerStandIn(scripts.Script):
    def __init__(self) -> None:
        self.passes: list = []
        self.names_seen: list[str] = []

    def title(self):
        return "ADetailer"

    def show(self, is_img2img):
        return scripts.AlwaysVisible

    def ui(self, is_img2img):
        import gradio as gr

        return [gr.Checkbox(False, label="Enable ADetailer"), gr.Textbox("", label="ad_prompt")]

    @staticmethod
    def on_ui_settings():
        """Its settings, as its `on_ui_settings` adds them (the default list lands in `opts.data`)."""
        opts.add_option(adetailer.SCRIPT_NAMES, OptionInfo(AD_DEFAULT, "Script names to apply to ADetailer"))

    def postprocess_image(self, p, pp, enabled, ad_prompt):
        if not enabled or getattr(p, "_ad_inner", False):
            return
        p.scripts.postprocess(copy.copy(p), processing.Processed(p, [], p.seed, ""))  # need_call_postprocess
        names = opts.data.get(adetailer.SCRIPT_NAMES, AD_DEFAULT)
        self.names_seen.append(names)
        runner = copy.copy(p.scripts)
        wanted = {name.strip() for name in names.split(",")}
        runner.alwayson_scripts = [s for s in p.scripts.alwayson_scripts if Path(s.filename).stem in wanted]
        inner = processing.StableDiffusionProcessingTxt2Img(
            prompt=ad_prompt or p.all_prompts[len(self.passes)],
            negative_prompt=p.negative_prompt,
            width=p.width,
            height=p.height,
            steps=p.steps,
            seed=p.seed,
        )
        inner.is_api = True
        inner.scripts, inner.script_args = runner, copy.copy(p.script_args)
        inner._ad_inner = True
        processing.process_images(inner)
        self.passes.append(inner)
        again = copy.copy(p)  # need_call_process
        p.scripts.before_process(again)
        p.scripts.process(again)


def webui_with_adetailer():
    """The WebUI with our script loaded from its real file name (ADetailer matches script file names)."""
    import follow_the_flow_webui
    from follow_the_flow_webui.conditioning import PENDING
    from follow_the_flow_webui.script import FollowTheFlowScript

    webui = make_webui("sd1", with_script=False)
    PENDING.restore_all()
    webui.add_script(FollowTheFlowScript, path=str(ROOT / "scripts" / "follow_the_flow.py"))
    follow_the_flow_webui.register_callbacks()
    webui.add_script(ADetailerStandIn)
    opts.data.pop(adetailer.SCRIPT_NAMES, None)
    script_callbacks.on_ui_settings(ADetailerStandIn.on_ui_settings)
    runner = webui.build_ui()
    return webui, next(s for s in runner.alwayson_scripts if isinstance(s, ADetailerStandIn))


@pytest.mark.parametrize(
    ("ad_prompt", "item", "encoded"),
    [("", "bats", "a dark cave with bats"), ("a face with ~red eyes~", "red eyes", "a face with red eyes")],
)
@pytest.mark.parametrize("user_list", [None, "negpip"])
def test_adetailer_passes_are_patched_as_their_own_prompt_says(ad_prompt, item, encoded, user_list):
    webui, ad = webui_with_adetailer()
    opts.data[adetailer.SCRIPT_NAMES] = user_list or AD_DEFAULT
    res = webui.txt2img(prompt="a dark cave with ~bats~", alwayson={**on(), "ADetailer": [True, ad_prompt]})
    (inner,) = ad.passes
    assert inner.prompts == [encoded]  # the markers were removed before encoding
    plain = webui.model.get_learned_conditioning([encoded])[0]
    got = conds(inner.sampling_records[0])
    rows = changed_rows(got, plain)
    assert rows and torch.allclose(got[rows], isolated(item), atol=1e-5)
    assert "follow_the_flow" in ad.names_seen[0].split(",")
    assert (user_list or AD_DEFAULT) in ad.names_seen[0]  # the user's own list is kept, ours added
    assert opts.data[adetailer.SCRIPT_NAMES] == (user_list or AD_DEFAULT)  # put back after the generation
    assert "FtF patched: bats" in res.infotexts[0]
    assert not errors.reported


def test_adetailer_list_untouched_when_follow_the_flow_is_off():
    webui, ad = webui_with_adetailer()
    webui.txt2img(prompt="a dark cave with bats", alwayson={"ADetailer": [True, ""]})
    assert ad.names_seen == [AD_DEFAULT] and opts.data[adetailer.SCRIPT_NAMES] == AD_DEFAULT
