"""ComfyUI: install the node pack as ComfyUI's Manager does, run the in-process checks, then the server's.

1. Python: `--python`, or `<host-dir>/venv` made as ComfyUI's README says (torch, torchvision, torchaudio, then
   `requirements.txt`), with `TORCH_PINS` as constraints.
2. Install: this checkout's files copied to `custom_nodes/follow-the-flow` (what a clone gives), then
   `pip install -r requirements.txt` there; `pip freeze` before and after.
3. Per family: the random checkpoint and LoRA (`tools/random_checkpoint.py`) linked into `models/`;
   `flowcore analyze` on it; `inside_comfyui.py` in ComfyUI's Python (rows compared with ComfyUI's own encodes);
   `chain_comfyui.py` for `CHAIN_FAMILIES` (the node through ComfyUI's conditioning nodes and LoRA loaders to the
   sampler's first step).
   SD 3.5, Flux and Chroma (split files, their own loaders and checks): `comfyui_families.py`; Lumina 2,
   Qwen-Image and HiDream (a language model as text encoder; asked for with `--models`): `comfyui_llm.py`.
4. The server (`main.py --cpu`, one thread), driven through its HTTP API: the node in `/object_info`; images
   (64x64, 2 steps, Euler) compared pixel by pixel; a workflow chaining the conditioning nodes after the node;
   its log read for tracebacks after a PID-based stop.

`REALCLIENT_ONLY=chain` in the environment runs only the chain rows (and the server log's), a short run while
iterating.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

import comfyui_families
import comfyui_llm
from host_common import (
    NOT_IMPLEMENTED,
    NOT_RUN,
    REPO,
    Row,
    Server,
    analyze,
    checked_row,
    checkout_files,
    free_port,
    freeze_row,
    host_env,
    http_json,
    link,
    pip_freeze,
    random_checkpoint,
    run,
    say,
)

# the families the node is built for (the default of `--models`)
CLAIMED = ("sd15", "sd2", "sdxl", "sd35", "flux-dev", "flux-schnell", "chroma")
IMPLEMENTED = ("sd15", "sd2", "sdxl")  # single files; the split-file families: `comfyui_families`
TORCH_PINS = ("torch==2.8.0", "torchvision==0.23.0", "torchaudio==2.8.0", "transformers==4.57.1")
NODE_FOLDER = "follow-the-flow"
CHAIN_ONLY = os.environ.get("REALCLIENT_ONLY") == "chain"  # only the chain rows (a short run while iterating)
CHAIN_FAMILIES = ("sd15",)  # the families the chain rows run for
PROMPT = "a crosswalk next to a bus station with a standing zebra"
AUTOMATIC_CASES = (  # (prompt, sensitivity): the second patches items on the random SD 1.5 weights
    (PROMPT, 0.5),
    ("a cute girl, white shirt with green tie, red shoes, blue hair, yellow eyes, pink skirt", 0.9),
)
PIXELS = (
    "import sys, numpy as np; from PIL import Image; "
    "a, b = (np.asarray(Image.open(p).convert('RGB'), dtype=np.int16) for p in sys.argv[1:3]); "
    "print(int(np.abs(a - b).max()) if a.shape == b.shape else -1, int(a.max()) - int(a.min()))"
)


def version(host_dir: Path) -> str:
    """`ComfyUI <version>` from the checkout's `comfyui_version.py`."""
    text = (host_dir / "comfyui_version.py").read_text(encoding="utf-8")
    found = re.search(r"__version__\s*=\s*\"([^\"]+)\"", text)
    return f"ComfyUI {found.group(1) if found else '?'}"


def make_python(host_dir: Path, out: Path) -> str:
    """ComfyUI's environment as its README installs it, in `<host-dir>/venv` (reused when it exists)."""
    python = host_dir / "venv" / "bin" / "python"
    if python.exists():
        return str(python)
    base = shutil.which("python3.11") or sys.executable
    log = out / "setup.log"
    run([base, "-m", "venv", str(host_dir / "venv")], log)
    constraints = out / "constraints.txt"
    constraints.write_text("\n".join(TORCH_PINS) + "\n", encoding="utf-8")
    pip = [str(python), "-m", "pip", "install", "-c", str(constraints)]
    run([*pip, "torch", "torchvision", "torchaudio"], log, env=host_env())
    run([*pip, "-r", str(host_dir / "requirements.txt")], log, env=host_env())
    return str(python)


def install_node_pack(host_dir: Path, python: str, log: Path) -> Path:
    """Copies the checkout into `custom_nodes/` and installs its `requirements.txt` as the Manager does."""
    target = host_dir / "custom_nodes" / NODE_FOLDER
    if target.exists():
        if not (target / "comfyui_nodes" / "nodes.py").exists():
            raise RuntimeError(f"{target} exists and is not an earlier copy of this node pack: move it away")
        shutil.rmtree(target)
    for name in checkout_files():
        (target / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / name, target / name)
    run([python, "-m", "pip", "install", "-r", str(target / "requirements.txt")], log, env=host_env())
    return target


def check(args, out: Path) -> list[Row]:
    """Every row of ComfyUI for the families in `args.models`."""
    host_dir: Path = args.host_dir
    host = version(host_dir)
    python = args.python or make_python(host_dir, out)
    log = out / "setup.log"
    rows: list[Row] = []
    started = time.perf_counter()
    before = pip_freeze(python, out / "pip-freeze-before.txt")
    node_dir = install_node_pack(host_dir, python, log)
    rows.append(
        freeze_row(host, "-", before, pip_freeze(python, out / "pip-freeze-after.txt"), time.perf_counter() - started)
    )
    for name in args.models:
        if name in comfyui_families.FAMILY_VARIANTS:  # SD 3.5, Flux, Chroma: split files, their own loaders
            rows += comfyui_families.check(host, name, python, host_dir, node_dir, out)
            continue
        if name in comfyui_llm.FAMILIES:  # Lumina 2, Qwen-Image, HiDream: a language model as text encoder
            rows += comfyui_llm.check(host, name, python, host_dir, node_dir, out)
            continue
        if name not in IMPLEMENTED:
            rows.append(Row(host, name, "-", "all checks", NOT_IMPLEMENTED, detail="not implemented yet"))
            continue
        checkpoint, lora = random_checkpoint(python, name, out.parent / "realclient-models", log)
        names = (
            link(checkpoint, host_dir / "models" / "checkpoints").name,
            link(lora, host_dir / "models" / "loras").name,
        )
        if not CHAIN_ONLY:
            rows += in_process(host, name, python, host_dir, node_dir, checkpoint, names, out)
        if name in CHAIN_FAMILIES:
            rows += chain(host, name, python, host_dir, node_dir, names, out)
        model_type = rows[-1].model_type
        rows += server_checks(host, name, model_type, python, host_dir, names, out)
    return rows


def in_process(host, family, python, host_dir, node_dir, checkpoint, names, out) -> list[Row]:
    """`flowcore analyze` for `AUTOMATIC_CASES`, then `inside_comfyui.py` in ComfyUI's Python."""
    cases = [
        {
            "prompt": prompt,
            "sensitivity": sensitivity,
            "report": analyze(checkpoint, prompt, sensitivity, out / "flowcore-cache-analyze", out / "analyze.log"),
        }
        for prompt, sensitivity in AUTOMATIC_CASES
    ]
    cases_file = out / f"analyze-{family}.json"
    cases_file.write_text(json.dumps(cases), encoding="utf-8")
    script = Path(__file__).with_name("inside_comfyui.py")
    command = [python, str(script), "--host-dir", str(host_dir), "--node-dir", str(node_dir)]
    command += ["--checkpoint", names[0], "--lora", names[1], "--analyze", str(cases_file)]
    return script_rows(host, family, command, host_dir, out / f"inside-{family}.log", "in-process run", out)


def chain(host, family, python, host_dir, node_dir, names, out) -> list[Row]:
    """`chain_comfyui.py` in ComfyUI's Python: the node through ComfyUI's conditioning nodes to the sampler."""
    script = Path(__file__).with_name("chain_comfyui.py")
    command = [python, str(script), "--host-dir", str(host_dir), "--node-dir", str(node_dir)]
    command += ["--checkpoint", names[0], "--lora", names[1]]
    return script_rows(host, family, command, host_dir, out / f"chain-{family}.log", "chain run", out)


def script_rows(host, family, command, host_dir, log: Path, name: str, out) -> list[Row]:
    """Runs an in-process script (stderr to `log`), one row per JSON line it prints, then one for its run."""
    say(" ".join(command))
    started = time.perf_counter()
    with open(log, "w", encoding="utf-8") as errors:
        done = subprocess.run(
            command,
            cwd=host_dir,
            stdout=subprocess.PIPE,
            stderr=errors,
            text=True,
            check=False,
            env=host_env(FLOWCORE_CACHE=str(out / "flowcore-cache-host")),
        )
    rows = []
    for line in done.stdout.splitlines():
        if line.startswith("{"):
            found = json.loads(line)
            rows.append(
                Row(
                    host,
                    family,
                    found["model_type"],
                    found["check"],
                    NOT_RUN if found["ok"] == "not run" else found["ok"],
                    found["max_diff"],
                    found["peak_mb"],
                    found["seconds"],
                    found["detail"],
                )
            )
    model_type = rows[-1].model_type if rows else "?"
    tracebacks = log.read_text(encoding="utf-8").count("Traceback")
    ok = done.returncode == 0 and not tracebacks and len(rows) > 1
    rows.append(
        Row(
            host,
            family,
            model_type,
            f"{name}: exit 0, no traceback",
            ok,
            None,
            None,
            time.perf_counter() - started,
            f"exit {done.returncode}, {tracebacks} tracebacks in its log",
        )
    )
    return rows


def workflow(
    text: str,
    ckpt: str,
    node: str | None = None,
    mode: str = "Markers only",
    lora: str | None = None,
    clip_skip: int | None = None,
    seed: int = 1,
) -> dict:
    """An API-format txt2img workflow: 64x64, 2 steps, Euler; the prompt through `CLIPTextEncode` or the node."""
    graph = {"1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": ckpt}}}
    model, clip = ["1", 0], ["1", 1]
    if lora:
        graph["2"] = {
            "class_type": "LoraLoader",
            "inputs": {"model": model, "clip": clip, "lora_name": lora, "strength_model": 1.0, "strength_clip": 1.0},
        }
        model, clip = ["2", 0], ["2", 1]
    if clip_skip:
        graph["3"] = {"class_type": "CLIPSetLastLayer", "inputs": {"clip": clip, "stop_at_clip_layer": clip_skip}}
        clip = ["3", 0]
    if node:
        graph["4"] = {"class_type": node, "inputs": {"text": text, "clip": clip, "mode": mode, "sensitivity": 0.5}}
    else:
        graph["4"] = {"class_type": "CLIPTextEncode", "inputs": {"text": text, "clip": clip}}
    graph["5"] = {"class_type": "CLIPTextEncode", "inputs": {"text": "blurry, low quality", "clip": clip}}
    graph["6"] = {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}}
    return sampled(graph, model, ["1", 2], 7.0, "normal", seed)


def sampled(graph: dict, model: list, vae: list, cfg: float, scheduler: str, seed: int) -> dict:
    """`graph` (its prompt at node "4", the negative at "5", the empty latent at "6") sampled in 2 Euler steps,
    decoded with `vae` and saved (nodes "7" to "9"): the tail every workflow of the suite shares."""
    inputs = {"model": model, "positive": ["4", 0], "negative": ["5", 0], "latent_image": ["6", 0], "seed": seed}
    inputs.update(steps=2, cfg=cfg, sampler_name="euler", scheduler=scheduler, denoise=1.0)
    graph["7"] = {"class_type": "KSampler", "inputs": inputs}
    graph["8"] = {"class_type": "VAEDecode", "inputs": {"samples": ["7", 0], "vae": vae}}
    graph["9"] = {"class_type": "SaveImage", "inputs": {"images": ["8", 0], "filename_prefix": "ftf_realclient"}}
    return graph


def chain_workflow(text: str, ckpt: str, lora: str, node: str) -> dict:
    """`workflow` with the node between ComfyUI's LoraLoader, `CLIPSetLastLayer` and its conditioning nodes:
    LoraLoader -> CLIPSetLastLayer -2 -> the node -> Concat with a second prompt -> Average with it -> Set Area (the
    right half of a 128x64 image) -> Set Timestep Range 0-0.6 -> Combine with the second prompt at 0.6-1 for the
    positive. (LoraLoaderModelOnly is checked in process: given a LoRA with text encoder keys, as ours, ComfyUI logs
    each of them as "lora key not loaded", which the server log's row counts.)"""
    graph = workflow(text, ckpt, node=node, lora=lora, clip_skip=-2)
    graph["6"]["inputs"]["width"] = 128
    graph["11"] = {"class_type": "CLIPTextEncode", "inputs": {"text": "a red fox in the snow", "clip": ["3", 0]}}
    graph["12"] = {
        "class_type": "ConditioningConcat",
        "inputs": {"conditioning_to": ["4", 0], "conditioning_from": ["11", 0]},
    }
    graph["13"] = {
        "class_type": "ConditioningAverage",
        "inputs": {"conditioning_to": ["12", 0], "conditioning_from": ["11", 0], "conditioning_to_strength": 0.75},
    }
    graph["14"] = {
        "class_type": "ConditioningSetArea",
        "inputs": {"conditioning": ["13", 0], "width": 64, "height": 64, "x": 64, "y": 0, "strength": 1.0},
    }
    graph["15"] = {
        "class_type": "ConditioningSetTimestepRange",
        "inputs": {"conditioning": ["14", 0], "start": 0.0, "end": 0.6},
    }
    graph["16"] = {
        "class_type": "ConditioningSetTimestepRange",
        "inputs": {"conditioning": ["11", 0], "start": 0.6, "end": 1.0},
    }
    graph["17"] = {
        "class_type": "ConditioningCombine",
        "inputs": {"conditioning_1": ["15", 0], "conditioning_2": ["16", 0]},
    }
    graph["7"]["inputs"]["positive"] = ["17", 0]
    return graph


class Images:
    """Queues workflows on the server, fetches their images and compares their pixels (ComfyUI's Python)."""

    def __init__(self, url: str, python: str, out: Path) -> None:
        self.url, self.python, self.out, self.count = url, python, out, 0

    def render(self, graph: dict, timeout: float = 600) -> Path:
        queued = http_json(f"{self.url}/prompt", {"prompt": graph, "client_id": "ftf-realclient"})
        prompt_id = queued["prompt_id"]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            history = http_json(f"{self.url}/history/{prompt_id}").get(prompt_id)
            if history and history.get("status", {}).get("completed"):
                break
            if history and history.get("status", {}).get("status_str") == "error":
                raise RuntimeError(f"the workflow failed: {history['status']}")
            time.sleep(0.5)
        else:
            raise TimeoutError(f"workflow {prompt_id} did not finish within {timeout:.0f} s")
        image = history["outputs"]["9"]["images"][0]
        query = urllib.parse.urlencode({k: image[k] for k in ("filename", "subfolder", "type")})
        self.count += 1
        path = self.out / f"image-{self.count:02d}.png"
        with urllib.request.urlopen(f"{self.url}/view?{query}", timeout=60) as response:
            path.write_bytes(response.read())
        return path

    def difference(self, a: Path, b: Path) -> tuple[int, int]:
        """(max pixel difference, value range of `a`), decoded with Pillow in ComfyUI's Python."""
        done = subprocess.run([self.python, "-c", PIXELS, str(a), str(b)], capture_output=True, text=True, check=True)
        difference, spread = done.stdout.split()
        return int(difference), int(spread)


def server_checks(host, family, model_type, python, host_dir, names, out) -> list[Row]:
    """The server rows: node listed, images pixel-identical or changed as they should be, a clean log."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    command = [python, "main.py", "--cpu", "--listen", "127.0.0.1", "--port", str(port), "--disable-auto-launch"]
    server = Server(
        command, host_dir, host_env(FLOWCORE_CACHE=str(out / "flowcore-cache-server")), out / f"server-{family}.log"
    )
    rows: list[Row] = []

    def row(check: str, function) -> None:
        if not CHAIN_ONLY or check.startswith("server: chain"):
            rows.append(checked_row(host, family, model_type, check, function, server))

    ckpt, lora = names
    images = Images(url, python, out)
    node = "FollowTheFlowTextEncode"
    try:
        started = time.perf_counter()
        server.wait_ready(f"{url}/system_stats")
        say(f"server ready after {time.perf_counter() - started:.0f} s")

        def listed():
            info = http_json(f"{url}/object_info/{node}")[node]
            modes = info["input"]["required"]["mode"][0]
            ok = modes == ["Automatic", "Markers only", "Every item"]
            return ok, None, f"modes {modes}; outputs {info['output']}"

        row("server: node in /object_info", listed)
        shots: dict[str, Path] = {}

        def identical(key: str, **kwargs):
            def compare():
                shots[key] = images.render(workflow(PROMPT, ckpt, **kwargs))
                shots[f"{key} node"] = images.render(workflow(PROMPT, ckpt, node=node, **kwargs))
                difference, spread = images.difference(shots[key], shots[f"{key} node"])
                return difference == 0, difference, f"max pixel difference {difference} (image value range {spread})"

            return compare

        row("server: Markers only, no markers = CLIPTextEncode", identical("plain"))
        row("server: the same with LoRA + clip skip -2", identical("lora", lora=lora, clip_skip=-2))

        def changes():
            marked = images.render(workflow(PROMPT.replace("standing zebra", "~standing zebra~"), ckpt, node=node))
            shots["on"] = marked
            difference, _ = images.difference(shots["plain"], marked)
            return difference > 0, difference, f"max pixel difference {difference} from CLIPTextEncode's image"

        row("server: a marked item changes the image", changes)

        def off_on_off():
            http_json(f"{url}/free", {"unload_models": True, "free_memory": True})
            again = images.render(workflow(PROMPT, ckpt))
            difference, _ = images.difference(shots["plain"], again)
            return difference == 0, difference, "CLIPTextEncode's image before and after the node ran (caches freed)"

        row("server: off -> on -> off", off_on_off)

        def chained():
            image = images.render(
                chain_workflow(PROMPT.replace("standing zebra", "~standing zebra~"), ckpt, lora, node)
            )
            _, spread = images.difference(image, image)  # its value range: not a blank (NaN) image
            return spread > 0, None, f"finished, {image.name} decoded (value range {spread})"

        if family in CHAIN_FAMILIES:
            row("server: chain workflow (LoraLoader, clip skip, node, 5 conditioning nodes)", chained)
    finally:
        peak = server.peak_mb()
        server.stop()
    rows.append(server_log_row(host, family, model_type, server.log, peak))
    return rows


def server_log_row(host: str, family: str, model_type: str, log: Path, peak: float | None) -> Row:
    """The server's log after its stop: the node pack imported (not "IMPORT FAILED"), no traceback, and no LoRA key
    that ComfyUI could not load."""
    text = log.read_text(encoding="utf-8", errors="replace")
    imported = re.search(rf"^\s*[\d.]+ seconds(?P<failed> \(IMPORT FAILED\))?: .*{NODE_FOLDER}$", text, re.MULTILINE)
    tracebacks, unloaded = text.count("Traceback"), text.count("lora key not loaded")
    ok = bool(imported) and not imported.group("failed") and not tracebacks and not unloaded
    detail = f"node pack import: {'failed' if imported and imported.group('failed') else 'ok' if imported else '?'}"
    detail += f"; {tracebacks} tracebacks, {unloaded} LoRA keys not loaded in {log.name}"
    return Row(host, family, model_type, "server log: node imported, no traceback", ok, None, peak, None, detail)
