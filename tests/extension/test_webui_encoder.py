"""The encoder adapter: token rows from the WebUI's own tokenize_line (emphasis, BREAK, embeddings)."""

from __future__ import annotations

import torch
from modules import sd_hijack, shared

from extension.webui_encoder import WebuiEncoder, escape
from flowcore.encoders.base import ItemRequest


def test_layout_follows_tokenize_line_with_emphasis_and_break(webui):
    encoder = WebuiEncoder(shared.sd_model)
    line = encoder.line_layout("a (big:1.2) \\(red\\) car BREAK a [tiny] dog")
    layout = line.layout
    assert layout.text == "a big (red) car BREAK a tiny dog"
    assert len(layout.chunks) == 2
    assert layout.rows_for_span(2, 5) == [2] and line.multipliers[2] == 1.2
    assert layout.rows_for_span(layout.text.index("dog"), len(layout.text)) == [77 + 3]
    assert abs(float(line.multipliers[77 + 2]) - 1 / 1.1) < 1e-6
    assert encoder.layout("a (b) c").text == "a (b) c"  # plain text is escaped, not re-parsed
    assert escape("a (b)") == "a \\(b\\)"


def test_textual_inversion_rows_map_to_the_embedding_name(webui, monkeypatch):
    encoder = WebuiEncoder(shared.sd_model)
    zebra = encoder.clip.tokenize(["zebra"])[0][0]

    class Embedding:
        name = "zebra"
        vectors = 3

    def find(tokens, offset):
        return (Embedding(), 1) if tokens[offset] == zebra else (None, None)

    monkeypatch.setattr(sd_hijack.model_hijack.embedding_db, "find_embedding_at_position", find)
    layout = encoder.line_layout("a standing zebra on grass").layout
    rows = layout.rows_for_span(11, 16)  # "zebra": its three embedding vectors
    assert rows == [3, 4, 5] and [t.id for _, t in layout.token_rows()][2:5] == [0, 0, 0]
    assert layout.rows_for_span(20, 25) == [7]  # "grass" after them


def test_isolated_items_come_from_one_batched_call(webui, monkeypatch):
    encoder = WebuiEncoder(shared.sd_model)
    calls = []
    original = shared.sd_model.get_learned_conditioning
    monkeypatch.setattr(
        shared.sd_model, "get_learned_conditioning", lambda texts: calls.append(list(texts)) or original(texts)
    )
    items = encoder.encode_isolated([ItemRequest("standing zebra", ()), ItemRequest("bus (station)", ())])
    assert calls == [["standing zebra", "bus \\(station\\)"]]
    with torch.no_grad():
        alone = original(["standing zebra"])[0, 1:3]
    assert torch.allclose(items[0].rows, alone, atol=1e-5) and len(items[1].token_ids) == 4
    assert encoder.empty().rows.shape == (77, alone.shape[-1])
