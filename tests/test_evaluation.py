"""The minimal pairs: well formed in every split, tag-list pairs included (contexts, three-item prompts, targets)."""

import pytest

from flowcore import FlowPatcher
from flowcore.detection.calibration import calibration_prompts
from flowcore.errors import OptionsError
from flowcore.prompts.segmentation import segment
from flowcore.studies.evaluation import SPLITS, MinimalPair, evaluate_pairs, minimal_pairs, target_entry

TAG_SPLITS = ("tags-dev", "tags-final")


def test_every_split_has_pairs_and_unknown_splits_are_refused():
    sizes = {split: len(minimal_pairs(split)) for split in SPLITS}
    assert sizes == {"dev": 45, "held-out": 40, "final": 40, "final2": 40, "tags-dev": 30, "tags-final": 40}
    assert len(minimal_pairs()) == sum(sizes.values())
    assert not {p for pair in minimal_pairs() for p in (pair.pulling, pair.neutral)} & set(calibration_prompts())
    with pytest.raises(OptionsError):
        minimal_pairs("tags")


def test_a_tag_pair_has_the_tags_as_contexts_and_a_comma_before_the_target():
    pair = MinimalPair("mouse", "computer desk, mouse", "garden bench, mouse", "tags-dev")
    assert pair.contexts == ("computer desk", "garden bench", ", mouse")
    assert pair.three_item_prompts() == ["garden bench, computer desk, mouse", "computer desk, garden bench, mouse"]


def test_sentence_pairs_keep_their_contexts():
    pair = MinimalPair("bats", "a baseball game with bats", "a red car with bats")
    assert pair.contexts == ("a baseball game", "a red car", " with bats")
    assert pair.three_item_prompts()[0] == "a red car, a baseball game with bats"


@pytest.mark.parametrize("split", ["final2", *TAG_SPLITS])
def test_new_pairs_segment_into_their_contexts_and_target(split, nlp):
    """Each prompt ends with the target as an item; in a tag split every item is a tag; no neutral context is
    part of the pulling one (the source check compares text)."""
    for pair in minimal_pairs(split):
        pulling, neutral, _ = pair.contexts
        assert neutral not in pulling and pulling not in neutral, pair
        for prompt in (pair.pulling, pair.neutral, *pair.three_item_prompts()):
            items = segment(prompt, nlp)
            assert items[-1].text.split()[-len(pair.target.split()) :] == pair.target.split(), (prompt, items)
            if split in TAG_SPLITS:
                assert all(item.tag for item in items) and len(items) == prompt.count(",") + 1, (prompt, items)


def test_a_target_of_several_words_is_found_in_the_report(minilm_encoder, nlp):
    report = FlowPatcher(minilm_encoder, nlp=nlp).run("tiger, striped shirt").report
    assert target_entry(report, "striped shirt").item.text == "striped shirt"
    assert target_entry(report, "shirt").item.text == "striped shirt"


def test_an_outcome_says_whether_its_target_is_a_tag_and_is_flagged_against_that_null(minilm_encoder, nlp):
    """A tag of a tag list is patched against the calibration's tag null: the outcome says which null applies,
    so a sweep over sensitivities (`benchmarks/leakage.py`) compares each score with the threshold that flagged it."""
    patcher = FlowPatcher(minilm_encoder, nlp=nlp)
    tags = MinimalPair("mouse", "computer desk, mouse", "garden bench, mouse", "tags-dev")
    sentence = MinimalPair("bats", "a baseball game with bats", "a red car with bats")
    outcomes = evaluate_pairs(patcher, [tags, sentence])
    assert [outcome.tag for outcome in outcomes] == [True, False]
    for outcome in outcomes:
        threshold = patcher.calibration.threshold(0.5, tag=outcome.tag)
        assert outcome.pulling_flagged == (outcome.pulling_score >= threshold), outcome
        assert outcome.neutral_flagged == (outcome.neutral_score >= threshold), outcome
