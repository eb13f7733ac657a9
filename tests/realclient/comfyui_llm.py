"""ComfyUI with the families conditioned by a causal language model (Lumina 2, Qwen-Image, HiDream): their split
files and loaders, ComfyUI's own detection and text-encode nodes, and the node against them, in process.
`host_comfyui.py` hands these families over to `check`.

| family | loaders | ComfyUI's own text encode | conditioning |
|---|---|---|---|
| lumina2 | UNETLoader, CLIPLoader (type lumina2) | CLIPTextEncodeLumina2 | Gemma 2, layer -2, system prompt first |
| qwen-image | UNETLoader, CLIPLoader (type qwen_image) | CLIPTextEncode | Qwen2.5-VL, last layer, template dropped |
| hidream | detection, QuadrupleCLIPLoader | CLIPTextEncode | T5 rows; Llama's every layer; CLIPs pooled |

The random files come from `tools/random_checkpoint.py` (`tools/checkpoints/llm.py`: the language models at full
size, Qwen's and Llama's in scaled fp8, the diffusion models shallow) in `$FTF_MODELS_DIR/<family>/` (default
`<host-dir>/realclient-models`), made once. The Gemma and Llama 3 tokenizers are stand-ins built there from the
Qwen2 tokenizer ComfyUI ships (the rows say so); HiDream's `tokenizer.json` is put into ComfyUI's
`comfy/text_encoders/llama_tokenizer/` when that folder lacks one (the fetched ComfyUI source misses it).
ComfyUI's HiDream configuration has a fixed depth (16 double and 32 single blocks, 17B parameters), so the shallow
HiDream file is only classified (`model_detection`), never built; no images are made for HiDream.

Rows (in ComfyUI's Python: `python comfyui_llm.py --host-dir ... --node-dir ... --family ...`): the loads and the
detected types; ComfyUI's own encode (seconds, peak memory); *Markers only* without markers against the family's
own node (every tensor of the conditioning bit-identical); a marked item against ComfyUI's own encode of the
item alone (the same node, so the same template, the item right after it, as the node patches), its rows within
`inside_comfyui.tolerance`, every other row and tensor bit-identical; *Every item* on a tag prompt: the report
names exactly the items, each item's rows within tolerance of its own encode alone, the separators' and the
template's rows bit-identical; *Automatic* at sensitivity 0.9 (calibrated as `CALIBRATION_PROMPTS` says: in full, or
on a few prompts, timed, the full one extrapolated): it patches something, the items its report names get their
rows encoded alone, everything else bit-identical.
"""

from __future__ import annotations

import argparse
import inspect
import os
import shutil
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
PROMPT = "a crosswalk next to a bus station with a standing zebra"
ITEM = "standing zebra"
TAGS = "red shoes, white shirt, blue hair"
TAG_ITEMS = ["red shoes", "white shirt", "blue hair"]
LUMINA_SYSTEM_PROMPT = "superior"  # ComfyUI's CLIPTextEncodeLumina2 choice
BYTE_LEVEL_FAMILIES = ("qwen-image", "hidream")  # tokenizers whose tokens carry the space before a word
# *Automatic*'s calibration: all of the built-in prompts (None) where that takes minutes here (Gemma 2 2B: about 5
# min), else this many of them (`inside_comfyui.short_calibration`), timed and extrapolated (a 7-8B model's encode
# takes 50-120 s here, so the full one would take hours)
CALIBRATION_PROMPTS = {"lumina2": None, "qwen-image": 12, "hidream": 12}
SERVER_FAMILIES = ("lumina2",)  # images: Qwen-Image's (Wan 2.1) autoencoder is not written, HiDream is not built
TOKENIZER_NOTE = {
    "lumina2": "Gemma tokenizer: a stand-in of Gemma's 256000 ids built from Qwen2's vocabulary (llm.py)",
    "qwen-image": "Qwen2 tokenizer: ComfyUI's own",
    "hidream": "Llama 3 tokenizer: a stand-in (Qwen2's BPE cut to 128000 + Llama 3's special tokens, llm.py)",
}

# family -> (diffusion model file, VAE file or None, text encoder files in the loader's order, CLIP loader, type)
FAMILIES = {
    "lumina2": (
        "lumina2-random.safetensors",
        "lumina2-ae-random.safetensors",
        ["gemma_2_2b_fp16.safetensors"],
        "CLIPLoader",
        "lumina2",
    ),
    "qwen-image": (
        "qwen-image-random.safetensors",
        None,
        ["qwen_2.5_vl_7b_fp8_scaled.safetensors"],
        "CLIPLoader",
        "qwen_image",
    ),
    "hidream": (
        "hidream-random.safetensors",
        "hidream-ae-random.safetensors",
        [
            "clip_l.safetensors",
            "clip_g.safetensors",
            "t5xxl_fp8_e4m3fn.safetensors",
            "llama_3.1_8b_instruct_fp8_scaled.safetensors",
        ],
        "QuadrupleCLIPLoader",
        None,
    ),
}


# --- the orchestrator's side (standard library only) ----------------------------------------------------------------


def ensure_files(python: str, family: str, host_dir: Path, out: Path) -> tuple[Path, list[Path]]:
    """The family's files in `$FTF_MODELS_DIR` (written once), linked into ComfyUI's model folders; HiDream's
    stand-in Llama 3 tokenizer put where ComfyUI looks for it when that place is empty. Returns (folder, files)."""
    from host_common import host_env, link, run

    models = Path(os.environ.get("FTF_MODELS_DIR") or out.parent / "realclient-models")
    folder = models / family
    unet, vae, clips, _, _ = FAMILIES[family]
    wanted = [folder / unet] + ([folder / vae] if vae else []) + [models / "text_encoders" / name for name in clips]
    texts = host_dir / "comfy" / "text_encoders"
    if not all(path.exists() for path in wanted):
        tool = HERE.parents[1] / "tools" / "random_checkpoint.py"
        command = [python, str(tool), "--family", family, "--out", str(folder)]
        command += ["--tokenizer-source", str(texts / "qwen25_tokenizer")]
        command += ["--llama-config", str(texts / "llama_tokenizer" / "tokenizer_config.json")]
        run(command, out / "setup.log", env=host_env())
    link(wanted[0], host_dir / "models" / "diffusion_models")
    if vae:
        link(wanted[1], host_dir / "models" / "vae")
    for path in wanted[(2 if vae else 1) :]:
        link(path, host_dir / "models" / "text_encoders")
    if family == "hidream":
        standin = folder / "llama3_tokenizer_standin" / "tokenizer.json"
        target = texts / "llama_tokenizer" / "tokenizer.json"
        if not target.exists():
            shutil.copy2(standin, target)
    return folder, wanted


def check(host: str, family: str, python: str, host_dir: Path, node_dir: Path, out: Path) -> list:
    """Every row of one family: its files, then the in-process rows."""
    from host_comfyui import script_rows
    from host_common import say

    ensure_files(python, family, host_dir, out)
    say(f"{family}: in-process checks")
    command = [python, str(Path(__file__)), "--host-dir", str(host_dir), "--node-dir", str(node_dir)]
    command += ["--family", family]
    rows = script_rows(host, family, command, host_dir, out / f"inside-{family}.log", "in-process run", out)
    if family in SERVER_FAMILIES:
        rows += server_checks(host, family, rows[-1].model_type, python, host_dir, out)
    return rows


def workflow(family: str, text: str, node: str | None = None, mode: str = "Markers only", seed: int = 1) -> dict:
    """An API-format txt2img workflow: the family's loaders, the prompt through its own text-encode node or ours
    (with the same system prompt), a 64x64 SD3 latent, 2 Euler steps, the VAE decode."""
    from host_comfyui import sampled

    unet, vae, clips, _, clip_type = FAMILIES[family]
    graph = {"1": {"class_type": "UNETLoader", "inputs": {"unet_name": unet, "weight_dtype": "default"}}}
    graph["2"] = {"class_type": "CLIPLoader", "inputs": {"clip_name": clips[0], "type": clip_type}}
    graph["3"] = {"class_type": "VAELoader", "inputs": {"vae_name": vae}}
    inputs = {"clip": ["2", 0], "system_prompt": LUMINA_SYSTEM_PROMPT}
    if node:
        graph["4"] = {"class_type": node, "inputs": {**inputs, "text": text, "mode": mode, "sensitivity": 0.5}}
    else:
        graph["4"] = {"class_type": own_node_name(family), "inputs": {**inputs, "user_prompt": text}}
    graph["5"] = {"class_type": own_node_name(family), "inputs": {**inputs, "user_prompt": "blurry, low quality"}}
    graph["6"] = {"class_type": "EmptySD3LatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}}
    return sampled(graph, ["1", 0], ["3", 0], 4.0, "simple", seed)


def server_checks(host, family, model_type, python, host_dir, out) -> list:
    """The server rows: the node's image pixel-identical to the family's own node's, a marked item changes it,
    a clean log."""

    from host_comfyui import Images, server_log_row
    from host_common import Server, checked_row, free_port, host_env, say

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    command = [python, "main.py", "--cpu", "--listen", "127.0.0.1", "--port", str(port), "--disable-auto-launch"]
    env = host_env(FLOWCORE_CACHE=str(out / "flowcore-cache-server"))
    server = Server(command, host_dir, env, out / f"server-{family}.log")
    rows, shots = [], {}
    images = Images(url, python, out)
    node = "FollowTheFlowTextEncode"

    def row(check: str, function) -> None:
        rows.append(checked_row(host, family, model_type, check, function, server))

    try:
        started = time.perf_counter()
        server.wait_ready(f"{url}/system_stats")
        say(f"server ready after {time.perf_counter() - started:.0f} s")

        def identical():
            shots["plain"] = images.render(workflow(family, PROMPT))
            shots["node"] = images.render(workflow(family, PROMPT, node=node))
            difference, spread = images.difference(shots["plain"], shots["node"])
            return difference == 0, difference, f"max pixel difference {difference} (image value range {spread})"

        row(f"server: Markers only, no markers = {own_node_name(family)} (pixels)", identical)

        def changes():
            marked = images.render(workflow(family, PROMPT.replace(ITEM, f"~{ITEM}~"), node=node))
            difference, _ = images.difference(shots["plain"], marked)
            return difference > 0, difference, f"max pixel difference {difference} from {own_node_name(family)}'s"

        row("server: a marked item changes the image", changes)
    finally:
        peak = server.peak_mb()
        server.stop()
    rows.append(server_log_row(host, family, model_type, server.log, peak))
    return rows


# --- inside ComfyUI's Python ------------------------------------------------------------------------------------


def load(inside, family: str):
    """The diffusion model's detected type (`UNETLoader`; HiDream: `model_detection`) and the CLIP through the
    family's loader; returns (ok, detail, clip)."""
    import logging

    import comfy.model_detection
    import comfy.utils
    import folder_paths
    import nodes

    unet, _, clips, loader, clip_type = FAMILIES[family]
    records = inside.Records()
    logging.getLogger().addHandler(records)
    logging.getLogger().setLevel(logging.DEBUG)
    try:
        if family == "hidream":  # a fixed 17B configuration: classify the file, build nothing
            path = folder_paths.get_full_path_or_raise("diffusion_models", unet)
            state = comfy.utils.load_torch_file(path)
            config = comfy.model_detection.model_config_from_unet(state, "")
            model_type = f"{type(config).__name__} (detection only)" if config else "not detected"
            del state
        else:
            (model,) = nodes.UNETLoader().load_unet(unet, "default")
            model_type = type(model.model.model_config).__name__
            del model
        if loader == "QuadrupleCLIPLoader":
            from comfy_extras import nodes_hidream

            loaded = nodes_hidream.QuadrupleCLIPLoader.execute(*clips)
            clip = loaded.result[0] if hasattr(loaded, "result") else loaded[0]
        else:
            (clip,) = nodes.CLIPLoader().load_clip(clips[0], clip_type)
    finally:
        logging.getLogger().removeHandler(records)
        logging.getLogger().setLevel(logging.INFO)
    encoders = type(clip.cond_stage_model).__name__
    inner = [type(m).__name__ for m in clip.cond_stage_model.children()]
    inside.MODEL_TYPE = f"{model_type} / {encoders}"
    problems = [line for line in records.problems() if not (family == "hidream" and "unet missing" in line)]
    ok = not problems and model_type.split(" ")[0] in {"Lumina2", "QwenImage", "HiDream"}
    detail = f"model type {model_type}; text encoder {encoders} ({', '.join(inner)}); {TOKENIZER_NOTE[family]}"
    detail += f"; load problems: {problems[:3]}" if problems else "; no missing, unexpected or unloaded keys"
    return ok, detail, clip


def own_encode(family: str, clip, text: str) -> list:
    """The family's own text-encode node on `text`: its CONDITIONING (a list of `[cond, extras]`)."""
    import nodes

    if family == "lumina2":
        from comfy_extras import nodes_lumina2

        found = nodes_lumina2.CLIPTextEncodeLumina2.execute(clip, user_prompt=text, system_prompt=LUMINA_SYSTEM_PROMPT)
        return found.result[0] if hasattr(found, "result") else found[0]
    return nodes.CLIPTextEncode().encode(clip, text)[0]


def node_encode(node_class, family: str, clip, text: str, mode: str, sensitivity: float = 0.5):
    """The node's (conditioning, report); Lumina 2's system prompt passed as the node's `system_prompt` input."""
    node = node_class()
    kwargs = {}
    if family == "lumina2" and "system_prompt" in inspect.signature(node.encode).parameters:
        kwargs["system_prompt"] = LUMINA_SYSTEM_PROMPT
    result = node.encode(clip, text, mode, sensitivity, **kwargs)
    return result[0], result[1]


def tensors(conditioning: list) -> dict:
    """Every tensor of a one-entry conditioning: `cond` and each tensor in its extras (pooled output, attention
    mask, HiDream's `conditioning_llama3`)."""
    import torch

    assert len(conditioning) == 1, f"{len(conditioning)} conditionings"
    cond, extras = conditioning[0]
    found = {"cond": cond}
    found.update({key: value for key, value in extras.items() if torch.is_tensor(value)})
    return found


def sequences(family: str) -> dict[str, tuple[str, int]]:
    """The conditioning's sequence tensors: name -> (tokenizer key, sequence dimension)."""
    if family == "hidream":
        return {"cond": ("t5xxl", 1), "conditioning_llama3": ("llama", 2)}
    return {"cond": ({"lumina2": "gemma2_2b", "qwen-image": "qwen25_7b"}[family], 1)}


def token_ids(clip, text: str, key: str, family: str) -> list[int]:
    """The token ids ComfyUI encodes for `text` under `key` (Lumina 2: with the system prompt before it)."""
    if family == "lumina2":
        from comfy_extras import nodes_lumina2

        system = nodes_lumina2.CLIPTextEncodeLumina2.SYSTEM_PROMPT[LUMINA_SYSTEM_PROMPT]
        text = f"{system} <Prompt Start> {text}"
    return [int(token[0]) for chunk in clip.tokenize(text)[key] for token in chunk]


def _unpadded(ids: list[int], family: str) -> list[int]:
    """HiDream pads T5 and Llama to 128 tokens: the ids without the trailing padding."""
    ids = list(ids)
    if family == "hidream":
        pad = ids[-1]
        while len(ids) > 1 and ids[-1] == pad and ids[-2] == pad:
            ids.pop()
        if ids[-1] == pad and len(ids) > 1 and pad in (0, 128009):  # T5's pad 0 after "</s>"; Llama's eot pad
            ids.pop()
    return ids


def alone_text(family: str, text: str, item: str) -> str:
    """The text of `item` encoded alone: with the space before it in `text` where the tokenizer keeps spaces in
    its tokens (the byte-level BPEs of Qwen2 and Llama 3: " zebra" is one token, "zebra" another), so that ComfyUI's
    own node reads the tokens the item has in the prompt, as the node encodes them."""
    at = text.find(item)
    if family in BYTE_LEVEL_FAMILIES and at > 0 and text[at - 1] == " ":
        return " " + item
    return item


def item_rows(clip, family: str, key: str, text: str, item: str, rows: int, alone_rows: int):
    """Rows of `item`'s tokens in the encoding of `text` and of `item` alone. The template is what the encodes of
    "the" and "and" share (one token each in every tokenizer here): a common prefix and suffix. The item's ids are
    the alone encode's ids between them, found in `text`'s ids after the prefix. Each encoding's rows are its last
    `rows` (`alone_rows`) tokens: ComfyUI drops leading rows (Qwen-Image's template), never trailing ones."""
    first, second = (_unpadded(token_ids(clip, word, key, family), family) for word in ("the", "and"))
    prefix = 0
    while first[prefix] == second[prefix]:
        prefix += 1
    suffix = 0
    while suffix < len(first) - prefix - 1 and first[-1 - suffix] == second[-1 - suffix]:
        suffix += 1
    plain, alone = token_ids(clip, text, key, family), token_ids(clip, alone_text(family, text, item), key, family)
    bare = _unpadded(alone, family)
    ids = bare[prefix : len(bare) - suffix]
    for start in range(prefix, len(plain) - len(ids) + 1):
        if plain[start : start + len(ids)] == ids:
            break
    else:
        raise AssertionError(f"{item!r}'s ids {ids} not found in {text!r} ({key})")
    offset, alone_offset = len(plain) - rows, len(alone) - alone_rows
    return [start + n - offset for n in range(len(ids))], [prefix + n - alone_offset for n in range(len(ids))]


def compare_patched(inside, family, clip, node_class, text, plain, items, mode, sensitivity=0.5, timings=None):
    """The node on `text` against the family's own node on `plain`: each item's rows within tolerance of the
    family's own node on the item alone (`alone_text`), every row of no item and every other tensor bit-identical.
    The node's seconds are appended to `timings` when given. Returns (ok, worst difference, detail, the report)."""
    import torch

    began = time.perf_counter()
    conditioning, report = node_encode(node_class, family, clip, text, mode, sensitivity)
    if timings is not None:
        timings.append(time.perf_counter() - began)
    got, want = tensors(conditioning), tensors(own_encode(family, clip, plain))
    if set(got) != set(want):
        return False, float("inf"), f"tensors {sorted(got)} != {sorted(want)}", report
    worst, notes, ok = 0.0, [], True
    for name, (key, dim) in sequences(family).items():
        if got[name].shape != want[name].shape:
            return False, float("inf"), f"{name} shape {tuple(got[name].shape)} != {tuple(want[name].shape)}", report
        patched = set()
        for item in items:
            alone = tensors(own_encode(family, clip, alone_text(family, plain, item)))[name]
            rows, alone_rows = item_rows(clip, family, key, plain, item, got[name].shape[dim], alone.shape[dim])
            patched.update(rows)
            here = got[name].index_select(dim, torch.tensor(rows))
            there = alone.index_select(dim, torch.tensor(alone_rows))
            diff, scale = float((here - there).abs().max()), float(there.abs().max())
            worst = max(worst, diff)
            ok &= diff <= inside.tolerance(scale)
            notes.append(f"{name} {item!r}: {diff:.1e} (rows up to {scale:.3g}, within {inside.tolerance(scale):.1e})")
        others = torch.tensor([row for row in range(got[name].shape[dim]) if row not in patched])
        same = torch.equal(got[name].index_select(dim, others), want[name].index_select(dim, others))
        ok &= same
        notes.append(f"{name} other {len(others)} rows {inside._equal(same)}")
    for name in sorted(set(got) - set(sequences(family))):
        same = inside._same(got[name], want[name])
        ok &= same
        notes.append(f"{name} {inside._equal(same)}")
    return ok, worst, "; ".join(notes), report


def main() -> int:
    parser = argparse.ArgumentParser(description="The in-process checks of one LLM-conditioned family in ComfyUI.")
    parser.add_argument("--host-dir", type=Path, required=True)
    parser.add_argument("--node-dir", type=Path, required=True)
    parser.add_argument("--family", required=True, choices=sorted(FAMILIES))
    parser.add_argument("--reference-only", action="store_true", help="loads and ComfyUI's own encodes only")
    args = parser.parse_args()
    sys.path.insert(0, str(HERE))
    import inside_comfyui as inside

    family = args.family
    inside._start_comfy(args.host_dir.resolve())
    started = time.perf_counter()
    ok, detail, clip = load(inside, family)
    inside.emit("loads: detection, text encoders (ComfyUI's loaders)", ok, None, detail, started)

    def own_timing():
        import torch

        began = time.perf_counter()
        first = tensors(own_encode(family, clip, PROMPT))
        first_s = time.perf_counter() - began
        began = time.perf_counter()
        tensors(own_encode(family, clip, PROMPT + " "))
        again_s = time.perf_counter() - began
        shapes = ", ".join(f"{name} {tuple(value.shape)} {value.dtype}" for name, value in first.items())
        finite = all(torch.isfinite(value.float()).all() for value in first.values())
        detail = f"first encode {first_s:.1f} s (weights loaded), again {again_s:.1f} s; {shapes}"
        return finite, None, detail + ("" if finite else "; NOT FINITE")

    inside.run_check(f"ComfyUI's own encode ({own_node_name(family)})", own_timing)
    if args.reference_only:
        return 0
    import asyncio

    import nodes

    asyncio.run(nodes.load_custom_node(str(args.node_dir.resolve())))
    node_class = nodes.NODE_CLASS_MAPPINGS.get("FollowTheFlowTextEncode")
    if node_class is None:
        inside.emit("node pack registered", False, None, "FollowTheFlowTextEncode missing", time.perf_counter())
        return 1

    def markers_without_markers():
        conditioning, report = node_encode(node_class, family, clip, PROMPT, "Markers only")
        got, want = tensors(conditioning), tensors(own_encode(family, clip, PROMPT))
        same = set(got) == set(want) and all(inside._same(got[name], want[name]) for name in want)
        diffs = [float((got[n] - want[n]).abs().max()) for n in want if n in got and got[n].shape == want[n].shape]
        detail = f"{', '.join(sorted(want))} {inside._equal(same)} to {own_node_name(family)}"
        return same and "nothing to patch" in report, max(diffs, default=None), detail + f"; report: {report!r}"[:400]

    inside.run_check(f"Markers only, no markers = {own_node_name(family)}", markers_without_markers)

    def marked():
        text = PROMPT.replace(ITEM, f"~{ITEM}~")
        ok, diff, detail, report = compare_patched(
            inside, family, clip, node_class, text, PROMPT, [ITEM], "Markers only"
        )
        return ok, diff, detail + ("" if ok else f"; report: {report!r}"[:300])

    inside.run_check("marked item = its own encode alone, other rows bit-identical", marked)

    def every_item():
        ok, diff, detail, report = compare_patched(
            inside, family, clip, node_class, TAGS, TAGS, TAG_ITEMS, "Every item"
        )
        named = inside._patched_in_report(report)
        exact = sorted(named) == sorted(TAG_ITEMS)
        return ok and exact, diff, f"report names {named}; {detail}"

    inside.run_check("Every item on a tag prompt: exactly the items", every_item)

    shortened = CALIBRATION_PROMPTS[family]

    def automatic():
        count, total = inside.short_calibration(shortened) if shortened else (None, None)
        began = time.perf_counter()
        report = node_encode(node_class, family, clip, PROMPT, "Automatic", 0.9)[1]
        first_s = time.perf_counter() - began
        named, timings = inside._patched_in_report(report), []
        ok, diff, detail, _ = compare_patched(
            inside, family, clip, node_class, PROMPT, PROMPT, named, "Automatic", 0.9, timings
        )
        if shortened:
            timing = inside.calibration_timing(first_s, timings[0], count, total)
        else:
            timing = f"full calibration: first Automatic call {first_s:.0f} s, again {timings[0]:.0f} s"
        return ok and bool(named), diff, f"{timing}; report names {named or 'nothing'}; {detail}"

    calibrated = f"calibrated on {shortened} prompts, for time" if shortened else "full calibration"
    inside.run_check(f"Automatic (sens. 0.9; {calibrated})", automatic)
    return 0


def own_node_name(family: str) -> str:
    return "CLIPTextEncodeLumina2" if family == "lumina2" else "CLIPTextEncode"


if __name__ == "__main__":
    sys.exit(main())
