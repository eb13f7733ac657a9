"""How much `FlowPatcher.run` costs next to one plain encode of the same prompt, on the CPU.

Real-size random weights (SD 1.5's text encoder: hidden 768, 12 layers, 123M parameters) with the real
CLIP tokenizer and spaCy parser. "plain" is what a pipeline does: tokenize to 77 ids and one forward
call. "run" is flowcore's whole job (segment, encode, encode the items alone, score, patch) with empty
caches; "repeated" is the same prompt again (caches warm). Medians over `--repeats` warm runs.
Budget (issue 3): run <= 1.5x plain at 6 items; repeated <= 1.05x.

    python benchmarks/speed.py [--repeats 9]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from flowcore import ClipEncoder, FlowOptions, FlowPatcher, load_nlp, segment
from flowcore.testing import clip_tokenizer, sd15_size_text_model

PROMPTS = {
    1: "a zebra, highly detailed",
    3: "a crosswalk next to a bus station with a standing zebra",
    6: "a crosswalk next to a bus station with a standing zebra, a red umbrella, a yellow taxi and an old lamp post",
    10: (
        "a crosswalk next to a bus station with a standing zebra, a red umbrella, a yellow taxi, an old lamp post, "
        "a wooden bench, a small dog, a green bicycle and a glass bottle"
    ),
}


def median_ms(function, repeats: int) -> float:
    function()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=9)
    args = parser.parse_args()

    torch.manual_seed(0)
    tokenizer, model, nlp = clip_tokenizer(), sd15_size_text_model(), load_nlp()
    patcher = FlowPatcher(ClipEncoder(tokenizer, model), FlowOptions(sensitivity=0.5), nlp=nlp)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, SD 1.5-size CLIP text encoder (random)")
    print(f"{'items':>5} {'plain ms':>9} {'run ms':>8} {'run/plain':>9} {'repeated ms':>11} {'rep/plain':>9}  patched")

    for n_items, prompt in PROMPTS.items():
        assert len(segment(prompt, nlp)) == n_items, (n_items, [i.text for i in segment(prompt, nlp)])

        def plain(prompt=prompt):
            ids = tokenizer(prompt, padding="max_length", max_length=77, truncation=True, return_tensors="pt")
            with torch.no_grad():
                model(ids["input_ids"])

        def cold(prompt=prompt):
            patcher.clear_cache()
            return patcher.run(prompt)

        plain_ms = median_ms(plain, args.repeats)
        run_ms = median_ms(cold, args.repeats)
        repeated_ms = median_ms(lambda prompt=prompt: patcher.run(prompt), args.repeats)
        patched = len(patcher.run(prompt).report.patched_items)
        print(
            f"{n_items:>5} {plain_ms:>9.1f} {run_ms:>8.1f} {run_ms / plain_ms:>8.2f}x "
            f"{repeated_ms:>11.2f} {repeated_ms / plain_ms:>8.3f}x  {patched}"
        )


if __name__ == "__main__":
    main()
