"""Stable Diffusion WebUI Forge f2.0.1v1.10.1: install the extension as Forge does, drive the server through its API.

1. Python: `--python`, or `<host-dir>/venv` (Python 3.10) filled from `--deps` and the package index: torch and
   torchvision at Forge's pins, the `clip` package from `--deps/CLIP` (openai/CLIP at Forge's commit), the three
   wheels the built-in `forge_legacy_preprocessors` installer downloads (`--deps/wheels`), then Forge's own
   launcher (`launch.py --exit`: `requirements_versions.txt` and the built-in extensions' installers), and `joblib`
   (the built-in soft-inpainting extension imports it, nothing installs it), and `sentencepiece==0.2.0` (see
   `SENTENCEPIECE`). Its pinned
   repositories come from `--deps` (one folder each, named as under `repositories/`) and become git folders at
   their commits, so the launcher never clones.
2. Forge alone (no extension; a `STOPPED` family: with the probe only): its images, and its options saved as
   `config.json` with live previews off (so that `override_settings` are restored after each request, and SDXL
   never asks for a preview model).
3. The extension copied to `extensions/follow-the-flow` with the probe (`forge_probe/`), which records the
   conditioning the sampler gets and compares it with Forge's own encodes (its text engine, never flowcore);
   `install.py` runs at the next launch; `pip freeze` before and after.
4. Rows: the same as A1111's (`host_a1111.py`), and the model class and repository Forge detected. The T5 families
   (SD 3.5, Flux dev / schnell, Chroma) are read from split files (`SPLIT_FILES`) and get the checks their text
   engines have (`t5_rows`), and *Automatic* on a calibration of `T5_CALIBRATION_PROMPTS` of the 182 prompts, as
   in ComfyUI (`t5_automatic`: the probe shortens the extension's core's calibration inside Forge and times it; the
   row checks the items the infotext names against Forge's own encodes and extrapolates the full calibration's
   time); the checks they cannot have get a `NOT_RUN` row that says why. `$FTF_FORGE_SKIP` (probe names: nonorm,
   clipskip, chunk2, every, auto) leaves rows out of a run, as `NOT_RUN` rows that say so.

| family | files (Forge's module folders) | rows of `crossattn` | sampling |
|---|---|---|---|
| sd35 | MMDiT, VAE, clip_l, clip_g, t5xxl fp8 | CLIP-L, CLIP-G side by side (77 a chunk), then T5 | runs |
| flux-dev, flux-schnell | Flux, VAE, clip_l, t5xxl fp8 | T5 (256); CLIP-L: the pooled vector | stopped |
| chroma | Chroma, VAE, t5xxl fp8 | T5, not padded | stopped |

SD 3.5 runs with `sd3_enable_t5` on (see `write_config`); Forge reads MMDiT's depth from its width, so the random
file samples. "stopped": see `STOPPED`.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

from host_a1111 import (
    COLOURS,
    EXTENSION,
    MARKED,
    NEGATIVE,
    PROBE,
    PROMPT,
    TAG_ITEMS,
    TAGS,
    WebUI,
    copy_tree,
    remove_copies,
)
from host_common import (
    NOT_IMPLEMENTED,
    NOT_RUN,
    REPO,
    T5_CALIBRATION_PROMPTS,
    Row,
    Server,
    analyze,
    checked_row,
    checkout_files,
    free_port,
    freeze_row,
    full_calibration_estimate,
    host_env,
    http_json,
    link,
    pip_freeze,
    random_checkpoint,
    run,
    say,
    script_listed,
    tolerance,
)

# the families the extension is built for in Forge (the default of `--models`)
CLAIMED = ("sd15", "sdxl", "sd35", "flux-dev", "flux-schnell", "chroma")
IMPLEMENTED = CLAIMED
# Families read from split files, as `tools/random_checkpoint.py --family F --out $FTF_MODELS_DIR/F` writes them
# (default folder `<host-dir>/realclient-models`): the diffusion model `F/F-random.safetensors`, its VAE
# `F/F-ae-random.safetensors` and the text encoders below, shared by the families in `text_encoders/`. Forge loads
# the VAE and text encoders as "VAE / Text Encoder" modules (the `forge_additional_modules` setting). The T5 file
# is fp8 (e4m3fn): Forge keeps a T5 state dict's fp8 as its storage type ("Using Detected T5 Data Type"), so
# T5-XXL takes 4.7 GB and not 19 GB in float32.
SPLIT_FILES = {
    "sd35": ("clip_l", "clip_g", "t5xxl"),
    "flux-dev": ("clip_l", "t5xxl"),
    "flux-schnell": ("clip_l", "t5xxl"),
    "chroma": ("t5xxl",),
}
ENCODER_FILES = {
    "clip_l": "clip_l.safetensors",
    "clip_g": "clip_g.safetensors",
    "t5xxl": "t5xxl_fp8_e4m3fn.safetensors",
}
# Families whose sampling the probe stops once step 0's conditioning is recorded: Forge builds Flux and Chroma at
# the released depth whatever the file holds (huggingface_guess `detect_unet_config` sets 19 double and 38 single
# blocks of width 3072 for any Flux-like keys), so the suite's random file (1 + 1 blocks) leaves the others without
# weights, and the first step would fail. Their "pixel" rows compare the recorded conditioning instead.
STOPPED = ("flux-dev", "flux-schnell", "chroma")
T5_TAGS = "masterpiece, 1girl, red shoes, blue hair"  # few items: each T5-XXL encode costs tens of seconds
T5_TAG_ITEMS = ["1girl", "red shoes", "blue hair"]
CALIBRATION_PROMPTS = 182  # `flowcore/data/calibration_prompts.txt`: an *Automatic* calibration encodes each
CALIBRATION_TIMEOUT = 3600  # seconds the first *Automatic* image may take: its (short) T5-XXL calibration included
REPO_SUITE = Path(__file__).resolve().parent  # the probe imports `host_common` from here (`$FTF_PROBE_SUITE`)
AUTOMATIC_NOTE = "; the items are those the first image's infotext named"
COND_DIFF = (  # the largest difference of two recorded conditionings (-1 when their tensors or shapes differ)
    "import sys; from safetensors.torch import load_file; a, b = (load_file(p) for p in sys.argv[1:3]); "
    "print(-1 if a.keys() != b.keys() or any(a[k].shape != b[k].shape for k in a) "
    "else max(float((a[k] - b[k]).abs().max()) for k in a))"
)
TORCH_PINS = ("torch==2.3.1", "torchvision==0.18.1")
# The repositories `modules/launch_utils.py` of f2.0.1v1.10.1 clones: folder -> (its URL, commit)
REPOSITORIES = {
    "stable-diffusion-webui-assets": (
        "https://github.com/AUTOMATIC1111/stable-diffusion-webui-assets.git",
        "6f7db241d2f8ba7457bac5ca9753331f0c266917",
    ),
    "huggingface_guess": (
        "https://github.com/lllyasviel/huggingface_guess.git",
        "84826248b49bb7ca754c73293299c4d4e23a548d",
    ),
    "BLIP": ("https://github.com/salesforce/BLIP.git", "48211a1594f1321b00f14c9f7a5b4813144b2fb9"),
}
CLIP_COMMIT = "d50d76daa670286dd6cacf3bcd80b5e4823fc8e1"  # the launcher's `clip` package (openai/CLIP)
# The wheels `extensions-builtin/forge_legacy_preprocessors/install.py` downloads: its variable -> file in --deps/wheels
WHEELS = {
    "HANDREFINER_WHEEL": "handrefinerportable-2024.2.12.0-py2.py3-none-any.whl",
    "DEPTH_ANYTHING_WHEEL": "depth_anything-2024.1.22.0-py2.py3-none-any.whl",
    "DEPTH_ANYTHING_V2_WHEEL": "depth_anything_v2-2024.7.1.0-py2.py3-none-any.whl",
}
FLAGS = [
    "--always-cpu",
    "--skip-torch-cuda-test",
    "--api",
    "--skip-version-check",
    "--skip-python-version-check",
    "--no-download-sd-model",
]
# open-clip-torch pulls the newest sentencepiece, whose model_pb2 (0.2.1 on) needs protobuf 5; Forge pins protobuf
# 3.20.0. SD 3.5's T5 tokenizer (`add_prefix_space`) is converted from its slow one through that module, so without
# this pin Forge cannot load SD 3.5 ("cannot import name 'runtime_version' from 'google.protobuf'").
SENTENCEPIECE = "sentencepiece==0.2.0"
SETUP_DONE = "realclient-setup-done"  # written into the venv once the launcher filled it


def version(host_dir: Path) -> str:
    """`Forge f<version>` from `modules_forge/forge_version.py` (what Forge shows)."""
    found = re.search(r"version\s*=\s*'([^']+)'", (host_dir / "modules_forge" / "forge_version.py").read_text())
    return f"Forge f{found.group(1) if found else '?'}"


def place_repositories(host_dir: Path, deps: Path | None, log: Path) -> None:
    """Every pinned repository under `repositories/` as a git folder at its commit (from `--deps` if missing):
    the launcher reads `git rev-parse HEAD` and clones only where that is not the pinned commit."""
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
            (target / ".git" / "HEAD").write_text(commit + "\n")
            run(["git", "remote", "add", "origin", url], log, cwd=target)


def launcher_env(out: Path, deps: Path | None, **extra: str) -> dict[str, str]:
    """The launcher's settings: torch pinned, `clip`/`open_clip` and the wheels from local copies, offline hub."""
    constraints = out / "constraints.txt"
    constraints.write_text("\n".join(TORCH_PINS) + "\n", encoding="utf-8")
    local = {}
    if deps:
        local = {variable: str(deps / "wheels" / name) for variable, name in WHEELS.items()}
        local["CLIP_PACKAGE"] = str(deps / "CLIP")
    return host_env(
        TORCH_COMMAND="pip install " + " ".join(TORCH_PINS),
        OPENCLIP_PACKAGE="open-clip-torch==2.20.0",
        PIP_CONSTRAINT=str(constraints),
        HF_HOME=str(out / "hf"),
        HF_HUB_CACHE=str(out / "hf" / "hub"),  # Forge otherwise points it into its own folder
        **local,
        **extra,
    )


def python310() -> str:
    """A working Python 3.10 (Forge's own launcher scripts target it)."""
    pyenv = sorted(str(path) for path in Path.home().glob(".pyenv/versions/3.10*/bin/python3.10"))
    candidates = [shutil.which("python3.10"), *pyenv]
    for candidate in filter(None, candidates):
        if subprocess.run([candidate, "-c", "import venv"], capture_output=True).returncode == 0:
            return candidate
    raise RuntimeError("no working python3.10 found: pass --python, the python of a Forge venv")


def make_python(host_dir: Path, deps: Path | None, out: Path) -> str:
    """`<host-dir>/venv` filled as the README says (reused once its setup finished)."""
    python = host_dir / "venv" / "bin" / "python"
    log = out / "setup.log"
    if (host_dir / "venv" / SETUP_DONE).exists():
        return str(python)
    wheels = [deps / "wheels" / name for name in WHEELS.values()] if deps else []
    if deps is None or not (deps / "CLIP").is_dir() or not all(wheel.is_file() for wheel in wheels):
        listed = ", ".join(WHEELS.values())
        raise RuntimeError(f"--deps DIR must hold CLIP/ (openai/CLIP {CLIP_COMMIT}) and wheels/ ({listed})")
    if not python.exists():
        run([python310(), "-m", "venv", str(host_dir / "venv")], log)
    env = launcher_env(out, deps)
    pip = [str(python), "-m", "pip", "install"]
    run([*pip, *TORCH_PINS], log, env=env)
    run([*pip, str(deps / "CLIP")], log, env=env)
    run([*pip, *map(str, wheels)], log, env=env)
    run([str(python), "launch.py", *FLAGS, "--exit"], log, cwd=host_dir, env=env)
    run([*pip, "joblib"], log, env=env)  # the built-in soft-inpainting extension imports it; nothing installs it
    run([*pip, SENTENCEPIECE], log, env=env)
    (host_dir / "venv" / SETUP_DONE).write_text("launch.py --exit finished\n")
    return str(python)


class Forge(WebUI):
    """One Forge server: A1111's API, readiness and images (`host_a1111.WebUI`), Forge's flags and launcher
    environment."""

    def __init__(self, python: str, host_dir: Path, checkpoint: Path, out: Path, name: str, deps, **env: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.python, self.out, self.name, self.count = python, out, name, 0
        self.switch_to = None
        command = [python, "launch.py", *FLAGS, "--ckpt", str(checkpoint), "--port", str(self.port)]
        self.server = Server(command, host_dir, launcher_env(out, deps, **env), out / f"{name}.log")
        self.probe_out = Path(env["FTF_PROBE_OUT"]) if "FTF_PROBE_OUT" in env else None

    def recorded(self, name: str) -> Path:
        """The conditioning the probe recorded in the last image, kept as `<out>/<server>-cond-<name>.safetensors`."""
        if self.probe_out is None:
            raise RuntimeError(f"{self.name} runs without the probe: no conditioning is recorded")
        kept = self.out / f"{self.name}-cond-{name}.safetensors"
        os.replace(self.probe_out / "last-cond.safetensors", kept)  # moved: a later image never reads a stale one
        return kept

    def cond_difference(self, a: Path, b: Path) -> float:
        """The largest difference of two recorded conditionings (cond, uncond, vector; -1 when shapes differ)."""
        done = subprocess.run(
            [self.python, "-c", COND_DIFF, str(a), str(b)], capture_output=True, text=True, check=True
        )
        return float(done.stdout)


def check(args, out: Path) -> list[Row]:
    """Every row of Forge for the families in `args.models`."""
    host_dir: Path = args.host_dir
    host = version(host_dir)
    log = out / "setup.log"
    remove_copies(host_dir)  # so that the launcher's setup does not run their install.py
    place_repositories(host_dir, args.deps, log)
    python = args.python or make_python(host_dir, args.deps, out)
    rows: list[Row] = []
    for name in args.models:
        if name not in IMPLEMENTED:
            rows.append(Row(host, name, "-", "all checks", NOT_IMPLEMENTED, detail="not implemented yet"))
            continue
        if name in SPLIT_FILES:
            models = Path(os.environ.get("FTF_MODELS_DIR") or host_dir / "realclient-models")
            checkpoint, modules = split_checkpoint(python, name, models, host_dir, log)
            rows += family_rows(host, name, python, host_dir, args.deps, checkpoint, None, out, modules)
            continue
        checkpoint, lora = random_checkpoint(python, name, host_dir / "realclient-models", log)
        checkpoint = link(checkpoint, host_dir / "models" / "Stable-diffusion")
        link(lora, host_dir / "models" / "Lora")
        rows += family_rows(host, name, python, host_dir, args.deps, checkpoint, lora.stem, out)
    return rows


def split_checkpoint(python: str, family: str, models: Path, host_dir: Path, log: Path) -> tuple[Path, list[str]]:
    """The family's diffusion model (`models/F/`) linked into `models/Stable-diffusion`, and its VAE and text
    encoders (`models/text_encoders/`, shared) linked into Forge's module folders: made once by
    `tools/random_checkpoint.py`, then reused; never copied."""
    folder = models / family
    model = folder / f"{family}-random.safetensors"
    files = [("VAE", folder / f"{family}-ae-random.safetensors")]
    files += [("text_encoder", models / "text_encoders" / ENCODER_FILES[name]) for name in SPLIT_FILES[family]]
    if not model.exists() or not all(path.exists() for _, path in files):
        folder.mkdir(parents=True, exist_ok=True)
        tool = REPO / "tools" / "random_checkpoint.py"
        run([python, str(tool), "--family", family, "--out", str(folder)], log, env=host_env())
    modules = [str(link(path.resolve(), host_dir / "models" / kind)) for kind, path in files]
    return link(model, host_dir / "models" / "Stable-diffusion"), modules


def write_config(config: Path, modules: list[str], options: dict | None = None) -> None:
    """Forge's `config.json`: live previews off (SDXL's would ask the hub for a preview model), the family's
    modules, T5 on for SD 3.5 (`sd3_enable_t5`: Forge's cond cache does not key on it, so it is set for the whole
    run, not per request), and (`options`) every option a fresh server reports, so that `override_settings` are
    restored."""
    data = json.loads(config.read_text()) if config.exists() else {}
    if options is not None:
        data = dict(options, **{key: value for key, value in data.items() if key not in options})
    data.update(live_previews_enable=False, forge_additional_modules=modules, sd3_enable_t5=True)
    config.write_text(json.dumps(data, indent=1))


def _tracebacks(log: Path) -> int:
    return log.read_text(encoding="utf-8", errors="replace").count("Traceback")


def family_rows(host, family, python, host_dir, deps, checkpoint, lora, out, modules=()) -> list[Row]:
    """Forge alone (reference image, `config.json`), then with the extension and the probe: every row (a T5
    family: `t5_rows` and the `NOT_RUN` rows of the checks it cannot have)."""
    t5 = family in SPLIT_FILES
    stopped = family in STOPPED
    extensions = host_dir / "extensions"
    probe_root = Path(__file__).with_name("forge_probe")
    remove_copies(host_dir)  # Forge alone runs without them (a T5 family: with the probe only)
    started = time.perf_counter()
    before = pip_freeze(python, out / "pip-freeze-before.txt")
    config = host_dir / "config.json"
    write_config(config, list(modules))
    probe_env = {"FTF_PROBE_OUT": str(out / "probe-alone")} if t5 else {}  # to compare conditionings too
    probe_env.update({"FTF_PROBE_STOP": "1"} if stopped else {})
    if t5:
        copy_tree(list(probe_root.rglob("*.py")), probe_root, extensions / PROBE)
    alone = Forge(python, host_dir, checkpoint, out, f"forge-alone-{family}", deps, **probe_env)
    try:
        alone.wait_ready()
        write_config(config, list(modules), http_json(f"{alone.url}/sdapi/v1/options"))
        reference, _ = alone.txt2img(PROMPT)
        reference_cond = alone.recorded("reference") if t5 else None
    finally:
        alone.server.stop()
    alone_tracebacks = _tracebacks(alone.server.log)
    remove_copies(host_dir)
    copy_tree([REPO / name for name in checkout_files()], REPO, extensions / EXTENSION)
    copy_tree(list(probe_root.rglob("*.py")), probe_root, extensions / PROBE)
    spec = out / "probe-spec.json"
    spec.unlink(missing_ok=True)
    probe_out = out / "probe"
    shutil.rmtree(probe_out, ignore_errors=True)  # no answer of an earlier run is read as this one's
    webui = Forge(
        python,
        host_dir,
        checkpoint,
        out,
        f"forge-{family}",
        deps,
        FTF_PROBE_SPEC=str(spec),
        FTF_PROBE_OUT=str(probe_out),
        FLOWCORE_CACHE=str(out / "flowcore-cache-host"),  # emptied by run.py: every run calibrates afresh
        **({"FTF_PROBE_STOP": "1"} if stopped else {}),
        # T5-XXL's *Automatic*: the core calibrates on a few prompts, timed (see `t5_automatic`)
        **(
            {"FTF_PROBE_SHORT_CALIBRATION": str(T5_CALIBRATION_PROMPTS), "FTF_PROBE_SUITE": str(REPO_SUITE)}
            if t5
            else {}
        ),
    )
    rows: list[Row] = []
    detected = {"model": "?"}  # the probe's first answer says what Forge loaded

    def row(check_name: str, function) -> None:
        rows.append(checked_row(host, family, detected["model"], check_name, function, webui.server))

    def not_run(check_name: str, reason: str) -> None:
        rows.append(Row(host, family, detected["model"], check_name, NOT_RUN, detail=f"not run: {reason}"))

    left_out = [name.strip() for name in os.environ.get("FTF_FORGE_SKIP", "").split(",") if name.strip()]

    def maybe(check_name: str, name: str, function) -> None:
        """A probe row, or a `NOT_RUN` one when `$FTF_FORGE_SKIP` (probe names, comma-separated) leaves it out."""
        if name in left_out:
            not_run(check_name, f"left out of this run ($FTF_FORGE_SKIP={','.join(left_out)})")
        else:
            row(check_name, function)

    try:
        webui.wait_ready()
        rows.append(
            freeze_row(
                host, family, before, pip_freeze(python, out / "pip-freeze-after.txt"), time.perf_counter() - started
            )
        )
        options = http_json(f"{webui.url}/sdapi/v1/options")

        row("extension in /sdapi/v1/script-info", lambda: script_listed(webui.url, options))
        shots, conds = {}, {}

        def off_is_alone():
            shots["off"], _ = webui.txt2img(PROMPT, [False, "Markers only"])
            detail = "section off, extension installed, vs Forge without it"
            if not t5:
                difference = webui.difference(reference, shots["off"])
                return difference == 0, difference, detail
            conds["off"] = webui.recorded("off")
            difference = webui.cond_difference(reference_cond, conds["off"])
            detail += " (both with the probe): the conditioning at step 0 (cond, uncond, pooled vector)"
            if stopped:
                return difference == 0, difference, detail + "; sampling stopped there"
            pixels = webui.difference(reference, shots["off"])
            return difference == 0 and pixels == 0, max(difference, pixels), detail + f", and pixels ({pixels})"

        row(
            "off = Forge alone (conditioning)"
            if stopped
            else "off = Forge alone (conditioning, pixels)"
            if t5
            else "off = Forge alone (pixels)",
            off_is_alone,
        )

        def probe(name, prompt, plain, items, ftf, settings=None, expect_infotext=None, note=""):
            def compare():
                spec.write_text(json.dumps({"name": name, "plain": plain, "negative": NEGATIVE, "items": items}))
                image, info = webui.txt2img(prompt, ftf, settings)
                spec.unlink()  # the next images (off -> on -> off) are not compared
                shots[name] = image
                if t5:
                    conds[name] = webui.recorded(name)
                found = json.loads((probe_out / f"{name}.json").read_text(encoding="utf-8"))
                (probe_out / f"{name}.json").unlink()
                detected["model"] = found.get("model", detected["model"])
                if "error" in found:
                    return False, None, found["error"]
                named = infotext_items(info["infotexts"][0])
                parts = found.get("parts") or {"rows": (found["max_diff"], found["scale"])}
                noise = found.get("t5_batch_noise", 0.0)  # Forge's own: its batch of the items vs one by one

                def allowed(part: str, scale: float) -> float:
                    return max(tolerance(scale), noise) if part == "T5" else tolerance(scale)

                ok = all(diff <= allowed(part, scale) for part, (diff, scale) in parts.items())
                ok = ok and found["others_equal"] and found["negative_equal"]
                ok = (
                    ok
                    and found["shape_equal"]
                    and (found["changed"] or not items)
                    and found["vector_equal"] is not False
                )
                detail = f"rows {found['rows']}/{found['total_rows']} patched, "
                if len(parts) > 1:
                    detail += ", ".join(
                        f"{part} {diff:.2g} within {allowed(part, scale):.2g} (largest |value| {scale:.3g})"
                        for part, (diff, scale) in parts.items()
                    )
                else:
                    part = next(iter(parts))
                    detail += f"within {allowed(part, found['scale']):.2g} (largest |value| {found['scale']:.3g})"
                if noise:
                    detail += (
                        f"; Forge's own T5 encodes of these items in one batch differ from its encodes one by one "
                        f"by {noise:.2g} (float32 rounding that depends on the batch's shape): the T5 bound is the "
                        "larger of the two"
                    )
                detail += "; other rows " + ("bit-identical" if found["others_equal"] else "DIFFER")
                detail += "; negative bit-identical" if found["negative_equal"] else "; negative DIFFERS"
                if found["vector_equal"] is not None:
                    detail += "; pooled vector bit-identical" if found["vector_equal"] else "; pooled vector DIFFERS"
                detail += f"; infotext FtF patched: {'; '.join(named) or '-'}"
                if expect_infotext is not None:
                    wanted, got = sorted(expect_infotext), sorted(named)
                    ok = ok and got == wanted
                    detail += "" if got == wanted else f" (should name {'; '.join(wanted)})"
                if t5 and found.get("encode_seconds"):
                    detail += f"; the probe's Forge encodes took {', '.join(map(str, found['encode_seconds']))} s"
                return ok, found["max_diff"], detail + note

            return compare

        markers = [True, "Markers only"]
        zebra = [["standing zebra", "standing zebra"]]
        named = ["standing zebra"]
        row("marked item = its encode alone", probe("plain", MARKED, PROMPT, zebra, markers, None, named))

        def nonorm_row() -> None:
            maybe(
                "emphasis No norm: ~(item:1.3)~",
                "nonorm",
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

        def clip_skip_and_chunk_rows() -> None:
            clip_skip = {"CLIP_stop_at_last_layers": 2}
            maybe("clip skip 2", "clipskip", probe("clipskip", MARKED, PROMPT, zebra, markers, clip_skip, named))
            filler = ", ".join(f"word{n}" for n in range(30))
            maybe(
                "item in the second chunk",
                "chunk2",
                probe("chunk2", f"{filler}, {MARKED}", f"{filler}, {PROMPT}", zebra, markers, None, named),
            )

        def clip_rows() -> None:
            """The checks of a CLIP family (SD 1.x, SDXL), after the plain one."""
            nonorm_row()
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
            row(
                "clip skip 2", probe("clipskip", MARKED, PROMPT, zebra, markers, {"CLIP_stop_at_last_layers": 2}, named)
            )
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
            row(
                "LoRA on the text encoder",
                probe("lora", f"{MARKED} <lora:{lora}:1>", PROMPT, zebra, markers, None, named),
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
                    f"; analyze patched {patched} (leak scores are not compared here: Forge does not expose them)",
                ),
            )

        def t5_rows() -> None:
            """The checks of a T5 family after the plain one: the weights Forge's T5 engine applies (its
            `parse_prompt_attention` and emphasis, as CLIP's), SD 3.5's CLIP rows, *Every item* on a short tag list."""
            nonorm_row()
            if family == "sd35":  # its CLIP rows: clip skip, and a second CLIP chunk (T5's rows then start at 154)
                clip_skip_and_chunk_rows()
            maybe(
                "Every item on a short tag prompt",
                "every",
                probe(
                    "every", T5_TAGS, T5_TAGS, [[i, i] for i in T5_TAG_ITEMS], [True, "Every item"], None, T5_TAG_ITEMS
                ),
            )

        def t5_automatic():
            """*Automatic* at 0.9 on `PROMPT` with the core's calibration shortened (the probe's
            `shorten_calibration`): the items the infotext names (at least one), their rows and every other row
            checked against Forge's own encodes in a second, calibrated image, whose conditioning must equal the
            first's; the calibration timed in Forge's process and extrapolated to the full one."""
            auto = [True, "Automatic", 0.9]
            began = time.perf_counter()
            _, info = webui.txt2img(PROMPT, auto, timeout=CALIBRATION_TIMEOUT)
            first_s = time.perf_counter() - began
            conds["auto-first"] = webui.recorded("auto-first")
            named = infotext_items(info["infotexts"][0])
            timing = calibration_detail(probe_out / "calibrations.json")
            if not timing[0]:
                return False, None, timing[1]
            detail = (
                f"{timing[1]}; first Automatic image {first_s:.0f} s; infotext FtF patched: {'; '.join(named) or '-'}"
            )
            if not named:
                return False, None, detail + " (nothing patched: this row must patch at least one item)"
            ok, diff, checked = probe(
                "auto", PROMPT, PROMPT, [[i, i] for i in named], auto, None, named, AUTOMATIC_NOTE
            )()
            same = webui.cond_difference(conds["auto-first"], conds["auto"])
            again = calibration_detail(probe_out / "calibrations.json")[2]
            ok = ok and same == 0 and again == timing[2]
            detail += f"; a second image (calibrated) checked: {checked}; its conditioning at step 0 "
            detail += "= the first's" if same == 0 else f"DIFFERS from the first's by {same:.3g}"
            detail += "" if again == timing[2] else f"; the second image calibrated again ({again - timing[2]} more)"
            return ok, diff, detail

        if t5:
            t5_rows()
            maybe(
                f"Automatic (sens. 0.9), T5 calibrated on {T5_CALIBRATION_PROMPTS} of {CALIBRATION_PROMPTS} prompts",
                "auto",
                t5_automatic,
            )
        else:
            clip_rows()

        def off_on_off():
            again, _ = webui.txt2img(PROMPT, [False, "Markers only"])
            ok, difference, detail = True, 0.0, ""
            if t5:  # the conditioning at step 0
                conds["again"] = webui.recorded("again")
                difference = max(
                    webui.cond_difference(reference_cond, conds["again"]),
                    webui.cond_difference(conds["off"], conds["again"]),
                )
                changed = webui.cond_difference(conds["off"], conds["plain"])
                ok = difference == 0 and changed != 0
                detail = "conditioning at step 0: off after the runs above = before (the marked run's differed by "
                detail += f"{changed:.3g})"
                if stopped:
                    return ok, difference, detail
                detail += "; pixels: "
            pixels = max(webui.difference(reference, again), webui.difference(shots["off"], again))
            changed = webui.difference(shots["off"], shots["plain"])
            # SD 3.5's random MMDiT decodes to NaN (black) in Forge alone too: the change is shown by the conditioning
            ok = ok and pixels == 0 and (changed > 0 or t5)
            detail += f"off after the runs above = before (the marked run differed by {changed})"
            return ok, max(difference, pixels), detail

        row("off -> on -> off", off_on_off)
        if t5:
            t5_not_run(family, stopped, not_run)
    finally:
        peak = webui.server.peak_mb()
        webui.server.stop()
        spec.unlink(missing_ok=True)
    for done in rows:
        done.model_type = detected["model"] if done is not rows[0] else "-"
    text = webui.server.log.read_text(encoding="utf-8", errors="replace")
    tracebacks = text.count("Traceback")
    errors = [line for line in text.splitlines() if "Error loading script" in line or "Error running install" in line]
    ok = not tracebacks and not errors and "Startup time:" in text
    missing = re.findall(r"^(\w+) Missing: \[(.*)\]$", text, flags=re.M)
    counts = [f"{name} {keys.count(',') + 1} keys" for name, keys in missing]
    loaded = f"; Forge's loader reported missing: {', '.join(counts)}" if missing else ""
    rows.append(
        Row(
            host,
            family,
            detected["model"],
            "server log: extension loaded, no traceback",
            ok,
            None,
            peak,
            None,
            f"{tracebacks} tracebacks ({alone_tracebacks} in Forge alone's log), {len(errors)} script/install errors "
            f"in {webui.server.log.name}{loaded}",
        )
    )
    say(f"{host} detected {detected['model']} for {family}")
    return rows


def infotext_items(infotext: str) -> list[str]:
    """The items an infotext's `FtF patched` entry names, in its order (none without the entry)."""
    found = re.search(r"FtF patched: (\"[^\"]*\"|[^,]*)", infotext)
    patched = found.group(1).strip('"') if found else ""
    return [part.strip() for part in patched.split(";") if part.strip()]


def calibration_detail(path: Path) -> tuple[bool, str, int]:
    """What the probe timed (`shorten_calibration`, `$FTF_PROBE_OUT/calibrations.json`): whether every part was
    calibrated, and afresh, on the shortened prompts; the row's words for it, labelled as a shortened calibration,
    with the full one extrapolated (`host_common.full_calibration_estimate`); and how many calibrations ran."""
    if not path.exists():
        return False, "the probe timed no calibration (the extension's core was not reached, or nothing calibrated)", 0
    timed = json.loads(path.read_text(encoding="utf-8"))
    count, total = timed["shortened"]
    runs = timed["runs"]
    fresh = all(run["prompts"] == count for run in runs)
    seconds = sum(run["seconds"] for run in runs)
    each = ", ".join(
        f"{run['part']} {run['seconds']:.0f} s" if run["prompts"] else f"{run['part']} read from a cache (not measured)"
        for run in runs
    )
    detail = (
        f"a SHORTENED calibration: {count} of the {total} calibration prompts, spread over the file "
        f"(host_common.short_calibration), calibrated in Forge's process in {seconds:.0f} s ({each}; timed around "
        f"the core's FlowPatcher.calibrate), so {full_calibration_estimate(seconds, count, total)}; "
        "`flowcore analyze`, the reference of the CLIP families' Automatic row, does not read these split files, so "
        "this row checks the patch's mechanics and the infotext, not the scores"
    )
    return fresh and bool(runs), detail, len(runs)


def t5_not_run(family: str, stopped: bool, not_run) -> None:
    """The rows a T5 family cannot have here, each with its reason."""
    if stopped:
        not_run(
            "sampling: an image from the diffusion model",
            "Forge builds Flux and Chroma at the released depth whatever the file holds (huggingface_guess "
            "detect_unet_config: 19 double and 38 single blocks of width 3072), and the suite's random file has 1 + 1 "
            "(see the missing keys in the server log row), so the probe stops sampling once step 0's conditioning is "
            "recorded, and the off rows compare that conditioning instead of pixels; a full-depth random file would be "
            "about 12 billion parameters (12 GB in fp8) on a machine with 23 GB of memory",
        )
    if family != "sd35":
        not_run(
            "clip skip 2, item in the second chunk",
            "no T5 row depends on them: T5 has no clip skip (Forge's Flux applies it to CLIP-L, which gives the pooled "
            "vector only) and no 75-token chunks (Forge's T5 engine makes one chunk of the whole prompt)",
        )
    not_run(
        "BREAK",
        "Forge's T5 engine turns each BREAK chunk into its own entry of the batch (T5TextProcessingEngine.__call__ "
        "stacks the chunks), so a prompt with BREAK does not give one row sequence (read in Forge's code)",
    )
    not_run("LoRA on the text encoder", "no LoRA file is written for this family (tools/checkpoints/dit.py)")
