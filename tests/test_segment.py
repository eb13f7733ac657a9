import pytest

from flowcore import FlowOptions, segment
from flowcore.errors import ModelNotFoundError
from flowcore.prompts.segmentation import load_nlp


def texts(prompt, nlp):
    return [item.text for item in segment(prompt, nlp)]


@pytest.mark.parametrize(
    ("prompt", "expected"),
    [
        ("a crosswalk next to a bus station with a standing zebra", ["crosswalk", "bus station", "standing zebra"]),
        ("San Francisco's Golden Gate Bridge at sunset", ["San Francisco's Golden Gate Bridge", "sunset"]),
        ("a pink colored giraffe", ["pink colored giraffe"]),
        ("a cat to the right of a dog, in front of a house, on top of a table", ["cat", "dog", "house", "table"]),
    ],
)
def test_paper_examples(prompt, expected, nlp):
    assert texts(prompt, nlp) == expected


def test_offsets_index_the_prompt(nlp):
    prompt = "two red apples and a green pear on the left, San Francisco's Golden Gate Bridge"
    items = segment(prompt, nlp)
    assert items
    for item in items:
        assert prompt[item.start : item.end] == item.text
        assert item.head and item.text.endswith(item.head)


def test_pronouns_and_empty_prompts_have_no_items(nlp):
    assert texts("it is them", nlp) == []
    assert texts("", nlp) == []
    assert texts("   ", nlp) == []


def test_markers_override_the_parser(nlp):
    items = segment("a ~crosswalk next~ to a ^bus station^ with a zebra", nlp)
    assert [(i.text, i.marker) for i in items] == [
        ("crosswalk next", "isolate"),
        ("bus station", "keep"),
        ("zebra", None),
    ]
    clean = "a crosswalk next to a bus station with a zebra"
    assert all(clean[i.start : i.end] == i.text for i in items)


def test_missing_model_says_how_to_install(monkeypatch):
    import flowcore.prompts.segmentation as seg

    monkeypatch.setattr(seg, "MODEL_CANDIDATES", ("no_such_model_xyz",))
    monkeypatch.setattr(seg, "_loaded", {})
    with pytest.raises(ModelNotFoundError, match="pip install"):
        load_nlp()


def test_the_parser_is_loaded_once():
    assert load_nlp() is load_nlp()


@pytest.mark.parametrize(
    ("prompt", "expected"),
    [  # a sentence followed by comma tags: the parser attaches the sentence's last noun to a later tag's noun
        ("a zebra on a crosswalk, bus station", ["zebra", "crosswalk", "bus station"]),
        ("a cat on a sofa, window, sunlight", ["cat", "sofa", "window", "sunlight"]),
        ("a man riding a horse, mountains, sunset", ["man", "horse", "mountains", "sunset"]),
        ("a knight on a horse, castle, dragon", ["knight", "horse", "castle", "dragon"]),
        ("a golden retriever puppy playing with a ball, park", ["golden retriever puppy", "ball", "park"]),
    ],
)
def test_a_sentence_followed_by_tags_keeps_every_noun(prompt, expected, nlp):
    assert texts(prompt, nlp) == expected


@pytest.mark.parametrize(
    "prompt",
    [
        "a zebra on a crosswalk, bus station",
        "an owl on a branch, full moon, pine trees, fog",
        "a lighthouse on a rocky coast, seagulls, storm clouds",
        "a robot holding a flower in a ruined city, sunset, dust",
        "an old woman knitting by a fireplace, cat, wooden chair",
    ],
)
def test_every_noun_of_a_phrase_is_in_an_item(prompt, nlp):
    items = segment(prompt, nlp)
    for token in nlp(prompt):
        if token.pos_ in {"NOUN", "PROPN"}:
            assert any(item.start <= token.idx < item.end for item in items), (token.text, [i.text for i in items])


def test_webui_syntax_keeps_the_item_after_a_sentence(patcher):
    result = patcher.run("a (zebra:1.3) on a [crosswalk], (bus station)", options=FlowOptions(mode="every"))
    assert [entry.item.text for entry in result.report.items] == ["zebra", "crosswalk", "bus station"]
    assert all(entry.patched for entry in result.report.items)
