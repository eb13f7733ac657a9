"""Stable Diffusion WebUI Forge f2.0.1v1.10.1: install the extension as Forge does, drive the server through its API.

1. Python: `--python`, or `<host-dir>/venv` (Python 3.10) filled from `--deps` and the package index: torch and
   torchvision at Forge's pins, the `clip` package from `--deps/CLIP` (openai/CLIP at Forge's commit), the three
   wheels the built-in `forge_legacy_preprocessors` installer downloads (`--deps/wheels`), then Forge's own
   launcher (`launch.py --exit`: `requirements_versions.txt` and the built-in extensions' installers), and `joblib`
   (the built-in soft-inpainting extension imports it, nothing installs it). Its pinned
   repositories come from `--deps` (one folder each, named as under `repositories/`) and become git folders at
   their commits, so the launcher never clones.
2. Forge alone (no extension): its images, and its options saved as `config.json` with live previews off (so that
   `override_settings` are restored after each request, and SDXL never asks for a preview model).
3. The extension copied to `extensions/follow-the-flow` with the probe (`forge_probe/`), which records the
   conditioning the sampler gets and compares it with Forge's own encodes (its text engine, never flowcore);
   `install.py` runs at the next launch; `pip freeze` before and after.
4. Rows: the same as A1111's (`host_a1111.py`), and the model class and repository Forge detected.
"""

from __future__ import annotations

import json
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
    tolerance,
)

# the families the extension is built for in Forge (the default of `--models`)
CLAIMED = ("sd15", "sdxl", "sd35", "flux-dev", "flux-schnell", "chroma")
IMPLEMENTED = ("sd15", "sdxl", "flux-dev", "flux-schnell")
# Families read from split files, as `tools/random_checkpoint.py --family F --out <host-dir>/realclient-models/F`
# writes them: Forge's model folder -> the file, relative to that folder; Forge loads them as "VAE / Text Encoder"
# modules (the `forge_additional_modules` setting) beside the diffusion model `F-random.safetensors`.
SPLIT_FILES = {
    family: (
        ("VAE", f"{family}-ae-random.safetensors"),
        ("text_encoder", "../text_encoders/clip_l.safetensors"),
        ("text_encoder", "../text_encoders/t5xxl_fp8_e4m3fn.safetensors"),
    )
    for family in ("flux-dev", "flux-schnell")
}
T5_ONLY = (  # the checks a T5 family leaves out, and why
    "emphasis, clip skip, BREAK, second chunk, LoRA, Every item, Automatic: not run for a T5 family (one T5-XXL "
    "encode takes about a minute on a CPU; no Flux LoRA is written; Forge's T5 engine has one chunk)"
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
            checkpoint, modules = split_checkpoint(python, name, host_dir, log)
            rows += family_rows(host, name, python, host_dir, args.deps, checkpoint, None, out, modules)
            continue
        checkpoint, lora = random_checkpoint(python, name, host_dir / "realclient-models", log)
        checkpoint = link(checkpoint, host_dir / "models" / "Stable-diffusion")
        link(lora, host_dir / "models" / "Lora")
        rows += family_rows(host, name, python, host_dir, args.deps, checkpoint, lora.stem, out)
    return rows


def split_checkpoint(python: str, family: str, host_dir: Path, log: Path) -> tuple[Path, list[str]]:
    """The family's diffusion model linked into `models/Stable-diffusion`, and its VAE and text encoders linked
    into Forge's module folders (made once by `tools/random_checkpoint.py`, then reused)."""
    folder = host_dir / "realclient-models" / family
    model = folder / f"{family}-random.safetensors"
    files = [(kind, folder / name) for kind, name in SPLIT_FILES[family]]
    if not model.exists() or not all(path.exists() for _, path in files):
        folder.mkdir(parents=True, exist_ok=True)
        tool = REPO / "tools" / "random_checkpoint.py"
        run([python, str(tool), "--family", family, "--out", str(folder)], log, env=host_env())
    modules = [str(link(path.resolve(), host_dir / "models" / kind)) for kind, path in files]
    return link(model, host_dir / "models" / "Stable-diffusion"), modules


def write_config(config: Path, modules: list[str], options: dict | None = None) -> None:
    """Forge's `config.json`: live previews off (SDXL's would ask the hub for a preview model), the family's
    modules, and (`options`) every option a fresh server reports, so that `override_settings` are restored."""
    data = json.loads(config.read_text()) if config.exists() else {}
    if options is not None:
        data = dict(options, **{key: value for key, value in data.items() if key not in options})
    data.update(live_previews_enable=False, forge_additional_modules=modules)
    config.write_text(json.dumps(data, indent=1))


def _tracebacks(log: Path) -> int:
    return log.read_text(encoding="utf-8", errors="replace").count("Traceback")


def family_rows(host, family, python, host_dir, deps, checkpoint, lora, out, modules=()) -> list[Row]:
    """Forge alone (reference image, `config.json`), then with the extension and the probe: every row (a T5
    family: those of `T5_ONLY` left out)."""
    t5 = family in SPLIT_FILES
    extensions = host_dir / "extensions"
    remove_copies(host_dir)  # Forge alone runs without them
    started = time.perf_counter()
    before = pip_freeze(python, out / "pip-freeze-before.txt")
    config = host_dir / "config.json"
    write_config(config, list(modules))
    alone = Forge(python, host_dir, checkpoint, out, f"forge-alone-{family}", deps)
    try:
        alone.wait_ready()
        write_config(config, list(modules), http_json(f"{alone.url}/sdapi/v1/options"))
        reference, _ = alone.txt2img(PROMPT)
    finally:
        alone.server.stop()
    alone_tracebacks = _tracebacks(alone.server.log)
    copy_tree([REPO / name for name in checkout_files()], REPO, extensions / EXTENSION)
    probe_root = Path(__file__).with_name("forge_probe")
    copy_tree(list(probe_root.rglob("*.py")), probe_root, extensions / PROBE)
    spec = out / "probe-spec.json"
    spec.unlink(missing_ok=True)
    probe_out = out / "probe"
    webui = Forge(
        python,
        host_dir,
        checkpoint,
        out,
        f"forge-{family}",
        deps,
        FTF_PROBE_SPEC=str(spec),
        FTF_PROBE_OUT=str(probe_out),
        FLOWCORE_CACHE=str(out / "flowcore-cache-host"),
    )
    rows: list[Row] = []
    detected = {"model": "?"}  # the probe's first answer says what Forge loaded

    def row(check_name: str, function) -> None:
        rows.append(checked_row(host, family, detected["model"], check_name, function, webui.server))

    try:
        webui.wait_ready()
        rows.append(
            freeze_row(
                host, family, before, pip_freeze(python, out / "pip-freeze-after.txt"), time.perf_counter() - started
            )
        )
        options = http_json(f"{webui.url}/sdapi/v1/options")

        def listed():
            scripts = http_json(f"{webui.url}/sdapi/v1/script-info")
            ours = [s for s in scripts if s["name"] == "follow the flow" and not s["is_img2img"]]
            ok = bool(ours) and ours[0]["is_alwayson"]
            labels = [arg.get("label") for arg in ours[0]["args"]] if ours else []
            return ok, None, f"checkpoint {options.get('sd_model_checkpoint')}; script args {labels}"

        row("extension in /sdapi/v1/script-info", listed)
        shots = {}

        def off_is_alone():
            shots["off"], _ = webui.txt2img(PROMPT, [False, "Markers only"])
            difference = webui.difference(reference, shots["off"])
            return difference == 0, difference, "section off, extension installed, vs Forge without it"

        row("off = Forge alone (pixels)", off_is_alone)

        def probe(name, prompt, plain, items, ftf, settings=None, expect_infotext=None, note=""):
            def compare():
                spec.write_text(json.dumps({"name": name, "plain": plain, "negative": NEGATIVE, "items": items}))
                image, info = webui.txt2img(prompt, ftf, settings)
                shots[name] = image
                found = json.loads((probe_out / f"{name}.json").read_text(encoding="utf-8"))
                (probe_out / f"{name}.json").unlink()
                detected["model"] = found.get("model", detected["model"])
                if "error" in found:
                    return False, None, found["error"]
                infotext = info["infotexts"][0]
                patched = re.search(r"FtF patched: (\"[^\"]*\"|[^,]*)", infotext)
                patched = patched.group(1).strip('"') if patched else ""
                within = tolerance(found["scale"])
                ok = found["max_diff"] <= within and found["others_equal"] and found["negative_equal"]
                ok = (
                    ok
                    and found["shape_equal"]
                    and (found["changed"] or not items)
                    and found["vector_equal"] is not False
                )
                detail = f"rows {found['rows']}/{found['total_rows']} patched, within {within:.2g} "
                detail += f"(largest |value| {found['scale']:.3g}); other rows "
                detail += "bit-identical" if found["others_equal"] else "DIFFER"
                detail += "; negative bit-identical" if found["negative_equal"] else "; negative DIFFERS"
                if found["vector_equal"] is not None:
                    detail += "; pooled vector bit-identical" if found["vector_equal"] else "; pooled vector DIFFERS"
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

        def clip_rows() -> None:
            """The checks of a CLIP family (SD 1.x, SDXL), after the plain one."""
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

        if t5:
            rows.append(Row(host, family, "-", "the other in-process checks", NOT_IMPLEMENTED, detail=T5_ONLY))
        else:
            clip_rows()

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
    for done in rows:
        done.model_type = detected["model"] if done is not rows[0] else "-"
    text = webui.server.log.read_text(encoding="utf-8", errors="replace")
    tracebacks = text.count("Traceback")
    errors = [line for line in text.splitlines() if "Error loading script" in line or "Error running install" in line]
    ok = not tracebacks and not errors and "Startup time:" in text
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
            f"in {webui.server.log.name}",
        )
    )
    say(f"{host} detected {detected['model']} for {family}")
    return rows
