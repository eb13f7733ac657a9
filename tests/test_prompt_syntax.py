"""The WebUI's prompt syntax in standalone use: the parser's fragments, the rows and the emphasis, each against
hand-derived expectations and against the WebUI stand-in (tests/webui_standin, imported, never modified)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from flowcore import ClipEncoder, FlowOptions, FlowPatcher
from flowcore.errors import OptionsError
from flowcore.prompts.prompt_syntax import parse_attention, parse_prompt, plain_prompt
from flowcore.testing import clip_tokenizer, tiny_clip_text_model

STANDIN = Path(__file__).resolve().parent / "webui_standin"
NOTHING = FlowOptions(detect=False)  # encode only: no spaCy scores, no patch


def webui_parse_prompt_attention():
    """The stand-in's `parse_prompt_attention`, checked against the WebUI's own (see its README)."""
    if str(STANDIN) not in sys.path:
        sys.path.insert(0, str(STANDIN))
    from modules.prompt_parser import parse_prompt_attention

    return parse_prompt_attention


@pytest.mark.parametrize(
    "line, expected",
    [
        ("a (red:1.2) car", [("a ", 1.0), ("red", 1.2), (" car", 1.0)]),
        ("an (important) word", [("an ", 1.0), ("important", 1.1), (" word", 1.0)]),
        ("a [small] cat", [("a ", 1.0), ("small", 1 / 1.1), (" cat", 1.0)]),
        ("((big)) dog", [("big", 1.1 * 1.1), (" dog", 1.0)]),
        ("((big:1.5)) dog", [("big", 1.5 * 1.1), (" dog", 1.0)]),
        ("a \\(cat\\) and \\\\", [("a (cat) and \\", 1.0)]),
        ("a cat BREAK a dog", [("a cat", 1.0), ("BREAK", -1.0), ("a dog", 1.0)]),
        ("(unclosed", [("unclosed", 1.1)]),
        ("stray) and :1.3) colon: here", [("stray) and :1.3) colon: here", 1.0)]),
        ("(zebra)crossing", [("zebra", 1.1), ("crossing", 1.0)]),
        ("", [("", 1.0)]),
    ],
)
def test_fragments_as_the_webui_documents_them(line, expected):
    got = parse_attention(line)
    assert [text for text, _ in got] == [text for text, _ in expected]
    assert [weight for _, weight in got] == pytest.approx([weight for _, weight in expected])
    assert got == [tuple(pair) for pair in webui_parse_prompt_attention()(line)]


@settings(max_examples=400, deadline=None)
@given(st.lists(st.sampled_from(["a", " ", "(", ")", "[", "]", ":", "\\", "1", ".", "2", " BREAK ", "x", ":1.3)"])))
def test_the_same_fragments_as_the_webuis_parser_on_any_line(pieces):
    line = "".join(pieces)
    try:
        expected = [tuple(pair) for pair in webui_parse_prompt_attention()(line)]
    except ValueError:  # `(a:1.2.3)`: the WebUI fails there too
        with pytest.raises(ValueError):
            parse_attention(line)
        return
    assert parse_attention(line) == expected


def test_what_standalone_use_cannot_honour_is_named_in_a_warning():
    parsed = parse_prompt("(zebra:1.3) AND [cat:dog:5] BREAK <lora:x:1> [a|b] c")
    warnings = " ".join(parsed.warnings)
    for construct in ("`AND`", "`[cat:dog:5]`", "`<lora:x:1>`", "`[a|b]`"):
        assert construct in warnings
    assert "lora" not in parsed.text and "dog" not in parsed.text and "[" not in parsed.text
    assert [f.text for f in parsed.fragments if not f.is_break and f.text.strip()] == ["zebra", "cat", "a c"]
    assert [f.weight for f in parsed.fragments if f.text == "zebra"] == [pytest.approx(1.3)]
    assert len(parsed.segments()) >= 3  # the AND part and the BREAK each start a chunk


def test_plain_text_keeps_every_character():
    parsed = plain_prompt("a (zebra:1.3) [cat] BREAK x")
    assert parsed.text == "a (zebra:1.3) [cat] BREAK x" and not parsed.has_emphasis and not parsed.warnings
    assert parsed.segments() == [[(0, 19)], [(26, 27)]]


def test_items_and_rows_of_a_webui_prompt_and_its_plain_text_agree(patcher):
    """Syntax removed, the items and rows are those of the prompt without it; literally, brackets are tokens."""
    webui = patcher.run("a crosswalk next to a bus station with a (standing zebra:1.3)", NOTHING)
    plain = patcher.run("a crosswalk next to a bus station with a standing zebra", NOTHING)
    assert [(e.item.text, e.rows) for e in webui.report.items] == [(e.item.text, e.rows) for e in plain.report.items]
    literal = patcher.run("a crosswalk next to a bus station with a (standing zebra:1.3)", NOTHING, syntax="plain")
    assert literal.layout.n_rows == 77 and len(literal.layout.chunks[0]) > len(plain.layout.chunks[0])


def test_markers_around_emphasis_and_syntax_warnings_in_the_report(patcher):
    result = patcher.run("a crosswalk with a ~(standing zebra:1.3)~ AND a dog", FlowOptions(detect=False))
    zebra = next(e for e in result.report.items if e.item.text == "standing zebra")
    assert zebra.patched and zebra.reason == "marked ~isolate~"
    assert any("`AND`" in w for w in result.report.warnings)
    assert result.report.options["syntax"] == "webui"


def test_emphasis_multiplies_rows_then_keeps_the_chunks_mean(nlp):
    """Hand-derived: rows times their token's weight, then the chunk rescaled to its old mean ("original")."""
    model = tiny_clip_text_model(seed=0)
    with torch.no_grad():  # rows whose mean is not ~0 (a final layer norm without bias gives zero-mean rows)
        next(m for name, m in model.named_modules() if name.endswith("final_layer_norm")).bias.add_(0.5)
    clip_encoder = ClipEncoder(clip_tokenizer(), model)
    patcher = FlowPatcher(clip_encoder, nlp=nlp)
    prompt = "a (red:1.5) car and a [blue] sky"
    result = patcher.run(prompt, NOTHING)
    layout = result.layout
    encoding = clip_encoder.encode(layout).rows
    weights = torch.ones(layout.n_rows)
    for row, token in layout.token_rows():
        word = layout.text[token.start : token.end]
        weights[row] = {"red": 1.5, "blue": 1 / 1.1}.get(word, 1.0)
    expected = encoding * weights[:, None]
    expected = expected * (encoding.mean() / expected.mean())
    torch.testing.assert_close(result.original, expected)
    torch.testing.assert_close(result.patched, expected)

    no_norm = FlowPatcher(clip_encoder, nlp=patcher.nlp, emphasis="no norm").run(prompt, NOTHING)
    torch.testing.assert_close(no_norm.original, encoding * weights[:, None])
    ignored = FlowPatcher(clip_encoder, nlp=patcher.nlp, emphasis="ignore").run(prompt, NOTHING)
    torch.testing.assert_close(ignored.original, encoding)


def test_a_patched_item_keeps_its_emphasis(patcher, clip_encoder):
    """The patched rows are the item alone times the factors of the rows they replace."""
    result = patcher.run("a crosswalk with a ~(zebra:1.4)~", NOTHING)
    zebra = next(e for e in result.report.items if e.item.text == "zebra")
    alone = patcher.isolated("zebra")
    ratio = result.original[zebra.rows] / clip_encoder.encode(result.layout).rows[zebra.rows]
    torch.testing.assert_close(result.patched[zebra.rows], alone.rows * ratio)


def test_the_webuis_own_conditioning_for_a_webui_prompt():
    """Against the stand-in's encode of the same line with the same CLIP weights (tokenize_line, chunks,
    emphasis "Original"): the same rows, values included."""
    if str(STANDIN) not in sys.path:
        sys.path.insert(0, str(STANDIN))
    import standin
    from modules import shared

    from flowcore import ClipEncoder

    standin.WebUI("sd1")
    clip = shared.sd_model.cond_stage_model
    line = "a (crosswalk:1.3) next to a [bus station] BREAK with a ((standing)) zebra, \\(tall\\)"
    expected = clip([line])[0]
    wrapped = clip.wrapped
    core = FlowPatcher(ClipEncoder(wrapped.tokenizer, wrapped.transformer))
    result = core.run(line, NOTHING)
    assert result.original.shape == expected.shape
    torch.testing.assert_close(result.original, expected.to(result.original.dtype), atol=1e-5, rtol=1e-4)


def test_bad_syntax_and_emphasis_names_are_refused(clip_encoder):
    with pytest.raises(OptionsError, match="`syntax`"):
        FlowPatcher(clip_encoder, syntax="markdown")
    with pytest.raises(OptionsError, match="`emphasis`"):
        FlowPatcher(clip_encoder, emphasis="loud")
