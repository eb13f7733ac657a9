"""Leak detection reacts to meaning (trained MiniLM), not to position, and its report explains itself."""

import pytest
import torch

from flowcore import FlowOptions, FlowPatcher
from flowcore.analysis import THRESHOLD_AT_HALF, cosine, leak_scores, pull, threshold_for
from flowcore.evaluation import MINIMAL_PAIRS, evaluate_pairs, ranking_accuracy


@pytest.fixture(scope="module")
def pair_outcomes(minilm_encoder, nlp):
    return evaluate_pairs(FlowPatcher(minilm_encoder, nlp=nlp))


def test_pulling_contexts_score_higher_than_neutral_ones(pair_outcomes):
    # Measured: 17 of 20 pairs (0.85). Chance is 0.5; the shift alone, without relatedness, gets 0.25.
    assert ranking_accuracy(pair_outcomes) >= 0.75


def test_the_pulling_item_is_named_as_the_source(pair_outcomes):
    named = [o for o in pair_outcomes if o.pulling_source]
    assert len(named) >= 0.9 * len(pair_outcomes)  # measured: 19 of 20 ("python" shows no pull)
    for outcome in named:
        assert outcome.pulling_source in outcome.pair.pulling.replace(outcome.pair.target, "")


def test_the_default_threshold_separates_pulling_from_neutral(pair_outcomes):
    threshold = threshold_for(0.5)
    flagged_pulling = sum(o.pulling_score >= threshold for o in pair_outcomes)
    flagged_neutral = sum(o.neutral_score >= threshold for o in pair_outcomes)
    assert flagged_pulling > 2 * flagged_neutral
    assert flagged_neutral <= len(MINIMAL_PAIRS) // 4


def test_position_alone_scores_zero(clip_encoder, nlp):
    """An item after words that are not items has nothing to leak from, wherever it sits, although its
    raw distance to the item encoded at the start of a prompt is far from zero."""
    patcher = FlowPatcher(clip_encoder, nlp=nlp)
    for prompt in ["zebra", "and then a zebra", "and then, very very slowly, a zebra"]:
        (entry,) = patcher.run(prompt).report.items
        assert entry.leak_score == 0.0 and entry.source is None and not entry.patched
    far = patcher.run("and then, very very slowly, a zebra")
    (entry,) = far.report.items
    moved = cosine(far.original[entry.rows[-1]], patcher.isolated("zebra").rows[-1])
    assert moved < 0.99


def test_causal_items_are_pulled_only_by_earlier_items(patcher):
    report = patcher.run("a crosswalk next to a bus station with a standing zebra").report
    first, second, third = report.items
    assert first.pulls == [] and [p.source.text for p in second.pulls] == ["crosswalk"]
    assert {p.source.text for p in third.pulls} == {"crosswalk", "bus station"}


def test_bidirectional_items_can_be_pulled_by_later_items(minilm_encoder, nlp):
    report = FlowPatcher(minilm_encoder, nlp=nlp).run("bats next to a baseball game").report
    assert [p.source.text for p in report.items[0].pulls] == ["baseball game"]


def test_pull_is_shift_times_relatedness():
    item_alone, source = torch.tensor([1.0, 0.0]), torch.tensor([1.0, 1.0])
    in_context = torch.tensor([1.0, 0.5])
    score = pull(in_context, item_alone, source)
    assert score.relatedness == pytest.approx(2**-0.5)
    assert score.shift == pytest.approx(cosine(in_context, source) - 2**-0.5)
    assert score.value == pytest.approx(score.shift * score.relatedness)
    # Unrelated items (negative relatedness) cannot leak into each other.
    assert pull(torch.tensor([0.0, 1.0]), torch.tensor([1.0, 0.0]), torch.tensor([-1.0, 0.2])).value == 0.0


def test_leak_scores_pick_the_strongest_source():
    rows = [torch.tensor([[1.0, 0.0, 0.0]]), torch.tensor([[0.0, 1.0, 0.0]]), torch.tensor([[0.6, 0.8, 0.0]])]
    alone = [rows[0], rows[1], torch.tensor([[0.7, 0.7, 0.1]])]
    scores = leak_scores(rows, alone, [[], [0], [0, 1]], causal=True)
    assert scores[0].source is None and scores[0].score == 0.0
    assert scores[2].source == 1 and scores[2].score == max(p.value for p in scores[2].pulls.values())


def test_sensitivity_moves_the_threshold_monotonically():
    values = [threshold_for(s) for s in (0.0, 0.25, 0.5, 0.75, 1.0)]
    assert values[0] == float("inf") and values[2] == THRESHOLD_AT_HALF
    assert values == sorted(values, reverse=True)


def test_the_report_shows_why_each_item_was_or_was_not_patched(minilm_encoder, nlp):
    patcher = FlowPatcher(minilm_encoder, FlowOptions(sensitivity=1.0), nlp=nlp)
    report = patcher.run("a baseball game with bats").report
    bats = report.items[-1]
    assert bats.patched and "threshold" in bats.reason and bats.source.text == "baseball game"
    quiet = FlowPatcher(minilm_encoder, FlowOptions(sensitivity=0.0), nlp=nlp).run("a baseball game with bats")
    assert not quiet.report.items[-1].patched and torch.equal(quiet.patched, quiet.original)
    assert quiet.report.to_dict()["threshold"] is None


def test_presence_is_one_for_an_item_without_context(clip_encoder, nlp):
    (entry,) = FlowPatcher(clip_encoder, nlp=nlp).run("zebra").report.items
    assert entry.presence == pytest.approx(1.0, abs=1e-5)


def test_run_encodes_prompt_and_items_in_one_pass_and_caches_it(clip_encoder, nlp):
    patcher = FlowPatcher(clip_encoder, nlp=nlp)
    tower = clip_encoder.towers[0]
    calls = []
    original = tower.hidden_states

    def counting(*args, **kwargs):
        calls.append(args[0].shape)
        return original(*args, **kwargs)

    tower.hidden_states = counting
    try:
        first = patcher.run("a crosswalk with a ~zebra~")
        second = patcher.run("a crosswalk with a ~zebra~")
    finally:
        del tower.hidden_states
    # One forward call: 77 prompt rows + [BOS crosswalk] at its position 2 + [BOS zebra] at its position 5
    # and at 1 (to patch with). Nothing can pull the first item of a causal prompt: it is never patched.
    assert calls == [torch.Size([1, 77 + 3 + 2 + 2])]
    assert torch.equal(first.patched, second.patched)
