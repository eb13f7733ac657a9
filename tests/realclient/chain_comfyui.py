"""The node's conditioning through ComfyUI's core conditioning nodes to the sampler, run by ComfyUI's own Python
inside a ComfyUI checkout (started by `host_comfyui.py`, beside `inside_comfyui.py`, whose helpers it uses).

    python chain_comfyui.py --host-dir COMFYUI --node-dir COMFYUI/custom_nodes/follow-the-flow
        --checkpoint NAME --lora NAME

Each check chains the node's output through ComfyUI's own node classes (*Conditioning (Combine)*, *(Concat)*,
*(Set Area)*, *(Set Timestep Range)*, *(Average)*; *LoraLoader*, *LoraLoaderModelOnly* and *CLIPSetLastLayer*
before it) into ComfyUI's *KSampler*, and records what the UNet receives through ComfyUI's own model wrapper
(`ModelPatcher.set_model_unet_function_wrapper`): per model call, each batch entry's `c_crossattn`, whether it is
the positive or the negative, and its latent's size. The expected tensors come from ComfyUI's `CLIPTextEncode` of
the prompt and of the item alone, through the same ComfyUI node: a patched item's rows within `inside.ATOL`, every
other row bit-identical. Prints one JSON object a line per check, as `inside_comfyui.py` does.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

import inside_comfyui as inside

MARKED = inside.PROMPT.replace("standing zebra", "~standing zebra~")
ZEBRA = [("standing zebra", "standing zebra")]
OTHER = "a red fox in the snow, watercolor"  # the second prompt chained with the node's (CLIPTextEncode)
NEGATIVE = "blurry, low quality"
STRENGTH = 0.75  # Conditioning (Average)'s conditioning_to_strength


@dataclass
class Expected:
    """A conditioning tensor the sampler should receive, `(1, rows, dim)`; `patched` marks the rows of items
    encoded alone (compared within `ATOL`), every other row must be bit-identical; `plain` is `CLIPTextEncode`'s
    tensor at the patched rows (the received rows must differ from it: they were patched)."""

    cond: object
    patched: object
    plain: object
    name: str


@dataclass
class Seen:
    """One batch entry of one UNet call: the sigma, 0 positive / 1 negative, its latent's size, its `c_crossattn`."""

    sigma: float
    which: int
    size: tuple[int, ...]
    cond: object


class Recorder:
    """ComfyUI's UNet function wrapper: records every batch entry, then calls the model unchanged."""

    def __init__(self) -> None:
        self.seen: list[Seen] = []

    def __call__(self, apply_model, args: dict):
        chunks = len(args["cond_or_uncond"])
        crossattn = args["c"]["c_crossattn"].chunk(chunks)
        for index, which in enumerate(args["cond_or_uncond"]):
            sigma = float(args["timestep"][index])
            self.seen.append(Seen(sigma, which, tuple(args["input"].shape[2:]), crossattn[index].detach().clone()))
        return apply_model(args["input"], args["timestep"], **args["c"])

    def step(self, number: int) -> list[Seen]:
        """The entries of the `number`-th distinct sigma (0: the first step, -1: the last)."""
        sigmas = sorted({seen.sigma for seen in self.seen}, reverse=True)
        return [seen for seen in self.seen if seen.sigma == sigmas[number]]


class Chain:
    """ComfyUI's nodes, the Follow the Flow node, the expected tensors and the sampler run."""

    def __init__(self, comfy: inside.Comfy) -> None:
        self.comfy = comfy
        self.nodes = comfy.nodes

    def node(self, clip, text: str = MARKED) -> list:
        """The node's CONDITIONING output (*Markers only*)."""
        return self.comfy.node_class().encode(clip, text, "Markers only", 0.5)[0]

    def encode(self, clip, text: str) -> list:
        """`CLIPTextEncode`'s CONDITIONING output."""
        return self.nodes.CLIPTextEncode().encode(clip, text)[0]

    def expected(self, clip, plain: str = inside.PROMPT, items=ZEBRA) -> Expected:
        """`CLIPTextEncode` of `plain` with each item's rows replaced by `CLIPTextEncode` of the item alone."""
        import torch

        original = self.comfy.reference(clip, plain)[0]
        cond, patched = original.clone(), torch.zeros(original.shape[0], dtype=torch.bool)
        for item, alone_text in items:
            rows, alone_rows = self.comfy.item_rows(clip, plain, item)
            cond[rows] = self.comfy.reference(clip, alone_text)[0][alone_rows]
            patched[rows] = True
        names = ", ".join(item for item, _ in items)
        return Expected(cond[None], patched, original[patched], f"patched {names} ({int(patched.sum())} rows)")

    def plain(self, clip, text: str, name: str) -> Expected:
        """`CLIPTextEncode` of `text`, expected bit-identical everywhere."""
        import torch

        cond = self.comfy.reference(clip, text)[0]
        return Expected(cond[None], torch.zeros(cond.shape[0], dtype=torch.bool), cond[:0], name)

    def sample(self, model, positive: list, negative: list, steps: int = 1, width: int = 64) -> Recorder:
        """ComfyUI's *KSampler* (Euler, normal, cfg 7, seed 1) on an empty `width`x64 latent, recorded."""
        recorder = Recorder()
        wrapped = model.clone()
        wrapped.set_model_unet_function_wrapper(recorder)
        latent = self.nodes.EmptyLatentImage().generate(width, 64, 1)[0]
        self.nodes.KSampler().sample(wrapped, 1, steps, 7.0, "euler", "normal", positive, negative, latent, 1.0)
        return recorder


def mix(a: Expected, b: Expected, weight: float) -> Expected:
    """`a * weight + b * (1 - weight)` as *Conditioning (Average)* computes it (`a`'s rows count; b's cut or padded
    with zeros); the patched rows are those of `a` or `b`."""
    import torch

    rows = a.cond.shape[1]
    patched = a.patched | _fit(b.patched, rows)
    cond = torch.mul(a.cond, weight) + torch.mul(_fit_rows(b.cond, rows), 1.0 - weight)
    plain = torch.mul(_plain(a), weight) + torch.mul(_fit_rows(_plain(b), rows), 1.0 - weight)
    return Expected(cond, patched, plain[0, patched], f"{a.name} x {weight} + {b.name} x {1.0 - weight}")


def concat(a: Expected, b: Expected) -> Expected:
    """`a` and `b` concatenated along the rows, as *Conditioning (Concat)* does."""
    import torch

    patched = torch.cat([a.patched, b.patched])
    plain = torch.cat([_plain(a), _plain(b)], dim=1)[0, patched]
    return Expected(torch.cat([a.cond, b.cond], dim=1), patched, plain, f"{a.name} + {b.name}")


def _plain(expected: Expected):
    """`CLIPTextEncode`'s tensor of an expected one: its patched rows put back."""
    cond = expected.cond.clone()
    cond[0, expected.patched] = expected.plain
    return cond


def _fit(mask, rows: int):
    """A row mask cut or padded with `False` to `rows`."""
    import torch

    return torch.cat([mask, torch.zeros(rows, dtype=torch.bool)])[:rows]


def _fit_rows(cond, rows: int):
    """`(1, rows, dim)`: `cond` cut or padded with zero rows, as *Conditioning (Average)* fits `conditioning_from`."""
    import torch

    padding = torch.zeros((1, max(0, rows - cond.shape[1]), cond.shape[2]))
    return torch.cat([cond[:, :rows], padding], dim=1)


def compare(seen, expected: Expected) -> tuple[bool, float]:
    """Received `(1, rows, dim)` against `expected`: patched rows within `ATOL` and different from
    `CLIPTextEncode`'s, every other row bit-identical."""
    import torch

    if tuple(seen.shape) != tuple(expected.cond.shape):
        return False, float("inf")
    rows, patched = seen[0], expected.patched
    worst = float((rows[patched] - expected.cond[0, patched]).abs().max()) if bool(patched.any()) else 0.0
    others = torch.equal(rows[~patched], expected.cond[0, ~patched])
    changed = not bool(patched.any()) or not torch.equal(rows[patched], expected.plain)
    return worst <= inside.ATOL and others and changed, worst


def received(
    seen: list[Seen], positives: list[Expected], negative: Expected, size: tuple[int, ...] | None = None
) -> tuple[bool, float, str]:
    """One step's entries: exactly one positive entry for each of `positives` (and of latent size `size` when
    given), and negatives equal to `negative` (repeated along the rows, as ComfyUI pads a shorter one)."""
    import torch

    left = [entry for entry in seen if entry.which == 0]
    worst, found = 0.0, []
    for expected in positives:
        scores = [compare(entry.cond, expected) for entry in left]
        index = next((number for number, (ok, _) in enumerate(scores) if ok), None)
        if index is None:
            shapes = [tuple(entry.cond.shape) for entry in left]
            diffs = [f"{diff:.2g}" for _, diff in scores]
            return False, float("inf"), f"no positive entry = {expected.name} (got shapes {shapes}, max diffs {diffs})"
        match = left.pop(index)
        worst = max(worst, scores[index][1])
        if size is not None and match.size != size:
            return False, worst, f"{expected.name} on a latent of {match.size}, not {size}"
        found.append(f"{expected.name} on a {'x'.join(map(str, match.size))} latent")
    if left:
        return False, worst, f"{len(left)} positive entries more than expected ({[e.cond.shape for e in left]})"
    negatives = [entry.cond for entry in seen if entry.which == 1]
    reference = negative.cond
    same = bool(negatives) and all(
        cond.shape[1] % reference.shape[1] == 0
        and torch.equal(cond, reference.repeat(1, cond.shape[1] // reference.shape[1], 1))
        for cond in negatives
    )
    detail = f"positive entries: {'; '.join(found) or 'none'}; negative {inside._equal(same)}"
    return same, worst, detail


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host-dir", type=Path, required=True)
    parser.add_argument("--node-dir", type=Path, required=True)
    parser.add_argument("--checkpoint", required=True, help="file name in models/checkpoints")
    parser.add_argument("--lora", required=True, help="file name in models/loras")
    args = parser.parse_args()
    inside._start_comfy(args.host_dir.resolve())

    import asyncio

    import nodes
    import torch

    model, clip, _ = nodes.CheckpointLoaderSimple().load_checkpoint(args.checkpoint)
    inside.MODEL_TYPE = type(model.model.model_config).__name__
    if not asyncio.run(nodes.load_custom_node(str(args.node_dir.resolve()))):
        raise RuntimeError(f"ComfyUI could not load {args.node_dir}")
    chain = Chain(inside.Comfy(nodes.NODE_CLASS_MAPPINGS["FollowTheFlowTextEncode"]))
    negative = chain.encode(clip, NEGATIVE)
    other = chain.plain(clip, OTHER, "CLIPTextEncode(other)")
    negative_expected = chain.plain(clip, NEGATIVE, "negative")

    def combine():
        positive = nodes.ConditioningCombine().combine(chain.node(clip), chain.encode(clip, OTHER))[0]
        seen = chain.sample(model, positive, negative).step(0)
        ok, worst, detail = received(seen, [chain.expected(clip), other], negative_expected)
        return ok and len(positive) == 2, worst, f"{len(positive)} entries; first step: {detail}"

    def concat_both():
        results = []
        for node_first in (True, False):
            node, encoded = chain.node(clip), chain.encode(clip, OTHER)
            pair = (node, encoded) if node_first else (encoded, node)
            expected = (chain.expected(clip), other) if node_first else (other, chain.expected(clip))
            positive = nodes.ConditioningConcat().concat(*pair)[0]
            seen = chain.sample(model, positive, negative).step(0)
            results.append(received(seen, [concat(*expected)], negative_expected))
        ok = all(result[0] for result in results)
        detail = f"node's first: {results[0][2]} | node's second: {results[1][2]}"
        return ok, max(result[1] for result in results), detail

    def set_area():
        positive = nodes.ConditioningSetArea().append(chain.node(clip), 64, 64, 64, 0, 0.8)[0]
        extras = positive[0][1]
        settings = extras.get("area") == (8, 8, 0, 8) and extras.get("strength") == 0.8
        seen = chain.sample(model, positive, negative, width=128).step(0)
        ok, worst, detail = received(seen, [chain.expected(clip)], negative_expected, size=(8, 8))
        area = f"area {extras.get('area')}, strength {extras.get('strength')}"
        return ok and settings, worst, f"{area} on a 16x8 latent; first step: {detail}"

    def timestep_range():
        early = nodes.ConditioningSetTimestepRange().set_range(chain.node(clip), 0.0, 0.5)[0]
        late = nodes.ConditioningSetTimestepRange().set_range(chain.encode(clip, OTHER), 0.5, 1.0)[0]
        positive = nodes.ConditioningCombine().combine(early, late)[0]
        extras = early[0][1]
        settings = (extras.get("start_percent"), extras.get("end_percent")) == (0.0, 0.5)
        recorder = chain.sample(model, positive, negative, steps=3)
        first = received(recorder.step(0), [chain.expected(clip)], negative_expected)
        last = received(recorder.step(-1), [other], negative_expected)
        ok = first[0] and last[0] and settings
        detail = f"node's range {extras.get('start_percent')}-{extras.get('end_percent')}, CLIPTextEncode(other)'s "
        detail += f"0.5-1.0, 3 steps; first step: {first[2]} | last step: {last[2]}"
        return ok, max(first[1], last[1]), detail

    def average():
        results, pooled = [], []
        encoded = chain.encode(clip, OTHER)
        for node_to in (True, False):
            to, from_ = (chain.node(clip), encoded) if node_to else (encoded, chain.node(clip))
            positive = nodes.ConditioningAverage().addWeighted(to, from_, STRENGTH)[0]
            pair = (chain.expected(clip), other) if node_to else (other, chain.expected(clip))
            expected_pooled = torch.mul(to[0][1]["pooled_output"], STRENGTH) + torch.mul(
                from_[0][1]["pooled_output"], 1.0 - STRENGTH
            )
            pooled.append(torch.equal(positive[0][1]["pooled_output"], expected_pooled))
            seen = chain.sample(model, positive, negative).step(0)
            results.append(received(seen, [mix(*pair, STRENGTH)], negative_expected))
        ok = all(result[0] for result in results) and all(pooled)
        detail = f"node's as conditioning_to: {results[0][2]} | as conditioning_from: {results[1][2]}; "
        detail += f"pooled mixed {inside._equal(all(pooled))}"
        return ok, max(result[1] for result in results), detail

    lora_model, lora_clip = nodes.LoraLoader().load_lora(model, clip, args.lora, 1.0, 1.0)
    (model_only,) = nodes.LoraLoaderModelOnly().load_lora_model_only(model, args.lora, 1.0)

    def loras(sampled, text_clip, what: str):
        def check():
            patches = len(sampled.patches)
            seen = chain.sample(sampled, chain.node(text_clip), chain.encode(text_clip, NEGATIVE)).step(0)
            expected = chain.plain(text_clip, NEGATIVE, "negative")
            ok, worst, detail = received(seen, [chain.expected(text_clip)], expected)
            return (
                ok and patches > 0,
                worst,
                f"{what}; the model LoRA patches {patches} UNet weights; first step: {detail}",
            )

        return check

    inside.run_check("chain: Conditioning (Combine) with CLIPTextEncode -> KSampler", combine)
    inside.run_check("chain: Conditioning (Concat), node's first and second -> KSampler", concat_both)
    inside.run_check("chain: Conditioning (Set Area) -> KSampler", set_area)
    inside.run_check("chain: Conditioning (Set Timestep Range) + Combine -> KSampler", timestep_range)
    inside.run_check("chain: Conditioning (Average), both ways -> KSampler", average)
    inside.run_check(
        "chain: LoraLoader -> node -> KSampler",
        loras(lora_model, lora_clip, "node on LoraLoader's CLIP, KSampler on its model"),
    )
    inside.run_check(
        "chain: LoraLoaderModelOnly, node -> KSampler",
        loras(model_only, clip, "node on the checkpoint's CLIP, KSampler on LoraLoaderModelOnly's model"),
    )
    skipped = nodes.CLIPSetLastLayer().set_last_layer(lora_clip, -2)[0]
    inside.run_check(
        "chain: LoraLoader -> CLIPSetLastLayer -2 -> node -> KSampler",
        loras(lora_model, skipped, "node on CLIPSetLastLayer(-2) of LoraLoader's CLIP"),
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
