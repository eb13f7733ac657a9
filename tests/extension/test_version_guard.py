"""Inside a WebUI whose venv holds a version flowcore cannot work with: one warning, images unpatched."""

from __future__ import annotations

import logging

import torch
from conftest import make_webui
from ext_helpers import conds, on

from follow_the_flow_webui import script

PROBLEM = "unsupported versions: transformers 4.25.1 (flowcore needs >= 4.30); images are unpatched until ..."


def test_an_unsupported_version_leaves_images_unpatched_with_one_warning(plain_webui, monkeypatch, caplog):
    prompt = "a crosswalk next to a ~standing zebra~"
    reference = plain_webui.txt2img(prompt=prompt.replace("~", ""))
    webui = make_webui("sd1")
    monkeypatch.setattr(script, "version_problem", lambda: PROBLEM)
    script._said.clear()
    with caplog.at_level(logging.WARNING, logger="follow_the_flow"):
        results = [webui.txt2img(prompt=prompt, alwayson=on()) for _ in range(2)]
    assert [r.getMessage() for r in caplog.records if r.name == "follow_the_flow"] == [f"{script.PREFIX} {PROBLEM}"]
    for result in results:
        assert torch.equal(conds(result.sampling_records[0], 0), conds(reference.sampling_records[0], 0))
        assert "FtF patched" not in result.infotexts[0]
