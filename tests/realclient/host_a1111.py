"""AUTOMATIC1111 WebUI v1.10.1: install the extension as the WebUI does, drive the server through its API.

1. Python: `--python`, or `<host-dir>/venv` made by the WebUI's own launcher (`launch.py --exit`) with the
   settings of `launcher_env` (its `requirements_versions.txt` with setuptools relaxed, torch pinned).
   Its pinned repositories come from `--deps` (one folder each, named as under `repositories/`) when
   `repositories/` lacks them; each becomes a git folder at its pinned commit, so the launcher never clones.
2. The CLIP tokenizer and config the WebUI asks the hub for, built offline into a hub cache (`HF_HOME`).
3. The WebUI alone (no extension): its images, and its options saved as `config.json` (so that
   `override_settings` are restored after each request).
4. The extension copied to `extensions/follow-the-flow` (what *Install from URL* clones), with the probe
   (`a1111_probe/`), which records the conditioning the sampler gets and compares it with the WebUI's own
   encodes; `install.py` runs at the next launch; `pip freeze` before and after.
5. Rows: the extension in `/sdapi/v1/script-info`; off = the WebUI alone, pixel for pixel; marked items' rows
   against the WebUI's encode of the item alone (plain, emphasis "No norm" and "None", clip skip 2, `BREAK`,
   a second chunk, a LoRA whose every module the Lora extension matched); *Every item* and *Automatic* with
   their infotext; off -> on -> off; a clean log. SDXL: the rows of both encoders (CLIP-L's and CLIP-G's
   columns), the pooled vector bit-identical, clip skip with the WebUI's `sdxl_clip_l_skip`. SD 2.x: the
   WebUI applies no clip skip to OpenCLIP, and the row checks that the extension follows it.
"""

from __future__ import annotations

import base64
import json
import re
import shutil
import struct
import subprocess
import sys
import time
from pathlib import Path

from host_common import (
    NOT_IMPLEMENTED,
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
    script_listed,
    tolerance,
)

CLAIMED = ("sd15", "sd2", "sdxl")  # the families the extension is built for in A1111
IMPLEMENTED = ("sd15", "sd2", "sdxl")
TORCH_PINS = ("torch==2.14.1", "torchvision==0.29.1")
# The repositories `modules/launch_utils.py` of v1.10.1 pins: folder -> (its URL, commit)
REPOSITORIES = {
    "stable-diffusion-webui-assets": (
        "https://github.com/AUTOMATIC1111/stable-diffusion-webui-assets.git",
        "6f7db241d2f8ba7457bac5ca9753331f0c266917",
    ),
    "stable-diffusion-stability-ai": (
        "https://github.com/Stability-AI/stablediffusion.git",
        "cf1d67a6fd5ea1aa600c4df58e5b47da45f6bdbf",
    ),
    "generative-models": (
        "https://github.com/Stability-AI/generative-models.git",
        "45c443b316737a4ab6e40413d7794a7f5657c19f",
    ),
    "k-diffusion": ("https://github.com/crowsonkb/k-diffusion.git", "ab527a9a6d347f364e3d185ba6d714e22d80cb3c"),
    "BLIP": ("https://github.com/salesforce/BLIP.git", "48211a1594f1321b00f14c9f7a5b4813144b2fb9"),
}
FLAGS = [
    "--skip-torch-cuda-test",
    "--use-cpu",
    "all",
    "--no-half",
    "--no-half-vae",
    "--api",
    "--skip-version-check",
    "--skip-python-version-check",
    "--no-download-sd-model",
]
# Families whose checkpoint the WebUI cannot load first on the CPU with --no-half: v1.10.1 tells SD 2.x's v-prediction
# apart by running the UNet cast to `devices.dtype_unet`, which is fp16 until a first model has loaded (then fp32),
# so the first SD 2.x load fails ("Input type (float) and bias type (c10::Half)"). The server starts on the
# family named here and switches to the checkpoint through `/sdapi/v1/options`, which runs the WebUI's detection.
START_WITH = {"sd2": "sd15"}
EXTENSION, PROBE = "follow-the-flow", "ftf-realclient-probe"
PROMPT = "a crosswalk next to a bus station with a standing zebra"
MARKED = PROMPT.replace("standing zebra", "~standing zebra~")
NEGATIVE = "blurry, low quality"
TAGS = "masterpiece, 1girl, white shirt, green tie, red shoes, blue hair, yellow eyes, pink skirt"
TAG_ITEMS = ["1girl", "white shirt", "green tie", "red shoes", "blue hair", "yellow eyes", "pink skirt"]
COLOURS = "a cute girl, white shirt with green tie, red shoes, blue hair, yellow eyes, pink skirt"
PIXELS = (
    "import sys, numpy as np; from PIL import Image; "
    "a, b = (np.asarray(Image.open(p).convert('RGB'), dtype=np.int16) for p in sys.argv[1:3]); "
    "print(int(np.abs(a - b).max()) if a.shape == b.shape else -1)"
)
HUB_CACHE = """
import json, sys
from pathlib import Path
sys.path.insert(0, sys.argv[2])
import open_clip
from flowcore.models.clip_tokenizer import clip_tokenizer
tokenizer = clip_tokenizer(str(Path(open_clip.__file__).parent / "bpe_simple_vocab_16e6.txt.gz"))
assert len(tokenizer) == 49408, len(tokenizer)
snapshot = Path(sys.argv[1]) / "hub" / "models--openai--clip-vit-large-patch14"
(snapshot / "refs").mkdir(parents=True, exist_ok=True)
(snapshot / "refs" / "main").write_text("0" * 40)
folder = snapshot / "snapshots" / ("0" * 40)
tokenizer.save_pretrained(str(folder))
config = {"architectures": ["CLIPTextModel"], "model_type": "clip_text_model", "vocab_size": 49408,
          "hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12, "num_attention_heads": 12,
          "max_position_embeddings": 77, "hidden_act": "quick_gelu", "projection_dim": 768,
          "bos_token_id": 49406, "eos_token_id": 49407, "pad_token_id": 1}
(folder / "config.json").write_text(json.dumps(config))
"""


def lora_modules(path: Path) -> int:
    """How many modules a kohya LoRA file holds (its `.lora_down.weight` keys), from its safetensors header."""
    with open(path, "rb") as file:
        header = json.loads(file.read(struct.unpack("<Q", file.read(8))[0]))
    return sum(key.endswith(".lora_down.weight") for key in header)


def version(host_dir: Path) -> str:
    """`A1111 <version>` from the top entry of the checkout's CHANGELOG.md (what the WebUI shows without git)."""
    found = re.search(r"^## (\d+\.\d+\.\d+)", (host_dir / "CHANGELOG.md").read_text(encoding="utf-8"), re.MULTILINE)
    return f"A1111 {found.group(1) if found else '?'}"


def place_repositories(host_dir: Path, deps: Path | None, log: Path) -> None:
    """Every pinned repository under `repositories/` as a git folder at its commit (from `--deps` if missing)."""
    for name, (url, commit) in REPOSITORIES.items():
        target = host_dir / "repositories" / name
        if (target / ".git").exists():
            continue
        source = deps / name if deps else None
        if source is None or not source.is_dir():
            raise RuntimeError(f"repositories/{name} is missing: put it (commit {commit}) in --deps DIR/{name}")
        shutil.copytree(source, target, symlinks=True, dirs_exist_ok=True)
        if not (target / ".git").exists():
            run(["git", "init", "-q"], log, cwd=target)
            (target / ".git" / "HEAD").write_text(commit + "\n")  # `git rev-parse HEAD` is what the launcher reads
            run(["git", "remote", "add", "origin", url], log, cwd=target)


def launcher_env(out: Path, **extra: str) -> dict[str, str]:
    """The launcher's settings: relaxed requirements, CLIP packages from the index, torch pinned, offline hub."""
    requirements = out / "requirements_versions.txt"
    constraints = out / "constraints.txt"
    constraints.write_text("\n".join(TORCH_PINS) + "\n", encoding="utf-8")
    return host_env(
        REQS_FILE=str(requirements),
        TORCH_COMMAND="pip install " + " ".join(TORCH_PINS),
        CLIP_PACKAGE="openai-clip==1.0.1",
        OPENCLIP_PACKAGE="open-clip-torch==2.20.0",
        PIP_CONSTRAINT=str(constraints),
        HF_HOME=str(out / "hf"),
        **extra,
    )


def relaxed_requirements(host_dir: Path, out: Path) -> None:
    """The WebUI's `requirements_versions.txt` with `setuptools==69.5.1` relaxed (it no longer builds here)."""
    text = (host_dir / "requirements_versions.txt").read_text(encoding="utf-8")
    text = re.sub(r"^setuptools==69\.5\.1.*$", "setuptools>=77.0.3,<81", text, flags=re.MULTILINE)
    (out / "requirements_versions.txt").write_text(text, encoding="utf-8")


def make_python(host_dir: Path, out: Path) -> str:
    """`<host-dir>/venv`, filled by the WebUI's launcher (`launch.py --exit`); reused when it exists."""
    python = host_dir / "venv" / "bin" / "python"
    if not python.exists():
        base = shutil.which("python3.11") or sys.executable
        run([base, "-m", "venv", str(host_dir / "venv")], out / "setup.log")
        run([str(python), "launch.py", *FLAGS, "--exit"], out / "setup.log", cwd=host_dir, env=launcher_env(out))
    return str(python)


def copy_tree(files: list[Path], root: Path, target: Path) -> None:
    """Copies `files` (under `root`) to `target` (an extension folder `remove_copies` cleared)."""
    for path in files:
        (target / path.relative_to(root)).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, target / path.relative_to(root))


def remove_copies(host_dir: Path) -> None:
    """Removes the extension's and the probe's copies an earlier run left in `extensions/`."""
    for folder in (EXTENSION, PROBE):
        if (host_dir / "extensions" / folder).exists():
            shutil.rmtree(host_dir / "extensions" / folder)


class WebUI:
    """One WebUI server: started by PID, ready at "Startup time:", driven through `/sdapi/v1`."""

    def __init__(
        self, python: str, host_dir: Path, checkpoint: Path, out: Path, name: str, start: Path | None = None, **env: str
    ) -> None:
        """Starts the WebUI on `checkpoint`, or on `start` and then switches to `checkpoint` once ready."""
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.python, self.out, self.name, self.count = python, out, name, 0
        self.switch_to = checkpoint if start else None
        command = [python, "launch.py", *FLAGS, "--ckpt", str(start or checkpoint), "--port", str(self.port)]
        self.server = Server(command, host_dir, launcher_env(out, **env), out / f"{name}.log")

    def wait_ready(self, timeout: float = 600) -> None:
        deadline = time.monotonic() + timeout
        self.server.wait_ready(f"{self.url}/sdapi/v1/options", timeout)
        while "Startup time:" not in self.server.log.read_text(encoding="utf-8", errors="replace"):
            if time.monotonic() > deadline:
                raise TimeoutError("no 'Startup time:' in the log")
            time.sleep(1)
        if self.switch_to:  # the WebUI's own checkpoint switch, once the first model has loaded (and set its dtype)
            while "Model loaded in" not in self.server.log.read_text(encoding="utf-8", errors="replace"):
                if time.monotonic() > deadline:
                    raise TimeoutError("no 'Model loaded in' in the log")
                time.sleep(1)
            http_json(f"{self.url}/sdapi/v1/options", {"sd_model_checkpoint": self.switch_to.name}, timeout=600)
            loaded = http_json(f"{self.url}/sdapi/v1/options")["sd_model_checkpoint"]
            if Path(self.switch_to.name).stem not in loaded:
                raise RuntimeError(f"switching to {self.switch_to.name} left {loaded} loaded")

    def txt2img(
        self, prompt: str, ftf: list | None = None, settings: dict | None = None, timeout: float = 900
    ) -> tuple[Path, dict]:
        """One 64x64, 2-step Euler image (seed 1); returns its PNG and its infotext's parameters (`timeout`: seconds
        to wait for it)."""
        payload = {
            "prompt": prompt,
            "negative_prompt": NEGATIVE,
            "seed": 1,
            "steps": 2,
            "width": 64,
            "height": 64,
            "sampler_name": "Euler",
            "cfg_scale": 7,
            # live previews would download an approximation model (SDXL) the first time
            "override_settings": {"live_previews_enable": False, **(settings or {})},
        }
        if ftf is not None:
            payload["alwayson_scripts"] = {"Follow the Flow": {"args": ftf}}
        answer = http_json(f"{self.url}/sdapi/v1/txt2img", payload, timeout=timeout)
        self.count += 1
        path = self.out / f"{self.name}-image-{self.count:02d}.png"
        path.write_bytes(base64.b64decode(answer["images"][0]))
        return path, json.loads(answer["info"])

    def difference(self, a: Path, b: Path) -> int:
        """The largest difference of two images' decoded pixels (-1 when their sizes differ)."""
        done = subprocess.run([self.python, "-c", PIXELS, str(a), str(b)], capture_output=True, text=True, check=True)
        return int(done.stdout)


def check(args, out: Path) -> list[Row]:
    """Every row of the WebUI for the families in `args.models`."""
    host_dir: Path = args.host_dir
    host = version(host_dir)
    log = out / "setup.log"
    remove_copies(host_dir)  # so that the launcher's setup does not run their install.py
    relaxed_requirements(host_dir, out)
    place_repositories(host_dir, args.deps, log)
    python = args.python or make_python(host_dir, out)
    run([python, "-c", HUB_CACHE, str(out / "hf"), str(REPO)], log, env=host_env())
    rows: list[Row] = []
    for name in args.models:
        if name not in IMPLEMENTED:
            rows.append(Row(host, name, "-", "all checks", NOT_IMPLEMENTED, detail="not implemented yet"))
            continue
        checkpoint, lora = random_checkpoint(python, name, host_dir / "realclient-models", log)
        checkpoint = link(checkpoint, host_dir / "models" / "Stable-diffusion")
        link(lora, host_dir / "models" / "Lora")
        start = None
        if name in START_WITH:
            first, _ = random_checkpoint(python, START_WITH[name], host_dir / "realclient-models", log)
            start = link(first, host_dir / "models" / "Stable-diffusion")
        rows += family_rows(host, name, python, host_dir, checkpoint, lora, out, start)
    return rows


def family_rows(host, family, python, host_dir, checkpoint, lora, out, start=None) -> list[Row]:
    """The WebUI alone (reference image, `config.json`), then with the extension and the probe: every row (each
    server started on `start` first when given, see `START_WITH`)."""
    lora_count, lora = lora_modules(lora), lora.stem
    extensions = host_dir / "extensions"
    remove_copies(host_dir)  # the WebUI alone runs without them
    started = time.perf_counter()
    before = pip_freeze(python, out / "pip-freeze-before.txt")
    alone = WebUI(python, host_dir, checkpoint, out, f"webui-alone-{family}", start)
    try:
        alone.wait_ready()
        if not (host_dir / "config.json").exists():  # so that override_settings are restored after a request
            (host_dir / "config.json").write_text(json.dumps(http_json(f"{alone.url}/sdapi/v1/options")))
        reference, _ = alone.txt2img(PROMPT)
    finally:
        alone.server.stop()
    copy_tree([REPO / name for name in checkout_files()], REPO, extensions / EXTENSION)
    probe_root = Path(__file__).with_name("a1111_probe")
    copy_tree([path for path in probe_root.rglob("*.py")], probe_root, extensions / PROBE)
    spec = out / "probe-spec.json"
    spec.unlink(missing_ok=True)
    probe_out = out / "probe"
    webui = WebUI(
        python,
        host_dir,
        checkpoint,
        out,
        f"webui-{family}",
        start,
        FTF_PROBE_SPEC=str(spec),
        FTF_PROBE_OUT=str(probe_out),
        FLOWCORE_CACHE=str(out / "flowcore-cache-host"),
    )
    rows: list[Row] = []
    model_type = "?"  # read from the log at the end

    def row(check_name: str, function) -> None:
        rows.append(checked_row(host, family, model_type, check_name, function, webui.server))

    try:
        webui.wait_ready()
        rows.append(
            freeze_row(
                host, family, before, pip_freeze(python, out / "pip-freeze-after.txt"), time.perf_counter() - started
            )
        )
        options = http_json(f"{webui.url}/sdapi/v1/options")

        row("extension in /sdapi/v1/script-info", lambda: script_listed(webui.url, options))
        shots = {}

        def off_is_alone():
            shots["off"], _ = webui.txt2img(PROMPT, [False, "Markers only"])
            difference = webui.difference(reference, shots["off"])
            return difference == 0, difference, "section off, extension installed, vs the WebUI without it"

        row("off = the WebUI alone (pixels)", off_is_alone)

        def probe(name, prompt, plain, items, ftf, settings=None, expect_infotext=None, note="", networks=()):
            def compare():
                spec.write_text(json.dumps({"name": name, "plain": plain, "negative": NEGATIVE, "items": items}))
                image, info = webui.txt2img(prompt, ftf, settings)
                shots[name] = image
                found = json.loads((probe_out / f"{name}.json").read_text(encoding="utf-8"))
                (probe_out / f"{name}.json").unlink()
                if "error" in found:
                    return False, None, found["error"]
                infotext = info["infotexts"][0]
                patched = re.search(r"FtF patched: (\"[^\"]*\"|[^,]*)", infotext)
                patched = patched.group(1).strip('"') if patched else ""
                within = tolerance(found["scale"])
                ok = found["max_diff"] <= within and found["others_equal"] and found["negative_equal"]
                ok = ok and found["shape_equal"] and (found["changed"] or not items)
                detail = f"rows {found['rows']}/{found['total_rows']} patched, within {within:.2g} "
                detail += f"(largest |value| {found['scale']:.3g}); other rows "
                detail += "bit-identical" if found["others_equal"] else "DIFFER"
                detail += "; negative bit-identical" if found["negative_equal"] else "; negative DIFFERS"
                if "vector_equal" in found:  # SDXL: each encoder's columns, and the pooled vector
                    ok = ok and found["vector_equal"]
                    l_diff, g_diff = found["max_diff_columns"]
                    detail += f"; max diff CLIP-L columns {l_diff:.2g}, CLIP-G columns {g_diff:.2g}"
                    detail += "; pooled vector " + ("bit-identical" if found["vector_equal"] else "DIFFERS")
                if list(networks) != found["networks"]:
                    ok = False
                    detail += f"; LoRAs loaded {found['networks']} (should be {list(networks)})"
                elif networks:
                    detail += f"; LoRA matched all {networks[0][1]} modules of the file"
                detail += f"; infotext FtF patched: {patched or '-'}"
                if expect_infotext is not None:
                    wanted = sorted(expect_infotext)
                    got = sorted(part.strip() for part in patched.split(";") if part.strip())
                    ok = ok and got == wanted
                    detail += "" if got == wanted else f" (should name {'; '.join(wanted)})"
                return ok, found["max_diff"], detail + note

            return compare

        markers = [True, "Markers only"]
        zebra = [["standing zebra", "standing zebra"]]
        named = ["standing zebra"]
        row("marked item = its encode alone", probe("plain", MARKED, PROMPT, zebra, markers, None, named))
        row(
            "emphasis No norm: ~(item:1.3)~",
            probe(
                "nonorm",
                "a (crosswalk:1.2) next to a bus station with a ~(standing zebra:1.3)~",
                "a (crosswalk:1.2) next to a bus station with a (standing zebra:1.3)",
                [["standing zebra", "(standing zebra:1.3)"]],
                markers,
                {"emphasis": "No norm"},
                named,
            ),
        )
        row(
            "emphasis None, brackets in the item",
            probe(
                "none",
                "a crosswalk next to a bus station with a ~((standing zebra))~",
                "a crosswalk next to a bus station with a ((standing zebra))",
                [["standing zebra", "((standing zebra))"]],
                markers,
                {"emphasis": "None"},
                ["((standing zebra))"],  # with emphasis off, the brackets are text of the item
            ),
        )
        skip = {"CLIP_stop_at_last_layers": 2}
        skip_note = ""
        if family == "sdxl":  # the WebUI skips CLIP-L's layers on SDXL only with this option
            skip["sdxl_clip_l_skip"] = True
        elif family == "sd2":
            skip_note = " (the WebUI applies no clip skip to SD 2.x's OpenCLIP)"
        row("clip skip 2", probe("clipskip", MARKED, PROMPT, zebra, markers, skip, named, skip_note))
        row(
            "BREAK",
            probe(
                "break",
                MARKED.replace("with", "BREAK with"),
                PROMPT.replace("with", "BREAK with"),
                zebra,
                markers,
                None,
                named,
            ),
        )
        filler = ", ".join(f"word{n}" for n in range(30))
        row(
            "item in the second chunk",
            probe("chunk2", f"{filler}, {MARKED}", f"{filler}, {PROMPT}", zebra, markers, None, named),
        )
        lora_settings, lora_note = None, ""
        if family == "sdxl":  # once a LoRA is loaded, the default mode copies every weight it may change, UNet too
            lora_settings = {"lora_functional": True}
            lora_note = (
                " (the WebUI's functional LoRA mode: in its default mode the WebUI keeps a copy of every weight of the "
                "model once a LoRA is loaded, and fp32 SDXL was killed out of memory at 24.4 GB on this machine)"
            )
        row(
            "LoRA on the text encoder",
            probe(
                "lora",
                f"{MARKED} <lora:{lora}:1>",
                PROMPT,
                zebra,
                markers,
                lora_settings,
                named,
                lora_note,
                networks=[[lora, lora_count]],
            ),
        )
        row(
            "Every item on a tag prompt",
            probe("every", TAGS, TAGS, [[i, i] for i in TAG_ITEMS], [True, "Every item"], None, TAG_ITEMS),
        )
        expected = analyze(checkpoint.resolve(), COLOURS, 0.9, out / "flowcore-cache-analyze", out / "analyze.log")
        patched = [item["item"]["text"] for item in expected["items"] if item["patched"]]
        row(
            "Automatic (sens. 0.9): items = flowcore analyze's",
            probe(
                "auto",
                COLOURS,
                COLOURS,
                [[i, i] for i in patched],
                [True, "Automatic", 0.9],
                None,
                patched,
                f"; analyze patched {patched} (leak scores are not compared here: the WebUI does not expose them)",
            ),
        )

        def off_on_off():
            again, _ = webui.txt2img(PROMPT, [False, "Markers only"])
            difference = max(webui.difference(reference, again), webui.difference(shots["off"], again))
            changed = webui.difference(shots["off"], shots["plain"])
            ok = difference == 0 and changed > 0
            return ok, difference, f"off after the runs above = before (the marked run differed by {changed})"

        row("off -> on -> off", off_on_off)
    finally:
        peak = webui.server.peak_mb()
        webui.server.stop()
        spec.unlink(missing_ok=True)
    model_type = _model_type(webui)
    for done in rows[1:]:
        done.model_type = model_type
    log = webui.server.log.read_text(encoding="utf-8", errors="replace")
    tracebacks = log.count("Traceback")
    errors = [line for line in log.splitlines() if "Error loading script" in line or "Error running install.py" in line]
    ok = not tracebacks and not errors and "Startup time:" in log
    rows.append(
        Row(
            host,
            family,
            model_type,
            "server log: extension loaded, no traceback",
            ok,
            None,
            peak,
            None,
            f"{tracebacks} tracebacks, {len(errors)} script/install errors in {webui.server.log.name}",
        )
    )
    return rows


def _model_type(webui: WebUI) -> str:
    """The model config the WebUI chose for the checkpoint, as its log says ("Creating model from config: ...")."""
    log = webui.server.log.read_text(encoding="utf-8", errors="replace")
    found = re.findall(r"Creating model from config: .*[/\\](\S+)\.yaml", log)
    return found[-1] if found else "?"  # the last: the checkpoint switched to (see `START_WITH`)
