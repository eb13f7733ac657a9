"""Leak detection reacts to meaning (trained MiniLM), not to position; its scale is calibrated per encoder."""

import pytest
import torch

from flowcore import FlowOptions, FlowPatcher
from flowcore.detection.calibration import Calibration, ItemSample, fit
from flowcore.detection.leakage import cosine, leak_scores, patch_share
from flowcore.studies.evaluation import evaluate_pairs, minimal_pairs, summarize


@pytest.fixture(scope="module")
def minilm_patcher(minilm_encoder, nlp):
    return FlowPatcher(minilm_encoder, nlp=nlp)


@pytest.fixture(scope="module")
def dev_summary(minilm_patcher):
    return summarize(evaluate_pairs(minilm_patcher, minimal_pairs("dev")))


def test_pulling_contexts_score_higher_than_neutral_ones(dev_summary):
    # Measured on the 45 dev pairs: see `benchmarks/leakage.py`. Chance is 0.5.
    assert dev_summary.pairs == 45 and dev_summary.wins >= 0.8


def test_the_pulling_item_is_named_as_the_source(dev_summary):
    assert dev_summary.source_right >= 0.9


def test_the_default_sensitivity_flags_pulling_far_more_than_neutral_contexts(dev_summary):
    assert dev_summary.pulling_flagged >= 0.5 and dev_summary.neutral_flagged <= 0.15


def test_position_alone_scores_nothing(clip_encoder, nlp):
    """An item after words that are not items has nothing to leak from, wherever it sits, although its
    raw distance to the item encoded at the start of a prompt is far from zero."""
    patcher = FlowPatcher(clip_encoder, nlp=nlp)
    for prompt in ["zebra", "and then a zebra", "and then, very very slowly, a zebra"]:
        (entry,) = patcher.run(prompt).report.items
        assert entry.leak_score is None and entry.source is None and not entry.patched
    far = patcher.run("and then, very very slowly, a zebra")
    (entry,) = far.report.items
    moved = cosine(far.original[entry.rows[-1]], patcher.isolated("zebra").rows[-1])
    assert moved < 0.99


def test_causal_items_are_pulled_only_by_earlier_items(patcher):
    report = patcher.run("a crosswalk next to a bus station with a standing zebra").report
    first, second, third = report.items
    assert first.pulls == [] and [p.source.text for p in second.pulls] == ["crosswalk"]
    assert {p.source.text for p in third.pulls} == {"crosswalk", "bus station"}


def test_bidirectional_items_can_be_pulled_by_later_items(minilm_patcher):
    report = minilm_patcher.run("bats next to a baseball game").report
    assert [p.source.text for p in report.items[0].pulls] == ["baseball game"]


def test_without_correction_a_pull_is_twice_the_cosine_of_the_item_in_context_and_the_source_alone():
    in_context, alone, source = torch.tensor([[1.0, 0.5]]), torch.tensor([[1.0, 0.0]]), torch.tensor([[1.0, 1.0]])
    (_, scored) = leak_scores([source, in_context], [source, alone], [[], [0]], True, Calibration.identity(2))
    pull = scored.pulls[0]
    assert pull.similarity == pytest.approx(cosine(in_context[0], source[0]))
    assert pull.relatedness == pytest.approx(2**-0.5)
    assert pull.value == pytest.approx(2 * pull.similarity) and scored.score == pull.value and scored.source == 0


def test_leak_scores_pick_the_strongest_source():
    rows = [torch.tensor([[1.0, 0.0, 0.0]]), torch.tensor([[0.0, 1.0, 0.0]]), torch.tensor([[0.6, 0.8, 0.0]])]
    alone = [rows[0], rows[1], torch.tensor([[0.7, 0.7, 0.1]])]
    scores = leak_scores(rows, alone, [[], [0], [0, 1]], True, Calibration.identity(3))
    assert scores[0].source is None and scores[0].score == 0.0
    assert scores[2].source == 1 and scores[2].score == max(p.value for p in scores[2].pulls.values())


def test_the_hubness_terms_discount_vectors_close_to_everything():
    """A source alone that is close to every contextual vector of the calibration (a hub) pulls less."""
    hub, plain = torch.tensor([1.0, 0.0, 0.0]), torch.tensor([0.0, 1.0, 0.0])
    calibration = Calibration.identity(3)
    calibration.contextual = torch.nn.functional.normalize(torch.tensor([[1.0, 0.1, 0.0], [1.0, 0.0, 0.1]]), dim=1)
    calibration.isolated = torch.tensor([[0.0, 0.0, 1.0]])
    item = torch.nn.functional.normalize(torch.tensor([[1.0, 1.0, 0.0]]), dim=1)  # as close to hub as to plain
    scores = leak_scores(
        [hub[None], plain[None], item], [hub[None], plain[None], item], [[], [], [0, 1]], True, calibration
    )
    assert scores[2].pulls[0].similarity == pytest.approx(scores[2].pulls[1].similarity)
    assert scores[2].pulls[0].value < scores[2].pulls[1].value and scores[2].source == 1


def test_sensitivity_maps_to_a_share_of_unrelated_items():
    shares = [patch_share(s) for s in (0.0, 0.25, 0.5, 0.75, 1.0)]
    assert shares[0] == 0.0 and shares[2] == pytest.approx(0.1) and shares[4] == pytest.approx(1.0)
    assert shares == sorted(shares)


def _synthetic_calibration(n_prompts: int = 40, dim: int = 8) -> Calibration:
    torch.manual_seed(0)
    samples = []
    for prompt in range(n_prompts):
        first = len(samples)
        for index in range(3):
            vector = torch.randn(dim)
            samples.append(
                ItemSample(vector + 0.1 * torch.randn(dim), vector, prompt, tuple(range(first, first + index)))
            )
    return fit(torch.randn(200, dim), samples, key="synthetic")


def test_the_threshold_is_reached_by_the_chosen_share_of_null_scores():
    calibration = _synthetic_calibration()
    assert len(calibration.null) == 80  # the second and third item of each prompt have candidates
    for sensitivity in (0.3, 0.5, 0.75, 0.9):
        threshold = calibration.threshold(sensitivity)
        assert calibration.share_at_least(threshold) == pytest.approx(patch_share(sensitivity), abs=1.5 / 80)
    assert calibration.threshold(0.0) == float("inf") and calibration.threshold(1.0) == float("-inf")
    assert calibration.threshold(0.02) >= calibration.null[-1].item()  # below one score: above all of them


def test_tags_of_tag_lists_get_a_null_of_their_own_and_stay_out_of_the_banks():
    """Tag samples (pulled harder here: their contextual vector sits near the other tags') make `tag_null`;
    the sentences' null, banks and thresholds are what they would be without them."""
    torch.manual_seed(0)
    dim, samples = 8, []
    token_rows = torch.randn(200, dim)
    for prompt in range(40):
        first = len(samples)
        for index in range(3):
            vector = torch.randn(dim)
            samples.append(
                ItemSample(vector + 0.1 * torch.randn(dim), vector, prompt, tuple(range(first, first + index)))
            )
    sentences_only = fit(token_rows, samples)
    for prompt in range(40, 60):
        first, shared = len(samples), torch.randn(dim)
        for index in range(4):
            vector = torch.randn(dim)
            contextual = 0.5 * vector + shared
            samples.append(ItemSample(contextual, vector + shared, prompt, tuple(range(first, first + index)), True))
    both = fit(token_rows, samples)
    assert len(both.null) == 80 and len(both.tag_null) == 60 and len(both.contextual) == 120
    assert torch.equal(both.null, sentences_only.null) and torch.equal(both.isolated, sentences_only.isolated)
    assert both.threshold(0.5, tag=True) > both.threshold(0.5)
    share = both.share_at_least(both.threshold(0.5, tag=True), tag=True)
    assert share == pytest.approx(patch_share(0.5), abs=1.5 / 60)
    assert sentences_only.threshold(0.5, tag=True) == sentences_only.threshold(0.5)  # no tag null: the null


def test_a_calibration_round_trips_through_safetensors_and_json(tmp_path):
    calibration = _synthetic_calibration()
    calibration.tag_null = torch.tensor([0.1, 0.2, 0.3])
    calibration.save(tmp_path / "c")
    loaded = Calibration.load(tmp_path / "c")
    assert loaded.key == "synthetic" and torch.equal(loaded.null, calibration.null)
    assert torch.equal(loaded.tag_null, calibration.tag_null)
    torch.testing.assert_close(loaded.transform(torch.ones(2, 8)), calibration.transform(torch.ones(2, 8)))


def test_calibration_is_cached_on_disk_under_the_encoders_identity(clip_encoder, nlp, tmp_path, monkeypatch):
    monkeypatch.setenv("FLOWCORE_CACHE", str(tmp_path))
    first = FlowPatcher(clip_encoder, nlp=nlp).calibration
    assert list((tmp_path / "calibration").glob("*.safetensors"))
    tower = clip_encoder.towers[0]
    monkeypatch.setattr(tower, "hidden_states", lambda *a, **k: pytest.fail("the cached calibration was not used"))
    second = FlowPatcher(clip_encoder, nlp=nlp).calibration
    assert second.key == first.key and torch.equal(second.null, first.null)


def test_the_identity_changes_when_the_weights_change(tokenizer):
    from flowcore import ClipEncoder
    from flowcore.testing import tiny_clip_text_model

    model = tiny_clip_text_model(seed=5)
    encoder = ClipEncoder(tokenizer, model)
    before = encoder.identity()
    assert ClipEncoder(tokenizer, model).identity() == before
    assert ClipEncoder(tokenizer, model, clip_skip=2).identity() != before
    with torch.no_grad():
        core = getattr(model, "text_model", model)  # transformers 4.x nests the transformer
        core.encoder.layers[0].self_attn.q_proj.weight.mul_(1.01)  # as a LoRA merged into the weights would
    assert encoder.identity() != before


def test_the_report_shows_why_each_item_was_or_was_not_patched(minilm_encoder, nlp):
    patcher = FlowPatcher(minilm_encoder, FlowOptions(sensitivity=1.0), nlp=nlp)
    report = patcher.run("a baseball game with bats").report
    bats = report.items[-1]
    assert bats.patched and "threshold" in bats.reason and bats.source.text == "baseball game"
    assert "every item another item could have pulled" in report.describe_threshold()
    quiet = FlowPatcher(minilm_encoder, FlowOptions(sensitivity=0.0), nlp=nlp).run("a baseball game with bats")
    assert not quiet.report.items[-1].patched and torch.equal(quiet.patched, quiet.original)
    assert quiet.report.to_dict()["threshold"] is None


def test_presence_is_one_for_an_item_without_context(clip_encoder, nlp):
    (entry,) = FlowPatcher(clip_encoder, nlp=nlp).run("zebra").report.items
    assert entry.presence == pytest.approx(1.0, abs=1e-5)


def test_run_encodes_prompt_and_items_in_one_pass_and_caches_it(clip_encoder, nlp):
    patcher = FlowPatcher(clip_encoder, nlp=nlp)
    patcher.calibration  # noqa: B018  (measured, or loaded, before counting)
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
    # One forward call: 77 prompt rows (their BOS seen by every block) + [crosswalk] at its position 2 + [zebra]
    # at its position 5 and at 1 (to patch with). Nothing can pull the first item of a causal prompt: it is never
    # patched.
    assert calls == [torch.Size([1, 77 + 2 + 1 + 1])]
    assert torch.equal(first.patched, second.patched)
