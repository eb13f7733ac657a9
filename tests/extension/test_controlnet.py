"""Beside ControlNet (Mikubill/sd-webui-controlnet 1.1.436), imitated where it meets us: its `process` hooks the
UNet and wraps `p.sample`, which puts one row of +1024 (cond) or -1024 (uncond) in front of every cond before
the sampling hooks run (`scripts/hook.py`, `mark_prompt_context`; its UNet hook takes the row off again). Found
in the real A1111 1.10.1: with a unit enabled, the conds had 78 rows for one chunk and were left unpatched.
"""

from __future__ import annotations

import torch
from conftest import make_webui
from ext_helpers import changed_rows, conds, isolated, on
from modules import errors, prompt_parser, scripts

MARK = 1024.0


def mark(schedules: list, sign: float) -> None:
    """`mark_prompt_context` on one list of schedules: a new cond with the mark row first (once)."""
    for n, entry in enumerate(schedules):
        if float((entry.cond[0].abs() - MARK).abs().mean()) < 1e-3:
            continue
        row = torch.zeros_like(entry.cond[:1]) + sign * MARK
        schedules[n] = prompt_parser.ScheduledPromptConditioning(entry.end_at_step, torch.cat([row, entry.cond]))


class ControlNetStandIn(scripts.Script):
    def title(self):
        return "ControlNet"

    def show(self, is_img2img):
        return scripts.AlwaysVisible

    def ui(self, is_img2img):
        import gradio as gr

        return [gr.Checkbox(False, label="Enable")]

    def process(self, p, enabled):
        if not enabled:
            return
        original = p.sample

        def sample(*args, **kwargs):
            for composables in kwargs["conditioning"].batch:
                for composable in composables:
                    mark(composable.schedules, 1.0)
            for schedules in kwargs["unconditional_conditioning"]:
                mark(schedules, -1.0)
            return original(*args, **kwargs)

        p.sample = sample


def test_patched_rows_exact_behind_controlnets_mark_row():
    prompt = "a dark cave with bats"
    plain = make_webui("sd1", with_script=False).model.get_learned_conditioning([prompt])[0]
    webui = make_webui("sd1")
    webui.add_script(ControlNetStandIn)
    webui.build_ui()
    res = webui.txt2img(prompt="a dark cave with ~bats~", alwayson={**on(), "ControlNet": [True]})
    got = conds(res.sampling_records[0])
    assert got.shape[0] == plain.shape[0] + 1 and torch.all(got[0] == MARK)  # the mark row, left as it was
    rows = changed_rows(got[1:], plain)
    assert rows == [5] and torch.allclose(got[1:][rows], isolated("bats"), atol=1e-5)
    assert "FtF patched: bats" in res.infotexts[0]
    assert not errors.reported
