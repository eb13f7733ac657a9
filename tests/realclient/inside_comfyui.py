"""The in-process checks, run by ComfyUI's own Python inside a ComfyUI checkout (started by `host_comfyui.py`).

    python inside_comfyui.py --host-dir COMFYUI --node-dir COMFYUI/custom_nodes/follow-the-flow
        --checkpoint NAME --lora NAME --analyze ANALYZE.json

Loads the checkpoint with ComfyUI's *Load Checkpoint* node and the node pack with ComfyUI's own custom-node
loader, then compares the node's conditioning with references made by ComfyUI's own nodes only
(`CLIPTextEncode`, `CLIPSetLastLayer`, `LoraLoader`): a patched item's rows must equal ComfyUI's encode of the
item's text alone (its rows after the start token) within `ATOL`, every other row and the pooled output must be
bit-identical. *Automatic* is compared with `flowcore analyze` on the same file (`--analyze`, written by the
orchestrator). Prints one JSON object a line per check: `check`, `ok`, `max_diff`, `detail`, `seconds`,
`peak_mb`, `model_type`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import re
import resource
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path

import host_common
from host_common import calibration_timing  # noqa: F401  (the families' modules use it from here)

ATOL = 1e-5  # patched rows against ComfyUI's encode of the item alone (fp16 weights, fp32 activations)


def tolerance(scale: float) -> float:
    """`ATOL` times the largest |value| of the item's rows, at least `ATOL`: float32 rounding grows with the values
    (the suite's rule, `host_common.tolerance`; this script runs in ComfyUI's Python, apart from the suite)."""
    return ATOL * max(1.0, scale)


SCORE_ATOL = 1e-5  # node's leak scores and threshold against `flowcore analyze`
PROMPT = "a crosswalk next to a bus station with a standing zebra"
TAGS = "masterpiece, 1girl, white shirt, green tie, red shoes, blue hair, yellow eyes, pink skirt"
TAG_ITEMS = ["1girl", "white shirt", "green tie", "red shoes", "blue hair", "yellow eyes", "pink skirt"]
LOAD_PROBLEMS = re.compile(r"missing|unexpected|not loaded|IMPORT FAILED", re.IGNORECASE)

MODEL_TYPE = "?"


def _start_comfy(host_dir: Path) -> None:
    """ComfyUI's modules outside `main.py`: parse `--cpu` before any other `comfy` import."""
    os.chdir(host_dir)
    sys.path.insert(0, str(host_dir))
    sys.argv = [sys.argv[0], "--cpu"]
    import comfy.options

    comfy.options.enable_args_parsing()


class Records(logging.Handler):
    """Keeps every log record's text (ComfyUI reports missing and unused weights through `logging`)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(f"{record.levelname}: {record.getMessage()}")

    def problems(self) -> list[str]:
        return [line for line in self.lines if not line.startswith("DEBUG") and LOAD_PROBLEMS.search(line)]


def emit(check: str, ok: bool, max_diff: float | None, detail: str, started: float) -> None:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    row = {"check": check, "ok": bool(ok), "max_diff": max_diff, "detail": detail, "model_type": MODEL_TYPE}
    row.update(seconds=round(time.perf_counter() - started, 2), peak_mb=round(peak))
    print(json.dumps(row), flush=True)


def run_check(check: str, function: Callable[[], tuple[bool, float | None, str]]) -> None:
    """Runs one check; an exception fails it with the exception's last lines as the detail."""
    started = time.perf_counter()
    try:
        ok, diff, detail = function()
    except Exception as error:  # a check that crashes is a failed check, and the others still run
        traceback.print_exc()
        ok, diff, detail = False, None, f"{type(error).__name__}: {error}"
    emit(check, ok, diff, detail, started)


class Comfy:
    """ComfyUI's own nodes, and the encodes and token positions the checks compare against."""

    def __init__(self, node_class) -> None:
        import nodes

        self.nodes = nodes
        self.node_class = node_class

    def reference(self, clip, text: str):
        """`CLIPTextEncode`'s conditioning of `text`: (cond rows, pooled)."""
        cond, extras = self.nodes.CLIPTextEncode().encode(clip, text)[0][0]
        return cond[0], extras["pooled_output"]

    def node(self, clip, text: str, mode: str, sensitivity: float = 0.5):
        """The node's conditioning: (cond rows, pooled, report text)."""
        conditioning, report, _ = self.node_class().encode(clip, text, mode, sensitivity)
        assert len(conditioning) == 1, f"{len(conditioning)} conditionings"
        cond, extras = conditioning[0]
        return cond[0], extras["pooled_output"], report

    @staticmethod
    def words(clip, text: str) -> list[tuple[int, object]]:
        """`(row, token)` of every word token of `text` (ComfyUI's tokenizer, word ids != 0)."""
        found, tokens = [], clip.tokenize(text, return_word_ids=True)
        key = "l" if "l" in tokens else next(iter(tokens))  # SD 2.x has OpenCLIP-H's ("h") alone
        for number, chunk in enumerate(tokens[key]):
            found += [(number * len(chunk) + p, token) for p, (token, _, word) in enumerate(chunk) if word != 0]
        return found

    def item_rows(self, clip, text: str, item: str) -> tuple[list[int], list[int]]:
        """Rows of `item`'s tokens in `text` (the first place they occur) and in the encode of `item` alone."""
        prompt, alone = self.words(clip, text), self.words(clip, item)
        for start in range(len(prompt) - len(alone) + 1):
            if all(_same(prompt[start + n][1], alone[n][1]) for n in range(len(alone))):
                return [row for row, _ in prompt[start : start + len(alone)]], [row for row, _ in alone]
        raise AssertionError(f"{item!r} not found in {text!r}")

    def check_patched(
        self,
        clip,
        text: str,
        plain: str,
        items: list[tuple[str, str]],
        mode: str = "Markers only",
        sensitivity: float = 0.5,
    ) -> tuple[bool, float, str]:
        """The node on `text` against `CLIPTextEncode` on `plain`: each `(item, alone text)` in `items` has the rows
        of `alone text` encoded alone; every other row and the pooled output are bit-identical."""
        import torch

        cond, pooled, report = self.node(clip, text, mode, sensitivity)
        original, original_pooled = self.reference(clip, plain)
        if cond.shape != original.shape:
            return False, float("inf"), f"shape {tuple(cond.shape)} != {tuple(original.shape)}"
        worst, scale, expected, columns = 0.0, 0.0, [], [0.0, 0.0]  # SDXL: CLIP-L's 768 columns, then CLIP-G's
        for item, alone_text in items:
            rows, alone_rows = self.item_rows(clip, plain, item)
            alone, _ = self.reference(clip, alone_text)
            difference = (cond[rows] - alone[alone_rows]).abs()
            worst = max(worst, float(difference.max()))
            scale = max(scale, float(alone[alone_rows].abs().max()))
            if MODEL_TYPE == "SDXL":
                columns = [
                    max(columns[0], float(difference[:, :768].max())),
                    max(columns[1], float(difference[:, 768:].max())),
                ]
            expected += rows
        others = [row for row in range(cond.shape[0]) if row not in expected]
        others_equal = torch.equal(cond[others], original[others])
        pooled_equal = torch.equal(pooled, original_pooled)
        within = tolerance(scale)
        ok = worst <= within and others_equal and pooled_equal
        names = ", ".join(item for item, _ in items) or "none"
        detail = f"patched {names} (rows {len(expected)}/{cond.shape[0]}, within {within:.2g}, largest |value| "
        detail += f"{scale:.3g}); other rows {_equal(others_equal)}, "
        detail += f"pooled {_equal(pooled_equal)}"
        if MODEL_TYPE == "SDXL" and items:
            detail += f"; max diff CLIP-L columns {columns[0]:.2g}, CLIP-G columns {columns[1]:.2g}"
        if not ok:
            detail += f"; report: {report!r}"
        return ok, worst, detail


def _same(a, b) -> bool:
    import torch

    if torch.is_tensor(a) or torch.is_tensor(b):
        return torch.is_tensor(a) and torch.is_tensor(b) and torch.equal(a, b)
    return a == b


def _equal(flag: bool) -> str:
    return "bit-identical" if flag else "DIFFER"


def _patched_in_report(report: str) -> list[str]:
    """The items the node's report names on its `Patched:` line."""
    line = next((line for line in report.splitlines() if line.startswith("Patched: ")), "Patched: nothing")
    return re.findall(r"'((?:[^'\\]|\\.)*)'", line[len("Patched: ") :])


def short_calibration(count: int) -> tuple[int, int]:
    """Makes the node pack's core calibrate on `count` of its built-in prompts (`host_common.short_calibration`, the
    selection Forge's probe makes too). Returns (count, full count)."""
    import importlib

    return host_common.short_calibration(importlib.import_module("flowcore.detection.calibration"), count)


def load(node_dir: Path, checkpoint: str, lora: str):
    """Model, CLIP, a LoRA'd CLIP and the node class, each through ComfyUI's own loaders."""
    global MODEL_TYPE
    import nodes

    records = Records()
    logging.getLogger().addHandler(records)
    logging.getLogger().setLevel(logging.DEBUG)
    try:
        model, clip, _ = nodes.CheckpointLoaderSimple().load_checkpoint(checkpoint)
        MODEL_TYPE = type(model.model.model_config).__name__
        lora_model, lora_clip = nodes.LoraLoader().load_lora(model, clip, lora, 1.0, 1.0)
        loaded = asyncio.run(nodes.load_custom_node(str(node_dir)))
    finally:
        logging.getLogger().removeHandler(records)
        logging.getLogger().setLevel(logging.INFO)
    node_class = nodes.NODE_CLASS_MAPPINGS.get("FollowTheFlowTextEncode")
    problems = records.problems()
    ok = loaded and node_class is not None and not problems
    unused = [line for line in records.lines if "left over keys" in line or "Leftover" in line]
    unused_keys = sorted(set(re.findall(r"'([^']+)'", " ".join(unused))))
    detail = f"model type {MODEL_TYPE}; node {'registered' if node_class else 'MISSING'}"
    detail += f"; load problems: {problems[:3]}" if problems else "; no missing, unexpected or unloaded keys"
    detail += (
        f"; keys ComfyUI left unused: {len(unused_keys)} ({', '.join(unused_keys[:3])}, ...)" if unused_keys else ""
    )
    return ok, detail, clip, lora_clip, node_class


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host-dir", type=Path, required=True)
    parser.add_argument("--node-dir", type=Path, required=True)
    parser.add_argument("--checkpoint", required=True, help="file name in models/checkpoints")
    parser.add_argument("--lora", required=True, help="file name in models/loras")
    parser.add_argument("--analyze", type=Path, required=True, help="JSON: the Automatic cases and analyze's reports")
    args = parser.parse_args()
    cases = json.loads(args.analyze.read_text(encoding="utf-8"))
    _start_comfy(args.host_dir.resolve())

    import folder_paths
    import torch
    from safetensors.torch import save_file

    embeddings = tempfile.mkdtemp(prefix="ftf-embeddings-")
    widths = {"clip_l": 768, "clip_h": 1024, "clip_g": 1280}  # ComfyUI takes the key of each text encoder
    save_file(
        {
            key: torch.randn(2, width, generator=torch.Generator().manual_seed(5)) * 0.02
            for key, width in widths.items()
        },
        os.path.join(embeddings, "ftfzorb.safetensors"),
    )
    folder_paths.add_model_folder_path("embeddings", embeddings)

    started = time.perf_counter()
    ok, detail, clip, lora_clip, node_class = load(args.node_dir.resolve(), args.checkpoint, args.lora)
    emit("loads: checkpoint (Load Checkpoint), LoRA, node pack", ok, None, detail, started)
    if node_class is None:
        return 1
    comfy = Comfy(node_class)
    marked = PROMPT.replace("standing zebra", "~standing zebra~")
    zebra = [("standing zebra", "standing zebra")]

    def markers_without_markers():
        import torch

        cond, pooled, report = comfy.node(clip, PROMPT, "Markers only")
        original, original_pooled = comfy.reference(clip, PROMPT)
        same = torch.equal(cond, original) and torch.equal(pooled, original_pooled)
        diff = float((cond - original).abs().max()) if cond.shape == original.shape else float("inf")
        return (
            same,
            diff,
            f"cond and pooled {_equal(same)} to CLIPTextEncode; report says nothing to patch: "
            + str("nothing to patch" in report),
        )

    run_check("Markers only, no markers = CLIPTextEncode", markers_without_markers)
    run_check("marked item = its encode alone", lambda: comfy.check_patched(clip, marked, PROMPT, zebra))
    run_check(
        "weights: ~(item:1.3)~, (other:1.2)",
        lambda: comfy.check_patched(
            clip,
            "a (crosswalk:1.2) next to a bus station with a ~(standing zebra:1.3)~",
            "a (crosswalk:1.2) next to a bus station with a (standing zebra:1.3)",
            [("standing zebra", "(standing zebra:1.3)")],
        ),
    )
    run_check(
        "weights elsewhere, escapes, weight 0",
        lambda: comfy.check_patched(
            clip,
            r"a (crosswalk:0) next to a \(bus\) ((station)) with a ~standing zebra~",
            r"a (crosswalk:0) next to a \(bus\) ((station)) with a standing zebra",
            zebra,
        ),
    )
    (skipped,) = comfy.nodes.CLIPSetLastLayer().set_last_layer(clip, -2)
    run_check("clip skip (CLIP Set Last Layer -2)", lambda: comfy.check_patched(skipped, marked, PROMPT, zebra))
    filler = ", ".join(f"word{n}" for n in range(30))

    def second_chunk():
        ok, diff, detail = comfy.check_patched(clip, f"{filler}, {marked}", f"{filler}, {PROMPT}", zebra)
        rows = comfy.item_rows(clip, f"{filler}, {PROMPT}", "standing zebra")[0]
        return ok and min(rows) >= 77, diff, f"{detail}; item rows {rows}"

    run_check("item in the second chunk", second_chunk)
    run_check(
        "embedding inside the item",
        lambda: comfy.check_patched(
            clip,
            "a photo of a ~embedding:ftfzorb cat~ on a sofa",
            "a photo of a embedding:ftfzorb cat on a sofa",
            [("embedding:ftfzorb cat", "embedding:ftfzorb cat")],
        ),
    )

    def lora():
        import torch

        ok, diff, detail = comfy.check_patched(lora_clip, marked, PROMPT, zebra)
        changed = not torch.equal(comfy.reference(lora_clip, PROMPT)[0], comfy.reference(clip, PROMPT)[0])
        again = comfy.check_patched(clip, marked, PROMPT, zebra)  # nothing of the LoRA cached into the base
        return (
            ok and changed and again[0],
            max(diff, again[1]),
            f"{detail}; LoRA changes the encode: {changed}; "
            + (f"base CLIP afterwards: {'ok' if again[0] else 'WRONG'}"),
        )

    run_check("LoRA on the text encoder (LoraLoader)", lora)
    run_check(
        "all at once: LoRA, clip skip, weights, 2nd chunk",
        lambda: comfy.check_patched(
            comfy.nodes.CLIPSetLastLayer().set_last_layer(lora_clip, -2)[0],
            f"{filler}, a (crosswalk:1.2) next to a bus station with a ~(standing zebra:1.3)~",
            f"{filler}, a (crosswalk:1.2) next to a bus station with a (standing zebra:1.3)",
            [("standing zebra", "(standing zebra:1.3)")],
        ),
    )

    def every_item():
        ok, diff, detail = comfy.check_patched(clip, TAGS, TAGS, [(i, i) for i in TAG_ITEMS], mode="Every item")
        named = _patched_in_report(comfy.node(clip, TAGS, "Every item")[2])
        exact = sorted(named) == sorted(TAG_ITEMS)
        return ok and exact, diff, f"{detail}; report names {named}"

    run_check("Every item on a tag prompt", every_item)
    for case in cases:
        run_check(
            f"Automatic = flowcore analyze (sens. {case['sensitivity']})",
            lambda case=case: automatic(comfy, clip, case),
        )
    return 0


def automatic(comfy: Comfy, clip, case: dict) -> tuple[bool, float, str]:
    """*Automatic* on `case['prompt']`: the same threshold, scores and patched items as `flowcore analyze`, the
    report naming them, and the patched rows equal to the items encoded alone."""
    import importlib

    package = comfy.node_class.__module__.rsplit(".", 1)[0]
    conditioning = importlib.import_module(f"{package}.conditioning")
    options = importlib.import_module("flowcore.patching.options")
    prompt, expected = case["prompt"], case["report"]
    outcome = conditioning.encode(clip, prompt, options.FlowOptions(mode="auto", sensitivity=case["sensitivity"]))
    if outcome.problems or len(outcome.reports) != 1:
        return False, float("inf"), f"problems {outcome.problems}, {len(outcome.reports)} reports"
    report = outcome.reports[0][1]
    diffs = [_diff(_finite(report.threshold), expected["threshold"])]
    diffs.append(_diff(_finite(report.tag_threshold), expected["tag_threshold"]))
    theirs = {item["item"]["text"]: item for item in expected["items"]}
    ours = {item.item.text: item for item in report.items}
    if sorted(ours) != sorted(theirs):
        return False, float("inf"), f"items {sorted(ours)} != analyze's {sorted(theirs)}"
    diffs += [_diff(ours[name].leak_score, theirs[name]["leak_score"]) for name in ours]
    patched = sorted(name for name in ours if ours[name].patched)
    analyze_patched = sorted(name for name in theirs if theirs[name]["patched"])
    named = _patched_in_report(comfy.node(clip, prompt, "Automatic", case["sensitivity"])[2])
    ok_rows, row_diff, _ = comfy.check_patched(
        clip, prompt, prompt, [(name, name) for name in patched], "Automatic", case["sensitivity"]
    )
    worst = max(diffs)
    ok = worst <= SCORE_ATOL and patched == analyze_patched and sorted(named) == patched and ok_rows
    detail = f"{len(ours)} items, patched {patched} (analyze: {analyze_patched}, report: {named}); "
    detail += f"threshold {report.threshold:.6f}; rows {'ok' if ok_rows else 'WRONG'} (max {row_diff:.1e})"
    return ok, worst, detail


def _finite(value: float | None) -> float | None:
    """As `FlowReport.to_dict` writes a threshold: None for none or an infinite one."""
    return None if value is None or abs(value) == float("inf") else value


def _diff(a: float | None, b: float | None) -> float:
    if a is None or b is None:
        return 0.0 if a is None and b is None else float("inf")
    return abs(float(a) - float(b))


if __name__ == "__main__":
    sys.exit(main())
