"""How much `FlowPatcher.run` costs next to one plain encode of the same prompt, on the CPU.

Real-size random weights (SD 1.5's text encoder: hidden 768, 12 layers, 123M parameters) with the real
CLIP tokenizer and spaCy parser. "plain" is what a pipeline does: tokenize to 77 ids and one forward
call. "run" is flowcore's whole job (segment, encode, encode the items alone, score, patch) with empty
caches; "repeated" is the same prompt again (caches warm). The three are timed in turn within each
repeat and each ratio is the median of the per-repeat ratios, so that drift in a shared machine's speed
falls on both sides of a ratio alike. The encoder's calibration (once per model, then read from the disk
cache) is measured first and printed on its own.
Budget (issues 3 and 8): run <= 1.5x plain at 6 items; repeated <= 1.05x.

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


def seconds(function) -> float:
    start = time.perf_counter()
    function()
    return time.perf_counter() - start


def interleaved(functions: dict, repeats: int) -> dict[str, list[float]]:
    """Time each function once per repeat, in turn, after one warm-up call each."""
    for function in functions.values():
        function()
    times: dict[str, list[float]] = {name: [] for name in functions}
    for _ in range(repeats):
        for name, function in functions.items():
            times[name].append(seconds(function))
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=9)
    args = parser.parse_args()

    torch.manual_seed(0)
    tokenizer, model, nlp = clip_tokenizer(), sd15_size_text_model(), load_nlp()
    encoder = ClipEncoder(tokenizer, model)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, SD 1.5-size CLIP text encoder (random)")
    started = time.perf_counter()
    calibration = FlowPatcher(encoder, nlp=nlp).calibrate(use_cache=False)  # measured, not read from the cache
    print(f"calibration: {time.perf_counter() - started:.1f} s once per model ({len(calibration.null)} null scores)")
    patcher = FlowPatcher(encoder, FlowOptions(sensitivity=0.5), nlp=nlp, calibration=calibration)
    print(f"{'items':>5} {'plain ms':>9} {'run ms':>8} {'run/plain':>9} {'repeated ms':>11} {'rep/plain':>9}  patched")

    for n_items, prompt in PROMPTS.items():
        items = [item.text for item in segment(prompt, nlp) if not item.style]  # style tags are never patched
        assert len(items) == n_items, (n_items, items)

        def plain(prompt=prompt):
            ids = tokenizer(prompt, padding="max_length", max_length=77, truncation=True, return_tensors="pt")
            with torch.no_grad():
                model(ids["input_ids"])

        def cold(prompt=prompt):
            patcher.clear_cache()
            return patcher.run(prompt)

        times = interleaved({"plain": plain, "run": cold, "repeated": lambda p=prompt: patcher.run(p)}, args.repeats)
        plain_ms, run_ms, repeated_ms = (1000 * statistics.median(times[k]) for k in ("plain", "run", "repeated"))
        run_ratio = statistics.median(r / p for r, p in zip(times["run"], times["plain"]))
        repeated_ratio = statistics.median(r / p for r, p in zip(times["repeated"], times["plain"]))
        patched = len(patcher.run(prompt).report.patched_items)
        print(
            f"{n_items:>5} {plain_ms:>9.1f} {run_ms:>8.1f} {run_ratio:>8.2f}x "
            f"{repeated_ms:>11.2f} {repeated_ratio:>8.3f}x  {patched}"
        )


if __name__ == "__main__":
    main()
