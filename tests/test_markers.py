from hypothesis import given
from hypothesis import strategies as st

from flowcore.prompts.items import ISOLATE, KEEP
from flowcore.prompts.markers import has_markers, parse_markers, strip_markers


def test_isolate_and_keep_spans_refer_to_clean_text():
    marked = parse_markers("a ~standing zebra~ on a ^crosswalk^")
    assert marked.text == "a standing zebra on a crosswalk"
    assert [(marked.text[s.start : s.end], s.kind) for s in marked.spans] == [
        ("standing zebra", ISOLATE),
        ("crosswalk", KEEP),
    ]
    assert marked.warnings == ()


def test_spaces_inside_markers_are_trimmed_from_the_span():
    marked = parse_markers("a ~ zebra ~ here")
    (span,) = marked.spans
    assert marked.text[span.start : span.end] == "zebra"


def test_malformed_markers_are_plain_text_with_a_warning():
    for prompt, word in [("a ~zebra", "Unclosed"), ("~a ^b^ c~", "Nested"), ("~~ x", "Empty"), ("smile ^_^", "Empty")]:
        marked = parse_markers(prompt)
        assert marked.text == prompt
        assert marked.spans == ()
        assert any(word in w for w in marked.warnings), prompt


def test_dynamic_prompts_random_choice_is_not_a_marker():
    assert parse_markers("{~red|blue} car").text == "{~red|blue} car"
    assert not has_markers("{~red|blue} car")


def test_strip_markers():
    assert strip_markers("^a^ and ~b~") == "a and b"


@given(st.text(alphabet=st.sampled_from(list("ab ~^{|}é漢😀,")), max_size=40))
def test_parsing_never_raises_and_spans_are_valid(prompt):
    marked = parse_markers(prompt)
    removed = len(prompt) - len(marked.text)
    assert removed == 2 * len(marked.spans)
    for span in marked.spans:
        assert 0 <= span.start < span.end <= len(marked.text)
        assert any(c.isalnum() for c in marked.text[span.start : span.end])


def test_parsing_logs_nothing_and_returns_its_warnings(caplog):
    """Hosts parse one prompt many times (per image and pass): each problem is reported by the caller, once."""
    with caplog.at_level("WARNING"):
        assert strip_markers("a ~half typed") == "a ~half typed"
        marked = parse_markers("a ~half typed")
    assert not caplog.records and "Unclosed" in marked.warnings[0]
