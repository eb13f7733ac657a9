"""A1111 CLIP parts: token rows from the WebUI's own tokenize_line (emphasis, BREAK, embeddings), items alone through
its own transformers."""

from __future__ import annotations

import torch
from modules import sd_hijack, shared

from flowcore.encoders.base import ItemRequest
from follow_the_flow_webui.a1111 import parts_for
from follow_the_flow_webui.line_layout import escape


def test_layout_follows_tokenize_line_with_emphasis_and_break(webui):
    encoder = parts_for(shared.sd_model, shared.opts)[0]
    line = encoder.line_layout("a (big:1.2) \\(red\\) car BREAK a [tiny] dog")
    layout = line.layout
    assert layout.text == "a big (red) car BREAK a tiny dog"
    assert len(layout.chunks) == 2
    assert layout.rows_for_span(2, 5) == [2] and line.weights[2] == 1.2
    assert layout.rows_for_span(layout.text.index("dog"), len(layout.text)) == [77 + 3]
    assert abs(float(line.weights[77 + 2]) - 1 / 1.1) < 1e-6
    assert encoder.layout("a (b) c").text == "a (b) c"  # plain text is escaped, not re-parsed
    assert escape("a (b)") == "a \\(b\\)"


def test_textual_inversion_rows_map_to_the_embedding_name(webui, monkeypatch):
    encoder = parts_for(shared.sd_model, shared.opts)[0]
    zebra = encoder.engine.tokenize(["zebra"])[0][0]

    class Embedding:
        name = "zebra"
        vectors = 3

    def find(tokens, offset):
        return (Embedding(), 1) if tokens[offset] == zebra else (None, None)

    monkeypatch.setattr(sd_hijack.model_hijack.embedding_db, "find_embedding_at_position", find)
    layout = encoder.line_layout("a standing zebra on grass").layout
    rows = layout.rows_for_span(11, 16)  # "zebra": its three embedding vectors
    assert rows == [3, 4, 5] and [t.id for _, t in layout.token_rows()][2:5] == [-1, -2, -3]  # its 3 vectors
    assert layout.rows_for_span(20, 25) == [7]  # "grass" after them


def _ids(encoder, text):
    return tuple(encoder.engine.tokenize([text])[0])


def test_items_alone_equal_the_webuis_own_encode_of_their_text(webui):
    for clip_skip in (1, 2):
        shared.opts.CLIP_stop_at_last_layers = clip_skip
        encoder = parts_for(shared.sd_model, shared.opts)[0]
        zebra, station = (ItemRequest(text, _ids(encoder, text)) for text in ("standing zebra", "bus (station)"))
        items = encoder.encode_isolated([zebra, station])
        with torch.no_grad():
            reference = shared.sd_model.get_learned_conditioning(["standing zebra", "bus \\(station\\)"])
        torch.testing.assert_close(items[0].rows, reference[0, 1:3], atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(items[1].rows, reference[1, 1:5], atol=1e-5, rtol=1e-4)
    shared.opts.CLIP_stop_at_last_layers = 1


def test_items_alone_sit_at_their_prompt_positions(webui):
    """Against the model's own forward pass with the position ids written out (clip skip 2: the penultimate
    layer, then the final norm)."""
    shared.opts.CLIP_stop_at_last_layers = 2
    encoder = parts_for(shared.sd_model, shared.opts)[0]
    ids = _ids(encoder, "standing zebra")
    (item,) = encoder.encode_isolated([ItemRequest("standing zebra", ids, start=7)])
    transformer = shared.sd_model.cond_stage_model.wrapped.transformer
    with torch.no_grad():
        out = transformer(
            torch.tensor([[49406, *ids]]), position_ids=torch.tensor([[0, 7, 8]]), output_hidden_states=True
        )
        expected = getattr(transformer, "text_model", transformer).final_layer_norm(out.hidden_states[-2])[0, 1:]
    torch.testing.assert_close(item.rows, expected, atol=1e-5, rtol=1e-4)
    shared.opts.CLIP_stop_at_last_layers = 1


def test_items_alone_take_one_forward_call_whatever_their_number(webui):
    encoder = parts_for(shared.sd_model, shared.opts)[0]
    calls = []
    first_layer = encoder.towers[0].layers[0]
    handle = first_layer.register_forward_hook(lambda module, args, output: calls.append(args[0].shape))
    try:
        requests = [ItemRequest(text, _ids(encoder, text), start) for text, start in [("zebra", 5), ("bus station", 2)]]
        encoder.encode_isolated(requests)
    finally:
        handle.remove()
    assert calls == [torch.Size([1, 1 + 1 + 2, 32])]  # [BOS zebra] and [BOS bus station], packed: BOS once
    assert encoder.empty().rows.shape == (77, 32)
