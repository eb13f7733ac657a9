"""A first run: the batched calibration measures what encoding each prompt whole did, a cold run reports exactly
what a cached run does, and only the cold run says it calibrates (timings: `benchmarks/first_run.py`)."""

from __future__ import annotations

import json

import pytest
import torch
from pipeline_fixtures import *  # noqa: F403 (the tiny pipelines, saved in each format)

from flowcore import FlowOptions, FlowPatcher
from flowcore.detection import calibration
from flowcore.detection.calibration import Calibration, ItemSample, fit
from flowcore.detection.leakage import item_vector, pull_value
from flowcore.encoders.placement import place_all
from flowcore.frontends.cli import main
from flowcore.prompts.markers import parse_markers

PROMPT = "a crosswalk next to a bus station with a standing zebra"
# A few sentences, a prompt of two chunks and a few tag lists: more than one batch, quick to calibrate.
BREAK_PROMPT = "a red bicycle next to a wooden barrel BREAK a teapot, a violin and a pine cone"


@pytest.fixture()
def few_prompts(monkeypatch) -> list[str]:
    """Calibrate on a few of the built-in prompts (and one of two chunks), in more than one batch."""
    prompts = calibration.calibration_prompts()
    chosen = [*prompts[: calibration.PROMPTS_PER_BATCH + 3], BREAK_PROMPT, *prompts[-3:]]
    monkeypatch.setattr(calibration, "calibration_prompts", lambda: chosen)
    return chosen


def prompt_by_prompt(patcher: FlowPatcher) -> tuple[torch.Tensor, list[ItemSample]]:
    """The calibration's inputs as they were computed before batching: each prompt encoded whole (77-row chunks
    with their end token and padding), its items alone in the same pass, one prompt at a time."""
    scoring_only = FlowOptions(sensitivity=0.0)
    token_rows, samples = [], []
    for number, prompt in enumerate(calibration.calibration_prompts()):
        marked = parse_markers(prompt)
        layout, encoding = patcher._encoded(marked, scoring_only)
        placed = place_all(patcher._segment(marked), layout)
        if not all(entry.item.tag for entry in placed):
            token_rows.append(encoding.rows[[row for row, _ in layout.token_rows()]])
        contextual, matched, candidates = patcher._measure(encoding.rows, layout, placed)
        usable = [index for index, rows in enumerate(matched) if rows is not None]
        first = len(samples)
        for index in usable:
            others = tuple(first + usable.index(j) for j in candidates[index] if j in usable)
            vectors = item_vector(contextual[index], True), item_vector(matched[index], True)
            samples.append(ItemSample(*vectors, number, others, placed[index].item.tag))
    return torch.cat(token_rows), samples


def one_item_at_a_time(fitted: Calibration, samples: list[ItemSample]) -> tuple[list[float], list[float]]:
    """The null scores as `fit` computed them before: each item's hubness terms against the banks without its
    own prompt's items, one item and one candidate at a time."""
    contextual = fitted.transform(torch.stack([s.contextual for s in samples]))
    isolated = fitted.transform(torch.stack([s.isolated for s in samples]))
    prompts = torch.tensor([s.prompt for s in samples])
    in_banks = torch.tensor([not s.tag for s in samples])
    null, tag_null = [], []
    for index, sample in enumerate(samples):
        if not sample.candidates:
            continue
        elsewhere = (prompts != sample.prompt) & in_banks
        r_c = Calibration._hubness(contextual[index : index + 1], isolated[elsewhere]).item()
        pulls = [
            pull_value(
                (contextual[index] @ isolated[j]).item(),
                r_c,
                Calibration._hubness(isolated[j : j + 1], contextual[elsewhere]).item(),
            )
            for j in sample.candidates
        ]
        (tag_null if sample.tag else null).append(max(pulls))
    return sorted(null), sorted(tag_null)


@pytest.mark.parametrize("encoder_name", ["clip_encoder", "sdxl_encoder"])
def test_the_batched_calibration_equals_encoding_each_prompt_whole(encoder_name, request, nlp, few_prompts):
    encoder = request.getfixturevalue(encoder_name)
    batched = FlowPatcher(encoder, nlp=nlp).calibrate(use_cache=False)

    token_rows, samples = prompt_by_prompt(FlowPatcher(encoder, nlp=nlp))
    expected = fit(token_rows, samples)
    null, tag_null = one_item_at_a_time(expected, samples)
    assert len(null) > 10 and len(tag_null) > 10  # sentences and tag lists, several batches
    for name in ("mean", "scale", "directions", "contextual", "isolated"):
        torch.testing.assert_close(getattr(batched, name), getattr(expected, name), atol=1e-5, rtol=0, msg=name)
    torch.testing.assert_close(batched.null, torch.tensor(null), atol=1e-5, rtol=0)
    torch.testing.assert_close(batched.tag_null, torch.tensor(tag_null), atol=1e-5, rtol=0)


def test_a_calibration_reports_its_progress_batch_by_batch(clip_encoder, nlp, few_prompts):
    seen = []
    FlowPatcher(clip_encoder, nlp=nlp, calibration_progress=lambda *step: seen.append(step)).calibrate(use_cache=False)
    total = len(few_prompts)
    assert seen[0] == (0, total) and seen[-1] == (total, total)
    assert [done for done, _ in seen] == sorted({done for done, _ in seen})  # rising, one step per batch
    assert len(seen) == 1 + -(-total // calibration.PROMPTS_PER_BATCH)


def test_a_cold_run_says_it_calibrates_and_reports_what_the_cached_run_does(
    sd15_folder, few_prompts, tmp_path, monkeypatch, capsys
):
    monkeypatch.setenv("FLOWCORE_CACHE", str(tmp_path))
    argv = ["analyze", PROMPT, "--model", str(sd15_folder), "--device", "cpu", "--json"]
    assert main(argv) == 0
    cold = capsys.readouterr()
    assert main(argv) == 0
    cached = capsys.readouterr()

    assert json.loads(cold.out) == json.loads(cached.out)
    assert json.loads(cold.out)["threshold"] is not None
    assert cold.err.count("Calibrating this text encoder once") == 1 and str(tmp_path) in cold.err
    assert f"{len(few_prompts)}/{len(few_prompts)}" in cold.err  # the progress bar, finished
    assert "Calibrat" not in cached.err
