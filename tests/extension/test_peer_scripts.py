"""Other always-on scripts beside ours.

Regional Prompter rewrites the prompts around ours
(hako-mikan/sd-webui-regional-prompter, scripts/rp.py), imitated in the order the real WebUI runs it (after
Follow the Flow):
- `process`: saves `p.all_prompts`, then rewrites them: region keys -> `BREAK`, and in Latent mode `BREAK` ->
  `AND`, so the WebUI encodes one `AND` sub-prompt per region;
- `process_batch`: writes the saved originals back into this batch's slice of `p.all_prompts`, so the infotext
  shows the prompt as typed, not the text that was encoded.
Each region's items are patched in that region's rows, and every image's infotext names them (found in the real
A1111 1.10.1: the infotext was keyed by the encoded text and named nothing).
"""

from __future__ import annotations

import logging

import pytest
import torch
from conftest import make_webui
from ext_helpers import changed_rows, conds, isolated, on
from modules import errors, scripts


class RegionalPrompterStandIn(scripts.Script):
    def title(self):
        return "RP stand-in"

    def show(self, is_img2img):
        return scripts.AlwaysVisible

    def ui(self, is_img2img):
        import gradio as gr
        from modules.ui_components import InputAccordion

        with InputAccordion(False, label="RP stand-in") as active:
            calc = gr.Radio(["Attention", "Latent"], value="Attention", label="Generation Mode")
        return [active, calc]

    def process(self, p, active, calc):
        self.active = active
        if not active:
            return
        self.saved = p.all_prompts.copy()
        rewritten = [prompt.replace("ADDCOL", "BREAK") for prompt in p.all_prompts]
        if calc == "Latent":
            rewritten = [prompt.replace("BREAK", "AND") for prompt in rewritten]
        p.all_prompts = rewritten

    def process_batch(self, p, active, calc, **kwargs):
        if self.active:
            part = slice(p.iteration * p.batch_size, (p.iteration + 1) * p.batch_size)
            p.all_prompts[part] = self.saved[part]


@pytest.mark.parametrize(
    ("calc", "separator", "part"),
    [("Attention", "ADDCOL", 0), ("Latent", "BREAK", 0), ("Latent", "ADDCOL", 0)],
)
def test_items_named_when_a_peer_rewrites_all_prompts(calc, separator, part):
    plain_webui = make_webui("sd1", with_script=False)
    plain = plain_webui.txt2img(prompt="a dark cave with bats AND a bright full moon", n_iter=2, batch_size=2)
    webui = make_webui("sd1")
    webui.add_script(RegionalPrompterStandIn)
    webui.build_ui()
    res = webui.txt2img(
        prompt=f"a dark cave with ~bats~ {separator} a bright full moon",
        n_iter=2,
        batch_size=2,
        alwayson={**on(), "RP stand-in": [True, calc]},
    )
    if calc == "Latent":  # the rows: patched in the first region's own sub-prompt
        for record in res.sampling_records:
            for image in range(2):
                got, want = conds(record, image, part), conds(plain.sampling_records[0], image, part)
                rows = changed_rows(got, want)
                assert rows == [5] and torch.allclose(got[rows], isolated("bats"), atol=1e-5)
    assert len(res.infotexts) == 4
    for text in res.infotexts:
        assert "FtF patched: bats" in text, text
    assert not errors.reported


class CutoffStandIn(scripts.Script):
    """hnmr293/sd-webui-cutoff as far as we meet it: its `process` hooks the text encoder (not imitated: its
    rows are the WebUI's here) and says so in the infotext."""

    def title(self):
        return "Cutoff stand-in"

    def show(self, is_img2img):
        return scripts.AlwaysVisible

    def ui(self, is_img2img):
        import gradio as gr

        return [gr.Checkbox(False, label="Enabled")]

    def process(self, p, enabled):
        if enabled:
            p.extra_generation_params.update({"Cutoff enabled": True, "Cutoff targets": ["red", "blue"]})


@pytest.mark.parametrize("cutoff", [True, False])
def test_beside_cutoff_the_patched_items_rows_are_ours_and_the_log_says_so(cutoff, caplog):
    webui = make_webui("sd1")
    webui.add_script(CutoffStandIn)
    webui.build_ui()
    with caplog.at_level(logging.WARNING, logger="follow_the_flow"):
        res = webui.txt2img(prompt="a red car, ~blue bats~", alwayson={**on(), "Cutoff stand-in": [cutoff]})
    assert "FtF patched: blue bats" in res.infotexts[0]
    assert caplog.text.count("Cutoff is on too") == (1 if cutoff else 0)
