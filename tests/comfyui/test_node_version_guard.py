"""Inside a ComfyUI whose environment holds a version flowcore cannot work with: one warning, the conditioning
exactly `CLIPTextEncode`'s, the reason in the node's report."""

from __future__ import annotations

import logging

import torch
from helpers import reference

from comfyui_nodes import conditioning
from comfyui_nodes.nodes import FollowTheFlowTextEncode

PROBLEM = "unsupported versions: numpy 1.22.4 (flowcore needs >= 1.23); images are unpatched until ..."


def test_an_unsupported_version_gives_clip_text_encode_with_one_warning(clips, monkeypatch, caplog):
    monkeypatch.setattr(conditioning, "version_problem", lambda: PROBLEM)
    conditioning._warn_once.cache_clear()
    prompt = "a crosswalk next to a ~standing zebra~"
    with caplog.at_level(logging.WARNING, logger="follow_the_flow"):
        runs = [FollowTheFlowTextEncode().encode(clips["sd1"], prompt, "Automatic", 1.0) for _ in range(2)]
    assert [r.getMessage() for r in caplog.records] == [f"[Follow the Flow] {PROBLEM}"]
    for cond, report, _ in runs:
        assert torch.equal(cond[0][0][0], reference(clips["sd1"], prompt.replace("~", ""))[0])
        assert f"Problem: {PROBLEM}" in report
