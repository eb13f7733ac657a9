"""Tag-style prompts: does segmentation find their items, and does the calibrated sensitivity hold on them?

1. Segmentation on the held-out tag prompts (`flowcore/data/tag_prompts.jsonl`, written before the tag rule
   was scored on them and not tuned on): per prompt, the expected subject items found (exact text), those
   missing, junk (items found that are neither an expected item nor an expected style tag), and the quality/
   style tags recognised. No model needed.
2. The share of unrelated items that automatic mode patches on tag prompts of 10 or more unrelated tags
   (`flowcore/data/neutral_tag_prompts.txt`), against what the sensitivity promises (calibrated on sentences
   and tag lists of its own, `flowcore/data/calibration_prompts.txt`; tags are judged against the tags' null),
   on MiniLM-L6 and SmolLM2-135M. Counted over items that another item could have pulled (scored),
   quality/style tags left out (never patched).

    python benchmarks/tag_prompts.py [--no-models]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import flowcore
from flowcore import FlowOptions, FlowPatcher, segment
from flowcore.detection.leakage import patch_share
from flowcore.errors import ModelNotFoundError
from flowcore.testing import minilm_encoder, smollm2_encoder

DATA = Path(flowcore.__file__).parent / "data"
SENSITIVITIES = (0.25, 0.5, 0.75)
ENCODERS = {"MiniLM-L6 (bidirectional)": minilm_encoder, "SmolLM2-135M (causal)": smollm2_encoder}


def held_out_cases() -> list[dict]:
    lines = (DATA / "tag_prompts.jsonl").read_text(encoding="utf-8").splitlines()
    return [case for case in map(json.loads, filter(None, lines)) if case["split"] == "held-out"]


def neutral_prompts() -> list[str]:
    lines = (DATA / "neutral_tag_prompts.txt").read_text(encoding="utf-8").splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


def segmentation_table() -> dict:
    """Per held-out prompt and in total: subject items found / expected, junk items, style tags recognised."""
    totals = {"expected": 0, "found": 0, "junk": 0, "style expected": 0, "style found": 0, "style wrong": 0}
    print(f"{'prompt':<60} {'subjects':>9} {'junk':>5} {'style':>6}  missing / junk / style not recognised")
    for case in held_out_cases():
        items = segment(case["prompt"])
        texts = {item.text for item in items}
        style_found = {item.text for item in items if item.style}
        subjects, styles = set(case["items"]), set(case["style"])
        missing = [item for item in case["items"] if item not in texts]
        junk = [item.text for item in items if item.text not in subjects | styles]
        style_missed = [tag for tag in case["style"] if tag not in style_found]
        wrong_style = [text for text in style_found if text in subjects]  # a subject taken for a style tag
        totals["expected"] += len(subjects)
        totals["found"] += len(subjects) - len(missing)
        totals["junk"] += len(junk)
        totals["style expected"] += len(styles)
        totals["style found"] += len(styles) - len(style_missed)
        totals["style wrong"] += len(wrong_style)
        notes = " / ".join(", ".join(group) or "-" for group in (missing, junk, style_missed + wrong_style))
        prompt = case["prompt"] if len(case["prompt"]) <= 58 else case["prompt"][:55] + "..."
        print(
            f"{prompt:<60} {len(subjects) - len(missing):>4}/{len(subjects):<4} {len(junk):>5} "
            f"{len(styles) - len(style_missed):>3}/{len(styles):<2}  {notes}"
        )
    print(
        f"\nsubject items found: {totals['found']}/{totals['expected']} "
        f"({totals['found'] / totals['expected']:.0%}); junk items: {totals['junk']}; style tags recognised: "
        f"{totals['style found']}/{totals['style expected']}; subjects taken for style tags: {totals['style wrong']}"
    )
    return totals


def patched_share_table() -> dict[str, dict[float, float]]:
    """Per encoder and sensitivity: the share of scored, non-style items of the neutral tag prompts patched."""
    prompts = neutral_prompts()
    shares: dict[str, dict[float, float]] = {}
    print(f"\n{len(prompts)} neutral tag prompts, automatic mode: share of unrelated items patched")
    print(f"{'encoder':<27} {'items':>6} " + " ".join(f"{f'at {s}':>9}" for s in SENSITIVITIES))
    print(f"{'(promised)':<27} {'':>6} " + " ".join(f"{patch_share(s):>9.1%}" for s in SENSITIVITIES))
    for name, load in ENCODERS.items():
        try:
            encoder = load()
        except (ModelNotFoundError, ImportError) as error:
            print(f"{name:<27} not available: {error}")
            continue
        patcher = FlowPatcher(encoder)
        scored = []  # (leak score, whether the item is a tag of the list: judged against the tags' null)
        for prompt in prompts:
            report = patcher.run(prompt, FlowOptions(sensitivity=0.5)).report
            items = [e for e in report.items if not e.item.style and e.leak_score is not None]
            scored += [(e.leak_score, e.item.tag) for e in items]
        shares[name] = {
            s: sum(score >= patcher.calibration.threshold(s, tag) for score, tag in scored) / len(scored)
            for s in SENSITIVITIES
        }
        print(f"{name:<27} {len(scored):>6} " + " ".join(f"{shares[name][s]:>9.1%}" for s in SENSITIVITIES))
    return shares


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--no-models", action="store_true", help="segmentation only")
    args = parser.parse_args()
    segmentation_table()
    if not args.no_models:
        patched_share_table()
