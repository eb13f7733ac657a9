"""What Follow the Flow adds to a generation in a running WebUI, side by side with Cutoff, through its API.

Start the WebUI with `--api` (and, for the Cutoff rows, the sd-webui-cutoff extension installed), then:

    python benchmarks/webui_overhead.py --url http://127.0.0.1:7860 --rounds 5

Every round generates one image per variant, in turn, so that a drift in the machine's speed falls on every
variant alike; each figure is the median over rounds of the difference with the "off" image of the same
round. Variants:
- off: no extension (a new prompt each round, so the WebUI encodes it as it would a new prompt);
- off, repeated prompt: the WebUI's cond cache answers; `off - off repeated` is what a plain encode of the
  prompt costs in this WebUI;
- FtF Automatic / FtF Markers only (one marked item): a new prompt each round;
- FtF Automatic, repeated prompt: the same prompt as in the previous round (every cache warm);
- Cutoff: the peer extension, with the colours as targets (weight 0.5), a new prompt each round.
A new prompt is the base prompt with a round number appended ("..., pink skirt, 3"), which changes one
token and no item. The first round warms up (and calibrates the model, once) and is not counted.
The standard library is all it needs.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
import urllib.request

PROMPT = "a cute girl, white shirt with green tie, red shoes, blue hair, yellow eyes, pink skirt"
MARKED = "a cute girl, white shirt with ~green tie~, red shoes, blue hair, yellow eyes, pink skirt"
CUTOFF_TARGETS = "white, green, red, blue, yellow, pink"


def post(url: str, path: str, payload: dict) -> dict:
    request = urllib.request.Request(
        url + path, data=json.dumps(payload).encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=900) as response:
        return json.loads(response.read())


def get(url: str, path: str) -> dict:
    with urllib.request.urlopen(url + path, timeout=60) as response:
        return json.loads(response.read())


def variants(with_cutoff: bool) -> dict[str, tuple[str, dict, bool]]:
    """name -> (prompt, alwayson_scripts, new prompt each round)."""
    ftf = "Follow the Flow"
    table = {
        "off": (PROMPT, {}, True),
        "off, repeated prompt": (PROMPT, {}, False),
        "FtF Automatic": (PROMPT, {ftf: {"args": [True, "Automatic", 0.5]}}, True),
        "FtF Automatic, repeated prompt": (PROMPT, {ftf: {"args": [True, "Automatic", 0.5]}}, False),
        "FtF Markers only (1 item)": (MARKED, {ftf: {"args": [True, "Markers only", 0.5]}}, True),
    }
    if with_cutoff:
        table["Cutoff"] = (PROMPT, {"Cutoff": {"args": [True, CUTOFF_TARGETS, 0.5]}}, True)
    return table


def main(argv: list[str] | None = None) -> dict[str, list[float]]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--url", default="http://127.0.0.1:7860")
    parser.add_argument("--rounds", type=int, default=5, help="counted rounds (one warm-up round more)")
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--sampler", default="Euler")
    parser.add_argument("--negative", default="blurry")
    parser.add_argument("--no-cutoff", action="store_true", help="skip Cutoff (not installed)")
    args = parser.parse_args(argv)

    scripts = get(args.url, "/sdapi/v1/scripts")["txt2img"]
    with_cutoff = not args.no_cutoff and any(name.lower() == "cutoff" for name in scripts)
    model = get(args.url, "/sdapi/v1/options").get("sd_model_checkpoint", "?")
    print(f"WebUI at {args.url}, model {model}, {args.size}x{args.size}, {args.steps} steps, {args.sampler}")
    table = variants(with_cutoff)
    times: dict[str, list[float]] = {name: [] for name in table}
    for round_number in range(args.rounds + 1):
        for name, (prompt, alwayson, new_each_round) in table.items():
            text = f"{prompt}, {round_number}" if new_each_round else prompt
            payload = {
                "prompt": text,
                "negative_prompt": args.negative,
                "steps": args.steps,
                "width": args.size,
                "height": args.size,
                "sampler_name": args.sampler,
                "seed": 1,
                "alwayson_scripts": alwayson,
            }
            started = time.perf_counter()
            post(args.url, "/sdapi/v1/txt2img", payload)
            if round_number:  # round 0 warms up
                times[name].append(time.perf_counter() - started)

    off = times["off"]
    print(f"\n{'variant':<32} {'median s':>9} {'added s':>8} {'ratio to off':>13}")
    for name, values in times.items():
        added = statistics.median(v - o for v, o in zip(values, off))
        ratio = statistics.median(v / o for v, o in zip(values, off))
        print(f"{name:<32} {statistics.median(values):>9.3f} {added:>+8.3f} {ratio:>13.3f}")
    plain = statistics.median(o - r for o, r in zip(off, times["off, repeated prompt"]))
    print(f"\nplain encode of the prompt (off - off repeated): {plain:.3f} s")
    if with_cutoff:
        ftf = statistics.median(v - o for v, o in zip(times["FtF Automatic"], off))
        cutoff = statistics.median(v - o for v, o in zip(times["Cutoff"], off))
        print(f"FtF Automatic adds {ftf / cutoff:.2f}x what Cutoff adds" if cutoff > 0 else "Cutoff added nothing")
    return times


if __name__ == "__main__":
    main()
