"""Several encoders, one decision (flowcore.patching.joint): an item any encoder flags is patched in every part."""

import torch

from flowcore import ClipEncoder, FlowPatcher
from flowcore.detection.calibration import Calibration
from flowcore.patching.joint import Part, patch_jointly
from flowcore.testing import tiny_clip_text_model

PROMPT = "a crosswalk next to a bus station with a standing zebra"


def part(name, tokenizer, nlp, seed, null):
    """A part whose calibration says every score is (null -10) or none is (null 10) a leak."""
    encoder = ClipEncoder(tokenizer, tiny_clip_text_model(seed=seed))
    calibration = Calibration.identity(32)
    calibration.null = torch.tensor([null])
    patcher = FlowPatcher(encoder, nlp=nlp, calibration=calibration)
    layout = encoder.layout(PROMPT)
    return Part(name, patcher, encoder.encode(layout).rows, layout)


def test_an_item_flagged_by_one_encoder_is_patched_in_every_part(tokenizer, nlp):
    eager, strict = part("eager", tokenizer, nlp, 1, -10.0), part("strict", tokenizer, nlp, 2, 10.0)
    alone = strict.patcher.patch(strict.encoding, PROMPT, layout=strict.layout)
    assert not alone.report.patched_items  # on its own, the strict encoder patches nothing
    first, second = patch_jointly([eager, strict], PROMPT)
    flagged = [e.item.text for e in first.report.items if e.patched]
    assert flagged == ["bus station", "standing zebra"]  # every item something before it could have pulled
    assert [e.item.text for e in second.report.items if e.patched] == flagged
    for entry in second.report.items:
        if entry.patched:
            assert entry.reason.startswith("flagged by eager: leak score")
            assert entry.leak_score is not None  # its own encoder's score is still reported
    changed = (second.patched != second.original).any(dim=1).nonzero().flatten().tolist()
    assert changed == [r for e in second.report.items if e.patched for r in e.rows]


def test_keep_markers_hold_in_every_part(tokenizer, nlp):
    eager, strict = part("eager", tokenizer, nlp, 1, -10.0), part("strict", tokenizer, nlp, 2, 10.0)
    marked = "a crosswalk next to a bus station with a ^standing zebra^"
    first, second = patch_jointly([eager, strict], marked)
    for result in (first, second):
        zebra = next(e for e in result.report.items if e.item.text == "standing zebra")
        assert not zebra.patched and zebra.reason == "marked ^keep^"
