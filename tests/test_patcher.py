import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flowcore import FlowOptions, FlowPatcher
from flowcore.encoders.base import ItemRequest
from flowcore.errors import EncodingMismatchError, OptionsError

ZEBRA = "a crosswalk next to a bus station with a ~standing zebra~"
MARKERS_ONLY = FlowOptions(detect=False)


def changed_rows(result):
    return (result.patched != result.original).any(dim=1).nonzero().flatten().tolist()


def test_marked_item_rows_equal_its_isolated_encoding(patcher, clip_encoder):
    result = patcher.run(ZEBRA, MARKERS_ONLY)
    zebra = next(r for r in result.report.items if r.item.text == "standing zebra")
    assert zebra.patched and zebra.reason == "marked ~isolate~"
    assert torch.equal(result.patched[zebra.rows], patcher.isolated("standing zebra").rows)
    ids = tuple(t.id for t in clip_encoder.layout("standing zebra").chunks[0])
    (alone,) = clip_encoder.encode_isolated([ItemRequest("standing zebra", ids)])  # packed alone: same to rounding
    torch.testing.assert_close(result.patched[zebra.rows], alone.rows, atol=1e-5, rtol=1e-4)
    assert changed_rows(result) == zebra.rows
    others = [r for r in range(77) if r not in zebra.rows]
    assert torch.equal(result.patched[others], result.original[others])


def test_report_has_every_item_with_real_fields(patcher):
    report = patcher.run(ZEBRA).report
    assert [r.item.text for r in report.items] == ["crosswalk", "bus station", "standing zebra"]
    for entry in report.items:
        assert entry.rows and entry.representative_rows == entry.rows[-1:]
        assert -1.0 <= entry.presence <= 1.0
    first, second, third = report.items
    assert first.leak_score is None and first.source is None  # nothing comes before it in a causal encoder
    assert first.reason == "no other item before it in its chunk could have pulled it"
    assert isinstance(second.leak_score, float) and second.source.text == "crosswalk"
    assert 0.0 <= second.share_of_unrelated <= 1.0 and "threshold" in second.reason
    assert {pull.source.text for pull in third.pulls} == {"crosswalk", "bus station"}
    assert third.patched and third.reason == "marked ~isolate~"
    assert '"standing zebra"' in report.to_json()


def test_markers_only_mode_parses_and_scores_nothing(patcher, monkeypatch):
    from flowcore.prompts import segmentation

    monkeypatch.setattr(segmentation, "_parser_items", lambda *a: pytest.fail("markers only ran the parser"))
    report = patcher.run(ZEBRA, MARKERS_ONLY).report
    assert [(r.item.text, r.leak_score, r.patched) for r in report.items] == [("standing zebra", None, True)]
    assert report.describe_threshold() == "none (automatic detection off)"


def test_keep_marker_is_never_patched(patcher):
    result = patcher.run("a crosswalk next to a bus station with a ^standing zebra^", FlowOptions(sensitivity=1.0))
    zebra = next(r for r in result.report.items if r.item.text == "standing zebra")
    assert not zebra.patched and zebra.reason == "marked ^keep^"
    assert not set(changed_rows(result)) & set(zebra.rows)


@pytest.mark.parametrize("prompt", ["", "   ", "it is them", "~ unclosed"])
def test_prompts_without_patchable_items_return_the_original(patcher, prompt):
    result = patcher.run(prompt, MARKERS_ONLY)
    assert torch.equal(result.patched, result.original)
    assert result.patched.shape == (77, 32)


def test_items_in_the_second_chunk_map_to_their_rows(patcher, clip_encoder):
    prompt = "photo, " * 40 + "a crosswalk next to a ~zebra~"
    result = patcher.run(prompt, FlowOptions(sensitivity=0.0))  # scores every item, patches only marked ones
    assert result.original.shape == (154, 32)
    zebra = next(r for r in result.report.items if r.item.text == "zebra")
    assert all(row >= 77 for row in zebra.rows)
    layout = result.layout
    assert [t.id for t in layout.tokens_for_span(zebra.item.start, zebra.item.end)] == [
        layout.chunks[1][row - 78].id for row in zebra.rows
    ]
    assert changed_rows(result) == zebra.rows
    crosswalk = next(r for r in result.report.items if r.item.text == "crosswalk")
    assert crosswalk.rows[0] >= 77  # the second chunk starts after the last comma
    chunk_of = {entry.item: entry.rows[0] // 77 for entry in result.report.items}
    assert zebra.pulls and all(chunk_of[pull.source] == 1 for pull in zebra.pulls)  # nothing crosses a chunk


def test_patch_keeps_dtype_and_device_of_the_callers_encoding(patcher, clip_encoder):
    layout = clip_encoder.layout("a crosswalk next to a bus station with a standing zebra")
    encoding = clip_encoder.encode(layout).rows.to(torch.float16)
    result = patcher.patch(encoding, ZEBRA, layout=layout, options=MARKERS_ONLY)
    assert result.patched.dtype == torch.float16 and result.patched.device == encoding.device
    assert result.original is encoding
    assert len(changed_rows(result)) == 2


def test_patch_takes_the_rows_or_an_encoding(sdxl_encoder, nlp):
    patcher = FlowPatcher(sdxl_encoder, MARKERS_ONLY, nlp=nlp)
    layout = sdxl_encoder.layout("a crosswalk next to a bus station with a standing zebra")
    encoding = sdxl_encoder.encode(layout)
    from_rows = patcher.patch(encoding.rows, ZEBRA, layout=layout)
    from_encoding = patcher.patch(encoding, ZEBRA, layout=layout)
    assert torch.equal(from_rows.patched, from_encoding.patched) and len(changed_rows(from_encoding)) == 2
    assert from_rows.pooled_original is None and from_encoding.pooled_original is encoding.pooled
    other = torch.zeros_like(encoding.pooled)
    assert patcher.patch(encoding, ZEBRA, layout=layout, pooled=other).pooled_original is other  # `pooled` first
    with pytest.raises(EncodingMismatchError, match="torch.Tensor of rows or an Encoding but is list"):
        patcher.patch([[0.0]], ZEBRA)


def test_patch_rejects_an_encoding_of_the_wrong_size(patcher):
    with pytest.raises(EncodingMismatchError, match=r"\(77, dim\)"):
        patcher.patch(torch.zeros(154, 32), ZEBRA)


def test_rederive_changes_only_the_tail_rows_of_patched_chunks(patcher, clip_encoder):
    prompt = "a crosswalk next to a ~zebra~ BREAK a bus station"
    leave = patcher.run(prompt, MARKERS_ONLY)
    rederived = patcher.run(prompt, FlowOptions(detect=False, tail="rederive"))
    zebra_rows = next(r for r in leave.report.items if r.item.text == "zebra").rows
    tail = leave.layout.tail_rows(0)
    assert changed_rows(leave) == zebra_rows
    assert set(changed_rows(rederived)) <= set(zebra_rows) | set(tail)
    assert set(tail) & set(changed_rows(rederived))
    assert torch.equal(rederived.patched[77:], rederived.original[77:])
    assert not torch.equal(rederived.pooled_patched, rederived.pooled_original)


def test_rederive_equals_swapping_states_into_every_layer(clip_encoder, clip_model, tokenizer, nlp):
    """With every layer's state of the item swapped in, the EOS row must equal that of a forward pass in
    which the item's states are those of the isolated run (checked against a hook-based reference)."""
    patcher = FlowPatcher(clip_encoder, FlowOptions(detect=False, tail="rederive"), nlp=nlp)
    result = patcher.run("a crosswalk with a ~zebra~")
    (row,) = next(r for r in result.report.items if r.item.text == "zebra").rows
    isolated = patcher.isolated("zebra")
    ids = clip_encoder.towers[0].chunk_ids(result.layout)
    states = isolated.layers[0][:, 0]  # (layers + 1, hidden)
    hooks = []
    core = getattr(clip_model, "text_model", clip_model)  # transformers 4.x nests the transformer
    for depth, layer in enumerate(core.encoder.layers, start=1):

        def swap(module, args, output, depth=depth):
            hidden = output[0] if isinstance(output, tuple) else output  # transformers 4.x returns tuples
            hidden[0, row] = states[depth]
            return output

        hooks.append(layer.register_forward_hook(swap))
    hooks.append(
        core.embeddings.register_forward_hook(
            lambda m, a, out: out.index_put_((torch.tensor([0]), torch.tensor([row])), states[0][None])
        )
    )
    try:
        reference = clip_model(ids).last_hidden_state[0]
    finally:
        for hook in hooks:
            hook.remove()
    eos = row + 1
    torch.testing.assert_close(result.patched[eos], reference[eos], atol=1e-5, rtol=1e-4)


def test_redundant_token_removal_fills_non_representative_rows(patcher):
    result = patcher.run(ZEBRA, FlowOptions(detect=False, remove_redundant=True))
    baseline = patcher.baseline().rows
    for entry in result.report.items:
        assert entry.removed_rows == entry.rows[:-1]
        for row in entry.removed_rows:
            assert torch.equal(result.patched[row], baseline[row % 77])


def test_sdxl_patch_keeps_pooled_and_width(sdxl_encoder, nlp):
    result = FlowPatcher(sdxl_encoder, MARKERS_ONLY, nlp=nlp).run(ZEBRA)
    assert result.patched.shape == (77, 80)
    assert torch.equal(result.pooled_patched, result.pooled_original)
    zebra = next(r for r in result.report.items if r.item.text == "standing zebra")
    assert changed_rows(result) == zebra.rows


def test_options_are_validated():
    with pytest.raises(OptionsError, match="sensitivity"):
        FlowOptions(sensitivity=2)
    with pytest.raises(OptionsError, match="tail"):
        FlowOptions(tail="zeros")


WORDS = [
    "a",
    "zebra",
    "crosswalk",
    "bus station",
    "standing",
    "with",
    "next to",
    ",",
    "BREAK",
    "~",
    "^",
    "é",
    "漢字",
    "😀",
]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.sampled_from(WORDS), max_size=120), st.booleans())
def test_random_prompts_never_raise_and_untouched_rows_stay_identical(patcher, words, rederive):
    prompt = " ".join(words)
    options = FlowOptions(sensitivity=0.7, tail="rederive" if rederive else "leave")
    result = patcher.run(prompt, options)
    assert result.patched.shape == result.original.shape and result.patched.dtype == result.original.dtype
    allowed = set()
    for entry in result.report.items:
        if entry.patched:
            allowed |= set(entry.rows)
            if rederive:
                allowed |= set(result.layout.tail_rows(entry.rows[0] // 77))
    assert set(changed_rows(result)) <= allowed
