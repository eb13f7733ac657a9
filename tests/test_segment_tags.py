"""Tag-style prompts: each tag an item, sentences inside tag lists and tags inside sentences, no junk items,
quality/style/camera tags recognised (`flowcore.prompts.segmentation`, `flowcore.prompts.style_tags`). These are
the cases the rule was written on; the held-out prompts (`flowcore/data/tag_prompts.jsonl`) are scored by
`benchmarks/tag_prompts.py`, not here."""

import pytest

from flowcore import segment
from flowcore.errors import OptionsError
from flowcore.prompts.segmentation import has_content, is_tag
from flowcore.prompts.style_tags import StyleTags, normalize, style_tags


def found(prompt, nlp, tags=None):
    """(text, style) of each item, `*` appended to style tags."""
    return [item.text + ("*" if item.style else "") for item in segment(prompt, nlp, tags)]


@pytest.mark.parametrize(
    ("prompt", "expected"),
    [
        (  # the prompt: every tag an item, quality tags recognised
            "masterpiece, best quality, 1girl, solo, white shirt, green tie, red shoes, blue hair, looking at viewer",
            [
                "masterpiece*",
                "best quality*",
                "1girl",
                "solo",
                "white shirt",
                "green tie",
                "red shoes",
                "blue hair",
                "looking at viewer",
            ],
        ),
        (  # booru tags with digits and underscores, camera tags, numbers that are not items
            "score_9, score_8_up, 1boy, 85mm, bokeh, 8k, 1920x1080, f/1.8, 16:9, hand on hip",
            ["score_9*", "score_8_up*", "1boy", "85mm*", "bokeh*", "8k*", "f/1.8*", "hand", "hip"],
        ),
        (  # the 6-colour prompt: a phrase inside the tag list keeps each colour with its noun
            "a cute girl, white shirt with green tie, red shoes, blue hair, yellow eyes, pink skirt",
            ["cute girl", "white shirt", "green tie", "red shoes", "blue hair", "yellow eyes", "pink skirt"],
        ),
        (  # emphasis written into the text, an extra network, and a style phrase
            "trending on artstation, cherry blossoms, castle background, (masterpiece:1.2), highres, <lora:x:0.8>",
            ["trending on artstation*", "cherry blossoms", "castle background", "masterpiece*", "highres*"],
        ),
    ],
)
def test_tag_lists(prompt, expected, nlp):
    assert found(prompt, nlp) == expected


@pytest.mark.parametrize(
    ("prompt", "expected"),
    [
        # all phrases: each stretch starts with a determiner or a preposition
        ("a castle on a hill, at sunset, with dragons", ["castle", "hill", "sunset", "dragons"]),
        # a tag, a sentence, a tag
        (
            "1girl, a girl holding a red umbrella in the rain, blue coat",
            ["1girl", "girl", "red umbrella", "rain", "blue coat"],
        ),
        # tags inside a sentence: booru words and a style noun; a verb-phrase tag; "no humans" is a tag
        (
            "a photo of 1girl with blue_hair standing in a field, shot on 85mm lens, no humans",
            ["photo*", "1girl", "blue_hair", "field", "shot on 85mm lens*", "no humans"],
        ),
        # BREAK splits stretches too; a sentence after it
        ("masterpiece, red car BREAK a dog under a tree", ["masterpiece*", "red car", "dog", "tree"]),
        # numbers inside a sentence never make items of their own
        ("a 35mm photo of 3 cats on a 1.5 m wall in 1990", ["35mm photo*", "3 cats", "1.5 m wall"]),
    ],
)
def test_mixed_prompts(prompt, expected, nlp):
    assert found(prompt, nlp) == expected


def test_offsets_index_the_prompt_and_never_cut_words(nlp):
    prompt = "((best_quality)), 2boys, 85mm, a man holding a 50mm lens, [blue hair:1.3], 8k wallpaper."
    items = segment(prompt, nlp)
    for item in items:
        assert prompt[item.start : item.end] == item.text and item.head
        assert item.start == 0 or not prompt[item.start - 1].isalnum()
        assert item.end == len(prompt) or not prompt[item.end].isalnum()
    assert [i.text for i in items] == ["best_quality", "2boys", "85mm", "man", "50mm lens", "blue hair", "8k wallpaper"]


def test_the_rule():
    assert is_tag(["looking", "at", "viewer"], first_is_verb=True)  # a verb-phrase tag
    assert not is_tag(["hand", "on", "hip"], first_is_verb=False)  # a preposition: a phrase
    assert not is_tag(["a", "red", "car"], first_is_verb=False)  # a determiner: a phrase
    assert not is_tag(["cats", "and", "dogs"], first_is_verb=False)
    assert is_tag(["very", "long", "blue", "hair"], first_is_verb=False)
    assert not is_tag(["long", "blue", "hair", "past", "waist"], first_is_verb=False)  # more than 4 words
    assert is_tag(["depth", "of", "field"], first_is_verb=False, tags=style_tags())  # a style tag first


@pytest.mark.parametrize(
    ("text", "content"),
    [
        ("1girl", True),
        ("score_9", True),
        ("85mm", False),
        ("8k", False),
        ("1920x1080", False),
        ("16:9", False),
        ("1.2", False),
        ("f/1.8", False),
    ],
)
def test_numbers_and_units_are_not_content(text, content):
    assert has_content(text) is content


def test_style_tag_list_normalises_and_matches():
    tags = style_tags()
    assert normalize("((Best_Quality:1.2))") == "best quality"
    for tag in (
        "masterpiece",
        "BEST QUALITY",
        "(bokeh)",
        "85mm",
        "35 mm film",
        "f/2.8",
        "score_7_up",
        "4K UHD",
        "trending on artstation",
        "by greg rutkowski",
        "in the style of van gogh",
        "1980s style",
    ):
        assert tags.matches(tag), tag
    for item in ("girl", "red shoes", "by the sea", "1girl", "blue hair", "castle"):
        assert not tags.matches(item), item


def test_style_tags_are_user_extensible(nlp, tmp_path, monkeypatch):
    prompt = "kodak portra 400, red car"
    assert found(prompt, nlp) == ["kodak portra 400", "red car"]
    assert found(prompt, nlp, style_tags(["kodak portra 400"])) == ["kodak portra 400*", "red car"]
    assert found(prompt, nlp, style_tags([r"re:kodak \w+( \d+)?"])) == ["kodak portra 400*", "red car"]
    own = tmp_path / "mine.txt"
    own.write_text("# my film stocks\nkodak portra 400\n", encoding="utf-8")
    monkeypatch.setenv("FLOWCORE_STYLE_TAGS", str(own))
    assert found(prompt, nlp) == ["kodak portra 400*", "red car"]


def test_bad_style_tag_lines_are_errors(tmp_path, monkeypatch):
    with pytest.raises(OptionsError, match="not a regular expression"):
        StyleTags.from_lines(["re:(unclosed"])
    monkeypatch.setenv("FLOWCORE_STYLE_TAGS", str(tmp_path / "missing.txt"))
    with pytest.raises(OptionsError, match="FLOWCORE_STYLE_TAGS"):
        style_tags()


def test_marked_style_tags_keep_their_marker(nlp):
    items = segment("~masterpiece~, ^red car^, bokeh", nlp)
    assert [(i.text, i.marker, i.style) for i in items] == [
        ("masterpiece", "isolate", True),
        ("red car", "keep", False),
        ("bokeh", None, True),
    ]


def test_a_run_of_adverbs_between_commas_is_not_a_tag(nlp):
    assert [item.text for item in segment("and then, very very slowly, a zebra", nlp)] == ["zebra"]
