"""Helpers shared by the extension's tests."""

from __future__ import annotations

import torch
from modules import shared

from flowcore.patching.patcher import FlowPatcher

TITLE = "Follow the Flow"


def on(mode="Markers only", **options):
    """API-style args: enabled, then the table's order (see extension.args.ARG_TABLE)."""
    values = {"mode": mode, "sensitivity": 0.5, "tail": "leave", "remove_redundant": False, "show_report": False}
    values.update(options)
    return {
        TITLE: [
            True,
            values["mode"],
            values["sensitivity"],
            values["tail"],
            values["remove_redundant"],
            values["show_report"],
        ]
    }


def crossattn(cond):
    return cond["crossattn"] if isinstance(cond, dict) else cond


def isolated(text):
    """`text` encoded alone by the WebUI model: its token rows 1..k `(k, dim)`."""
    model = shared.sd_model
    with torch.no_grad():
        cond = crossattn(model.get_learned_conditioning([text]))[0]
    chunks, _ = text_encoder().tokenize_line(text)
    k = chunks[0].tokens.index(text_encoder().id_end) - 1  # textual-inversion vectors count as tokens
    return cond[1 : 1 + k]


def text_encoder():
    """The WebUI's hijacked text encoder with `tokenize_line` (SDXL: CLIP-L)."""
    model = shared.sd_model
    return model.conditioner.embedders[0] if getattr(model, "is_sdxl", False) else model.cond_stage_model


def changed_rows(patched, original):
    return (crossattn(patched) != crossattn(original)).any(dim=1).nonzero().flatten().tolist()


def conds(record, image=0, part=0, entry=0):
    return record.c.batch[image][part].schedules[entry].cond


def captured_reports(monkeypatch) -> list:
    """Every report the extension's patcher produces from now on."""
    reports = []
    original = FlowPatcher.patch

    def patch(self, *args, **kwargs):
        result = original(self, *args, **kwargs)
        reports.append(result.report)
        return result

    monkeypatch.setattr(FlowPatcher, "patch", patch)
    return reports
