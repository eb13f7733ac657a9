"""What Follow the Flow adds to a generation in a running WebUI, side by side with Cutoff, through its API.

Start the WebUI with `--api` (and, for the Cutoff rows, the sd-webui-cutoff extension installed), freshly: the
extension's caches live as long as the WebUI, so a second run on the same WebUI finds its items encoded. Then:

    python benchmarks/webui_overhead.py --url http://127.0.0.1:7860 --rounds 5

Every round generates one image per variant, in turn, so that a drift in the machine's speed falls on every
variant alike; each figure is the median over rounds of the difference with the "off" image of the same
round. Variants:
- off: no extension (a new prompt each round, so the WebUI encodes it as it would a new prompt);
- off, same prompt again: right after "off", so the WebUI's cond cache (which keeps the last prompt only)
  answers; `off - off again` is what a plain encode of the prompt costs in this WebUI;
- FtF Automatic / FtF Markers only (one marked item): a new prompt each round;
- FtF Every item: every item patched with its own encoding (no detector), a new prompt each round: the round's
  colours rotated by three, so that none of its colour items is one Automatic encoded in the same round ("cute
  girl", the first item, is the same in both: its encoding alone may be found cached);
- FtF Automatic, repeated prompt: the prompt of an earlier generation (the extension's caches are warm; the
  WebUI's, which keep only the last prompt, are not: it encodes the prompt as for "off");
- Cutoff: the peer extension, with the colours as targets (weight 0.5), a new prompt each round.
A new prompt is the base prompt with six other colours ("a cute girl, black shirt with orange tie, ..."), a
set of its own in every round, so that every item is new to the extension's caches (Markers only marks an
item of another template, "a cute boy, ... ~orange scarf~ ...", so that Automatic finds nothing of it cached);
each variant ends in a punctuation mark of its own, so that the WebUI's cond cache, which keeps the last
prompt, never answers but for "off, same prompt again". Cutoff's targets are that round's colours. The first
round warms up (loads spaCy, and calibrates the model once) and is not counted. The standard library is all
it needs.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
import urllib.request

TEMPLATE = "a cute girl, {} shirt with {} tie, {} shoes, {} hair, {} eyes, {} skirt"
MARKED_TEMPLATE = "a cute boy, {} hat with ~{} scarf~, {} boots, {} gloves, {} belt, {} socks"
PALETTE = [  # six colours a set: the base prompt's, then one set per round
    ["white", "green", "red", "blue", "yellow", "pink"],
    ["black", "orange", "purple", "brown", "gray", "silver"],
    ["golden", "violet", "teal", "navy", "beige", "maroon"],
    ["cyan", "magenta", "olive", "crimson", "turquoise", "lavender"],
    ["ivory", "coral", "indigo", "amber", "emerald", "scarlet"],
    ["azure", "khaki", "tan", "peach", "mint", "plum"],
    ["lime", "rose", "copper", "bronze", "charcoal", "cream"],
]
MAX_ROUNDS = len(PALETTE) - 2  # one set for the base prompt, one for the warm-up round
EVERY = "FtF Every item"


def post(url: str, path: str, payload: dict) -> dict:
    request = urllib.request.Request(
        url + path, data=json.dumps(payload).encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=900) as response:
        return json.loads(response.read())


def get(url: str, path: str) -> dict:
    with urllib.request.urlopen(url + path, timeout=60) as response:
        return json.loads(response.read())


def rotated(colours: list[str], by: int = 3) -> list[str]:
    """The same colours on other items ("white shirt" becomes "blue shirt")."""
    return colours[by:] + colours[:by]


def variants(with_cutoff: bool) -> dict[str, tuple[str, dict, bool]]:
    """name -> (prompt template with its own ending, alwayson_scripts, new colours each round)."""
    ftf = "Follow the Flow"
    table = {
        "off": (TEMPLATE, {}, True),
        "off, same prompt again": (TEMPLATE, {}, True),
        "FtF Automatic": (TEMPLATE + ",", {ftf: {"args": [True, "Automatic", 0.5]}}, True),
        "FtF Automatic, repeated prompt": (TEMPLATE + ".", {ftf: {"args": [True, "Automatic", 0.5]}}, False),
        "FtF Markers only (1 item)": (MARKED_TEMPLATE, {ftf: {"args": [True, "Markers only", 0.5]}}, True),
        EVERY: (TEMPLATE + "!", {ftf: {"args": [True, "Every item", 0.5]}}, True),
    }
    if with_cutoff:
        table["Cutoff"] = (TEMPLATE + ";", {"Cutoff": {"args": [True, "{targets}", 0.5]}}, True)
    return table


def main(argv: list[str] | None = None) -> dict[str, list[float]]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--url", default="http://127.0.0.1:7860")
    parser.add_argument("--rounds", type=int, default=MAX_ROUNDS, help=f"counted rounds, at most {MAX_ROUNDS}")
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--sampler", default="Euler")
    parser.add_argument("--negative", default="blurry")
    parser.add_argument("--no-cutoff", action="store_true", help="skip Cutoff (not installed)")
    args = parser.parse_args(argv)
    if not 1 <= args.rounds <= MAX_ROUNDS:
        parser.error(f"--rounds must be between 1 and {MAX_ROUNDS} (one colour set per round) but is {args.rounds}")

    scripts = get(args.url, "/sdapi/v1/scripts")["txt2img"]
    with_cutoff = not args.no_cutoff and any(name.lower() == "cutoff" for name in scripts)
    model = get(args.url, "/sdapi/v1/options").get("sd_model_checkpoint", "?")
    print(f"WebUI at {args.url}, model {model}, {args.size}x{args.size}, {args.steps} steps, {args.sampler}")
    table = variants(with_cutoff)
    times: dict[str, list[float]] = {name: [] for name in table}
    for round_number in range(args.rounds + 1):
        for name, (template, alwayson, new_each_round) in table.items():
            colours = PALETTE[round_number + 1 if new_each_round else 0]
            colours = rotated(colours) if name == EVERY else colours
            text = template.format(*colours)
            alwayson = json.loads(json.dumps(alwayson).replace("{targets}", ", ".join(colours)))
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
    print(
        "\nper round (s): "
        + "; ".join(f"{name} " + " ".join(f"{v:.2f}" for v in values) for name, values in times.items())
    )
    print(f"\n{'variant':<32} {'median s':>9} {'added s':>8} {'ratio to off':>13}")
    for name, values in times.items():
        added = statistics.median(v - o for v, o in zip(values, off))
        ratio = statistics.median(v / o for v, o in zip(values, off))
        print(f"{name:<32} {statistics.median(values):>9.3f} {added:>+8.3f} {ratio:>13.3f}")
    plain = statistics.median(o - r for o, r in zip(off, times["off, same prompt again"]))
    print(f"\nplain encode of the prompt (off - off again): {plain:.3f} s")
    for name in ("FtF Automatic", "FtF Markers only (1 item)", EVERY):
        added = statistics.median(v - o for v, o in zip(times[name], off))
        print(f"{name} adds {added / plain:.2f}x a plain encode" if plain > 0 else "")
    if with_cutoff:
        cutoff = statistics.median(v - o for v, o in zip(times["Cutoff"], off))
        for name in ("FtF Automatic", EVERY):
            ftf = statistics.median(v - o for v, o in zip(times[name], off))
            print(f"{name} adds {ftf / cutoff:.2f}x what Cutoff adds" if cutoff > 0 else "Cutoff added nothing")
    return times


if __name__ == "__main__":
    main()
