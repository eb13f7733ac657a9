"""ComfyUI with the diffusion-transformer families (SD 3.5, Flux dev, Flux schnell, Chroma): their split files and
loaders, the in-process checks, and the server's workflows. `host_comfyui.py` hands these families over to `check`.

| family | loaders | conditioning rows (ComfyUI 0.3.64) |
|---|---|---|
| sd35 | UNETLoader, TripleCLIPLoader (clip_l, clip_g, t5xxl), VAELoader | CLIP-L and CLIP-G side by side, then T5 |
| sd35, no T5 | the same with DualCLIPLoader (clip_l, clip_g, type sd3) | CLIP-L and CLIP-G side by side |
| flux-dev, flux-schnell | UNETLoader, DualCLIPLoader (clip_l, t5xxl, type flux), VAELoader | T5 (CLIP-L: pooled) |
| chroma | UNETLoader, CLIPLoader (t5xxl, type chroma), VAELoader | T5, not padded; no pooled vector |

The random files come from `tools/random_checkpoint.py` (shallow diffusion models, full-size text encoders; see
`tools/checkpoints/dit.py`) in `$FTF_MODELS_DIR/<family>/` (default `<host-dir>/realclient-models`), made once.
In ComfyUI's Python (`python comfyui_families.py --host-dir ... --node-dir ... --variant ...`) the checks compare
the node with ComfyUI's own `CLIPTextEncode`: a marked item's rows, per encoder (CLIP-L's and CLIP-G's columns, T5's
rows), against the item encoded alone within `inside_comfyui.ATOL`; every other row and the pooled output
bit-identical (Chroma has no pooled output). *Automatic* needs a calibration of every encoder (182 prompts and
their items): on the CPU ComfyUI keeps the fp8 T5-XXL in fp16 (9.1 GB) and one call takes about 15 s, so with T5
it calibrates on `T5_CALIBRATION_PROMPTS` of the prompts (`inside_comfyui.short_calibration`) and the row gives
the full calibration's time extrapolated; `flowcore analyze` does not load these families at all (it reads SD 1.x,
2.x and SDXL checkpoints), so *Automatic* is checked against the node's own report: it patches something at
sensitivity 0.9, and the items it names get their rows encoded alone, every other row as `CLIPTextEncode` gives it.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from host_common import T5_CALIBRATION_PROMPTS  # *Automatic* with T5-XXL: a short calibration, as in Forge

HERE = Path(__file__).resolve().parent
PROMPT = "a crosswalk next to a bus station with a standing zebra"
TAGS = "1girl, white shirt, red shoes, blue hair"  # four items: each T5 forward call costs tens of seconds
TAG_ITEMS = ["1girl", "white shirt", "red shoes", "blue hair"]
CLIP_L_WIDTH = 768

# variant -> (family, text encoder files, CLIP loader and type, sampler cfg)
VARIANTS = {
    "sd35": ("sd35", ("clip_l", "clip_g", "t5xxl"), ("TripleCLIPLoader", None), 4.0),
    "sd35 no T5": ("sd35", ("clip_l", "clip_g"), ("DualCLIPLoader", "sd3"), 4.0),
    "flux-dev": ("flux-dev", ("clip_l", "t5xxl"), ("DualCLIPLoader", "flux"), 1.0),
    "flux-schnell": ("flux-schnell", ("clip_l", "t5xxl"), ("DualCLIPLoader", "flux"), 1.0),
    "chroma": ("chroma", ("t5xxl",), ("CLIPLoader", "chroma"), 4.0),
}
FAMILY_VARIANTS = {"sd35": ("sd35 no T5", "sd35"), "flux-dev": ("flux-dev",), "flux-schnell": ("flux-schnell",)}
FAMILY_VARIANTS["chroma"] = ("chroma",)
ENCODER_FILES = {
    "clip_l": "clip_l.safetensors",
    "clip_g": "clip_g.safetensors",
    "t5xxl": "t5xxl_fp8_e4m3fn.safetensors",
}


def file_names(variant: str) -> dict:
    """The file names the loaders get: `unet`, `vae`, `clips` (in the loader's order)."""
    family, encoders, _, _ = VARIANTS[variant]
    return {
        "unet": f"{family}-random.safetensors",
        "vae": f"{family}-ae-random.safetensors",
        "clips": [ENCODER_FILES[name] for name in encoders],
    }


# --- the orchestrator's side (standard library only) ----------------------------------------------------------------


def check(host: str, family: str, python: str, host_dir: Path, node_dir: Path, out: Path) -> list:
    """Every row of one family: its files linked into ComfyUI's model folders, then per variant (SD 3.5 with and
    without T5) the in-process rows and the server's."""
    from host_comfyui import script_rows
    from host_common import Row, host_env, link, run, say

    models = Path(os.environ.get("FTF_MODELS_DIR") or out.parent / "realclient-models")
    folder = models / family
    names = file_names(FAMILY_VARIANTS[family][-1])
    wanted = [folder / names["unet"], folder / names["vae"]] + [models / "text_encoders" / n for n in names["clips"]]
    if not all(path.exists() for path in wanted):
        tool = HERE.parents[1] / "tools" / "random_checkpoint.py"
        run([python, str(tool), "--family", family, "--out", str(folder)], out / "setup.log", env=host_env())
    link(wanted[0], host_dir / "models" / "diffusion_models")
    link(wanted[1], host_dir / "models" / "vae")
    for path in wanted[2:]:
        link(path, host_dir / "models" / "text_encoders")
    rows: list[Row] = []
    for variant in FAMILY_VARIANTS[family]:
        label = family if variant == family else variant
        say(f"{label}: in-process checks")
        command = [python, str(Path(__file__)), "--host-dir", str(host_dir), "--node-dir", str(node_dir)]
        command += ["--variant", variant]
        log = out / f"inside-{variant.replace(' ', '-')}.log"
        found = script_rows(host, label, command, host_dir, log, "in-process run", out)
        rows += found
        rows += server_checks(host, label, variant, found[-1].model_type, python, host_dir, out)
    return rows


def workflow(variant: str, text: str, node: str | None = None, mode: str = "Markers only", seed: int = 1) -> dict:
    """An API-format txt2img workflow for `variant`: its loaders, the prompt through `CLIPTextEncode` or the node,
    a 64x64 SD3 latent, 2 Euler steps, the VAE decode."""
    from host_comfyui import sampled

    _, _, (loader, clip_type), cfg = VARIANTS[variant]
    names = file_names(variant)
    graph = {"1": {"class_type": "UNETLoader", "inputs": {"unet_name": names["unet"], "weight_dtype": "default"}}}
    clip_inputs = {
        f"clip_name{n + 1}" if loader != "CLIPLoader" else "clip_name": c for n, c in enumerate(names["clips"])
    }
    if clip_type:
        clip_inputs["type"] = clip_type
    graph["2"] = {"class_type": loader, "inputs": clip_inputs}
    graph["3"] = {"class_type": "VAELoader", "inputs": {"vae_name": names["vae"]}}
    if node:
        graph["4"] = {"class_type": node, "inputs": {"text": text, "clip": ["2", 0], "mode": mode, "sensitivity": 0.5}}
    else:
        graph["4"] = {"class_type": "CLIPTextEncode", "inputs": {"text": text, "clip": ["2", 0]}}
    graph["5"] = {"class_type": "CLIPTextEncode", "inputs": {"text": "blurry, low quality", "clip": ["2", 0]}}
    graph["6"] = {"class_type": "EmptySD3LatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}}
    return sampled(graph, ["1", 0], ["3", 0], cfg, "simple", seed)


def server_checks(host, label, variant, model_type, python, host_dir, out) -> list:
    """The server rows: off = ComfyUI alone (pixels), a marked item changes the image, off -> on -> off, a clean
    log."""
    from host_comfyui import Images, server_log_row
    from host_common import Server, checked_row, free_port, host_env, say

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    command = [python, "main.py", "--cpu", "--listen", "127.0.0.1", "--port", str(port), "--disable-auto-launch"]
    name = variant.replace(" ", "-")
    server = Server(
        command, host_dir, host_env(FLOWCORE_CACHE=str(out / "flowcore-cache-server")), out / f"server-{name}.log"
    )
    rows = []

    def row(check: str, function) -> None:
        rows.append(checked_row(host, label, model_type, check, function, server))

    images = Images(url, python, out)
    node = "FollowTheFlowTextEncode"
    shots = {}
    try:
        started = time.perf_counter()
        server.wait_ready(f"{url}/system_stats")
        say(f"server ready after {time.perf_counter() - started:.0f} s")

        def identical():
            shots["plain"] = images.render(workflow(variant, PROMPT))
            shots["node"] = images.render(workflow(variant, PROMPT, node=node))
            difference, spread = images.difference(shots["plain"], shots["node"])
            return difference == 0, difference, f"max pixel difference {difference} (image value range {spread})"

        row("server: Markers only, no markers = CLIPTextEncode", identical)

        def changes():
            marked = images.render(workflow(variant, PROMPT.replace("standing zebra", "~standing zebra~"), node=node))
            difference, _ = images.difference(shots["plain"], marked)
            return difference > 0, difference, f"max pixel difference {difference} from CLIPTextEncode's image"

        row("server: a marked item changes the image", changes)

        def off_on_off():
            # the prompt with a trailing space (the same tokens) makes ComfyUI run CLIPTextEncode again on the text
            # encoder the node used; `/free` would reload T5-XXL, which peaked at 20 GB here (a 23 GB machine)
            again = images.render(workflow(variant, PROMPT + " "))
            difference, _ = images.difference(shots["plain"], again)
            detail = "CLIPTextEncode's image before and after the node ran (encoded again, text encoder kept loaded)"
            return difference == 0, difference, detail

        row("server: off -> on -> off", off_on_off)
    finally:
        peak = server.peak_mb()
        server.stop()
    rows.append(server_log_row(host, label, model_type, server.log, peak))
    return rows


# --- inside ComfyUI's Python ------------------------------------------------------------------------------------


def load(inside, node_dir: Path, variant: str):
    """The diffusion model (`UNETLoader`, for ComfyUI's detected type), the CLIP (the variant's loader) and the node
    class, each through ComfyUI's own loaders; returns (ok, detail, clip, node class)."""
    import logging

    import nodes
    from comfy_extras import nodes_sd3

    _, _, (loader, clip_type), _ = VARIANTS[variant]
    names = file_names(variant)
    records = inside.Records()
    logging.getLogger().addHandler(records)
    logging.getLogger().setLevel(logging.DEBUG)
    try:
        (model,) = nodes.UNETLoader().load_unet(names["unet"], "default")
        inside.MODEL_TYPE = type(model.model.model_config).__name__
        del model  # only its detected type is needed here; the server samples with it
        if loader == "TripleCLIPLoader":
            loaded_clip = nodes_sd3.TripleCLIPLoader.execute(*names["clips"])
            clip = loaded_clip.result[0] if hasattr(loaded_clip, "result") else loaded_clip[0]
        elif loader == "DualCLIPLoader":
            (clip,) = nodes.DualCLIPLoader().load_clip(*names["clips"], clip_type)
        else:
            (clip,) = nodes.CLIPLoader().load_clip(names["clips"][0], clip_type)
        import asyncio

        loaded = asyncio.run(nodes.load_custom_node(str(node_dir)))
    finally:
        logging.getLogger().removeHandler(records)
        logging.getLogger().setLevel(logging.INFO)
    node_class = nodes.NODE_CLASS_MAPPINGS.get("FollowTheFlowTextEncode")
    problems = records.problems()
    encoders = type(clip.cond_stage_model).__name__
    inside.MODEL_TYPE = f"{inside.MODEL_TYPE} / {encoders}"
    ok = loaded and node_class is not None and not problems
    detail = f"model type {inside.MODEL_TYPE}; node {'registered' if node_class else 'MISSING'}"
    detail += f"; load problems: {problems[:3]}" if problems else "; no missing, unexpected or unloaded keys"
    return ok, detail, clip, node_class


def parts(clip, text: str) -> list[tuple[str, str, int, slice]]:
    """`(name, tokenizer key, first row, columns)` of each encoder's rows in the conditioning of `text`, as ComfyUI
    lays them out: SD 3.5's CLIP-L and CLIP-G side by side (rows of the "l" tokens, or "g" without CLIP-L), then
    T5's rows; Flux and Chroma: T5's rows."""
    from comfy.text_encoders import sd3_clip

    model, tokens = clip.cond_stage_model, clip.tokenize(text)
    found, row = [], 0
    if isinstance(model, sd3_clip.SD3ClipModel):
        if model.clip_l is not None:
            found.append(("CLIP-L", "l", 0, slice(0, CLIP_L_WIDTH)))
        if model.clip_g is not None:
            found.append(("CLIP-G", "g", 0, slice(CLIP_L_WIDTH, CLIP_L_WIDTH + 1280)))
        if found:
            row = sum(len(chunk) for chunk in tokens["l" if model.clip_l is not None else "g"])
    if getattr(model, "t5xxl", None) is not None or getattr(model, "clip_name", None) == "t5xxl":
        found.append(("T5", "t5xxl", row, slice(None)))
    return found


def words(clip, text: str, key: str) -> list[tuple[int, object]]:
    """`(row within the key's rows, token)` of every word token of `text` (word ids != 0)."""
    found, row = [], 0
    for chunk in clip.tokenize(text, return_word_ids=True)[key]:
        found += [(row + p, token) for p, (token, _, word) in enumerate(chunk) if word != 0]
        row += len(chunk)
    return found


def item_rows(inside, clip, text: str, item: str, key: str) -> tuple[list[int], list[int]]:
    """Rows of `item`'s tokens in `text` (first occurrence) and in the encode of `item` alone, within `key`'s rows."""
    prompt, alone = words(clip, text, key), words(clip, item, key)
    for start in range(len(prompt) - len(alone) + 1):
        if all(inside._same(prompt[start + n][1], alone[n][1]) for n in range(len(alone))):
            return [row for row, _ in prompt[start : start + len(alone)]], [row for row, _ in alone]
    raise AssertionError(f"{item!r} not found in {text!r} ({key})")


def check_patched(
    inside, comfy, clip, text, plain, items, mode="Markers only", sensitivity=0.5, reports=None, timings=None
):
    """The node on `text` against `CLIPTextEncode` on `plain`: each `(item, alone text)` has, in every encoder's
    rows and columns, the rows of `alone text` encoded alone; every other row and the pooled output bit-identical.
    The node's report is appended to `reports` and its seconds to `timings` when given (each T5-XXL call costs tens
    of seconds here)."""
    import torch

    began = time.perf_counter()
    cond, pooled, report = comfy.node(clip, text, mode, sensitivity)
    if timings is not None:
        timings.append(time.perf_counter() - began)
    if reports is not None:
        reports.append(report)
    original, original_pooled = comfy.reference(clip, plain)
    if cond.shape != original.shape:
        return False, float("inf"), f"shape {tuple(cond.shape)} != {tuple(original.shape)}"
    per_encoder, scale, expected = {}, {}, set()
    for item, alone_text in items:
        alone, _ = comfy.reference(clip, alone_text)
        alone_parts = {name: first for name, _, first, _ in parts(clip, alone_text)}
        for name, key, first, columns in parts(clip, plain):
            rows, alone_rows = item_rows(inside, clip, plain, item, key)
            got = cond[[first + r for r in rows]][:, columns]
            want = alone[[alone_parts[name] + r for r in alone_rows]][:, columns]
            per_encoder[name] = max(per_encoder.get(name, 0.0), float((got - want).abs().max()))
            scale[name] = max(scale.get(name, 0.0), float(want.abs().max()))  # for the relative size of a diff
            expected.update(first + r for r in rows)
    others = [row for row in range(cond.shape[0]) if row not in expected]
    others_equal = torch.equal(cond[others], original[others])
    pooled_equal = inside._same(pooled, original_pooled)
    worst = max(per_encoder.values(), default=0.0)
    within = all(diff <= inside.tolerance(scale[name]) for name, diff in per_encoder.items())
    ok = within and others_equal and pooled_equal and (bool(per_encoder) or not items)
    encoders = ", ".join(
        f"{name} {diff:.1e} (rows up to {scale[name]:.3g}, within {inside.tolerance(scale[name]):.1e})"
        for name, diff in per_encoder.items()
    )
    detail = f"patched {', '.join(i for i, _ in items)} (rows {len(expected)}/{cond.shape[0]}; max diff {encoders}); "
    detail += f"other rows {inside._equal(others_equal)}, pooled "
    detail += "absent in both" if pooled is None and original_pooled is None else inside._equal(pooled_equal)
    if not ok:
        detail += f"; report: {report!r}"
    return ok, worst, detail


def main() -> int:
    parser = argparse.ArgumentParser(description="The in-process checks of one DiT family variant in ComfyUI.")
    parser.add_argument("--host-dir", type=Path, required=True)
    parser.add_argument("--node-dir", type=Path, required=True)
    parser.add_argument("--variant", required=True, choices=sorted(VARIANTS))
    args = parser.parse_args()
    sys.path.insert(0, str(HERE))
    import inside_comfyui as inside

    inside._start_comfy(args.host_dir.resolve())
    started = time.perf_counter()
    ok, detail, clip, node_class = load(inside, args.node_dir.resolve(), args.variant)
    inside.emit("loads: diffusion model (UNETLoader), text encoders, node pack", ok, None, detail, started)
    if node_class is None:
        return 1
    comfy = inside.Comfy(node_class)

    def markers_without_markers():
        import torch

        cond, pooled, report = comfy.node(clip, PROMPT, "Markers only")
        original, original_pooled = comfy.reference(clip, PROMPT)
        same = torch.equal(cond, original) and inside._same(pooled, original_pooled)
        diff = float((cond - original).abs().max()) if cond.shape == original.shape else float("inf")
        pooled_text = "absent in both" if pooled is None and original_pooled is None else "compared"
        detail = f"cond and pooled ({pooled_text}) {inside._equal(same)} to CLIPTextEncode; rows {cond.shape[0]}"
        return (
            same and "nothing to patch" in report,
            diff,
            detail + f"; nothing to patch: {'nothing to patch' in report}",
        )

    inside.run_check("Markers only, no markers = CLIPTextEncode", markers_without_markers)
    marked = PROMPT.replace("standing zebra", "~standing zebra~")
    inside.run_check(
        "marked item = its encode alone, every encoder",
        lambda: check_patched(inside, comfy, clip, marked, PROMPT, [("standing zebra", "standing zebra")]),
    )
    inside.run_check(
        "weights: ~(item:1.3)~, (other:1.2)",
        lambda: check_patched(
            inside,
            comfy,
            clip,
            "a (crosswalk:1.2) next to a bus station with a ~(standing zebra:1.3)~",
            "a (crosswalk:1.2) next to a bus station with a (standing zebra:1.3)",
            [("standing zebra", "(standing zebra:1.3)")],
        ),
    )

    def every_item():
        reports = []
        items = [(i, i) for i in TAG_ITEMS]
        ok, diff, detail = check_patched(inside, comfy, clip, TAGS, TAGS, items, "Every item", reports=reports)
        named = inside._patched_in_report(reports[0])
        exact = sorted(named) == sorted(TAG_ITEMS)
        return ok and exact, diff, f"{detail}; report names {named}"

    inside.run_check("Every item on a tag prompt", every_item)
    check = "Automatic (sens. 0.9; flowcore analyze cannot load this family)"
    if "T5" in [name for name, *_ in parts(clip, PROMPT)]:
        check = f"Automatic (sens. 0.9; T5-XXL calibrated on {T5_CALIBRATION_PROMPTS} prompts, for time)"
    inside.run_check(check, lambda: automatic(inside, comfy, clip, "T5" in check))
    return 0


def automatic(inside, comfy, clip, short: bool) -> tuple[bool, float, str]:
    """*Automatic* at sensitivity 0.9 on `PROMPT`: it patches something, and the items the report names are patched
    with their rows encoded alone, the rest is `CLIPTextEncode`'s (no `flowcore analyze` to compare the scores with:
    it does not load this family). `short`: calibrated on `T5_CALIBRATION_PROMPTS` prompts, and timed."""
    if short:
        count, total = inside.short_calibration(T5_CALIBRATION_PROMPTS)
    began = time.perf_counter()
    report = comfy.node(clip, PROMPT, "Automatic", 0.9)[2]
    first_s = time.perf_counter() - began
    named = inside._patched_in_report(report)
    items, timings = [(n, n) for n in named], []
    ok, diff, detail = check_patched(inside, comfy, clip, PROMPT, PROMPT, items, "Automatic", 0.9, timings=timings)
    detail = f"report names {named or 'nothing'}; {detail}"
    if short:
        detail = f"{inside.calibration_timing(first_s, timings[0], count, total)}; {detail}"
    return ok and bool(named), diff, detail


if __name__ == "__main__":
    sys.exit(main())
