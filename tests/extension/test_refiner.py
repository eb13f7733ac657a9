"""The WebUI's refiner switch (`sd_samplers_common.apply_refiner`): mid-sampling it loads the refiner and calls
`p.setup_conds()`, with no script hook between that and the next step. Follow the Flow steps aside for the
refiner's part: the first part is patched, the refiner's conds are the WebUI's own, and one warning in the log and
an infotext entry say so."""

from __future__ import annotations

import logging

import torch
from conftest import make_webui
from ext_helpers import changed_rows, isolated, on
from modules import errors
from standin import make_sd1_model

from follow_the_flow_webui.script import REFINER_NOTE


def test_refiner_part_unpatched_with_one_warning(caplog):
    webui = make_webui("sd1")
    refiner = make_sd1_model(seed=5, name="refiner")
    plain = webui.model.get_learned_conditioning(["a dark cave with bats"])[0]
    with caplog.at_level(logging.WARNING, logger="follow_the_flow"):
        res = webui.txt2img(
            prompt="a dark cave with ~bats~", refiner_checkpoint=refiner, refiner_switch_at=0.5, alwayson=on()
        )
    (record,) = res.sampling_records
    assert record.refiner_switched
    first, last = record.text_cond[0][0], record.text_cond[-1][0]
    rows = changed_rows(first, plain)
    assert rows == [5] and torch.allclose(first[rows], isolated("bats"), atol=1e-5)  # before the switch
    refined = refiner.get_learned_conditioning(["a dark cave with bats"])[0]
    assert torch.equal(last, refined)  # after it: the refiner's own encode, unpatched
    warnings = [r.getMessage() for r in caplog.records if "refiner" in r.getMessage()]
    assert warnings == [f"[Follow the Flow] {REFINER_NOTE}"]
    assert "FtF refiner: unpatched" in res.infotexts[0] and "FtF patched: bats" in res.infotexts[0]
    assert not errors.reported


def test_no_refiner_no_warning(caplog):
    webui = make_webui("sd1")
    with caplog.at_level(logging.WARNING, logger="follow_the_flow"):
        res = webui.txt2img(prompt="a dark cave with ~bats~", alwayson=on())
    assert not [r for r in caplog.records if "refiner" in r.getMessage()]
    assert "FtF refiner" not in res.infotexts[0]
