"""Follow the Flow beside other extensions in a real AUTOMATIC1111 WebUI v1.10.1 (issue 19): one table of rows.

    python3 tests/realclient/beside_a1111.py --host-dir /work/hosts/a1111 --deps /work/hosts/a1111-deps \
        --python /work/hosts/a1111/venv/bin/python \
        --rp DIR --dp DIR --cutoff DIR [--only rp,dp,cutoff] [--extension-from DIR]

`--rp`, `--dp`, `--cutoff`: an exported tree of hako-mikan/sd-webui-regional-prompter, adieyal/sd-dynamic-prompts,
hnmr293/sd-webui-cutoff (none of their code is committed here); a peer left out is not placed. A `.peer-commit`
file in a tree names its commit for the table. Each tree is copied into `<host-dir>/extensions/` for the run and
removed after it, with this checkout (as `host_a1111.py` installs it; `--extension-from DIR`: the same files from
another tree, to try a fix) and the probe `beside_probe/` (every image's and sub-prompt's cond against the
WebUI's own encodes). One WebUI server runs all rows; the peers stay off unless a row turns them on. Outputs in
`<host-dir>/realclient-beside-out/`.

Rows:
- Regional Prompter, Attention mode, regions by `BREAK` and by `ADDCOL`: the marked item's rows = its encode
  alone, every other row as the WebUI encoded it, the image changed, the infotext names the item.
- Regional Prompter, Latent mode (`BREAK`, `ADDCOL`, the item in region 2 with a batch of 2): the same, OR Follow
  the Flow steps aside (image unchanged) with a warning naming Regional Prompter in the log and the infotext.
  (Regional Prompter writes the typed prompts back into `p.all_prompts` in `process_batch`: the infotext must
  still name the items, which it did not before 2026-12-05.)
- Dynamic Prompts, combinatorial, batch of 2, `{..|..}` and a wildcard: every image's own cond patched, markers
  kept through the expansion, every image's infotext names its own items. Its snapshot needs a settings
  workaround (`dp_settings_file`).
- Cutoff with targets = the marked items: nothing breaks (rows consistent, items named, Cutoff active and able to
  change the image alone), the log says whose rows the patched items get (Follow the Flow's encoding alone), and
  the detail records which one wins in pixels.
Exit status as `run.py`'s: 0 all passed, 1 a row failed.
"""

from __future__ import annotations

import argparse
import ast
import base64
import json
import re
import shutil
import struct
import sys
import time
import zlib
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from host_a1111 import (  # noqa: E402
    EXTENSION,
    FLAGS,
    HUB_CACHE,
    NEGATIVE,
    WebUI,
    copy_tree,
    launcher_env,
    place_repositories,
    relaxed_requirements,
    remove_copies,
    version,
)
from host_common import (  # noqa: E402
    REPO,
    Row,
    Server,
    checked_row,
    checkout_files,
    exit_status,
    free_port,
    host_env,
    http_json,
    link,
    random_checkpoint,
    run,
    say,
    table,
    tolerance,
)

BESIDE_PROBE = "ftf-beside-probe"
PEER_FOLDERS = {
    "rp": "sd-webui-regional-prompter",
    "dp": "sd-dynamic-prompts",
    "cutoff": "sd-webui-cutoff",
    "adetailer": "adetailer",
    "controlnet": "sd-webui-controlnet",
}
# row groups (`--rows`): the peers' own, and the WebUI's features (no peer)
FEATURES = ("img2img", "inpaint", "hires", "styles", "xyz", "pff", "refiner")
GROUPS = (*PEER_FOLDERS, *FEATURES)
STYLE = "ftf-moths"  # a saved style (in a styles file of the run) that adds a marked item
AD_MODEL = "ftf-random-yolov8n.pt"
CN_MODEL = "control_v11p_sd15_ftfrandom"
# A random YOLOv8n detector for ADetailer, built by ultralytics from the architecture yaml it ships (the real
# detectors are on a model hub); needs ultralytics in the WebUI's venv (ADetailer's own requirement).
YOLO_BUILDER = """
import sys, torch
from ultralytics import YOLO
torch.manual_seed(0)
YOLO("yolov8n.yaml").save(sys.argv[1])
"""
# A random ControlNet of the SD 1.5 layout: sd-webui-controlnet's own `controlnet_default_config` and `ControlNet`
# class (its `cldm.py`, on the WebUI's ldm), every weight drawn (its zero convolutions too, so a unit changes the
# image), norms 1, biases 0, saved in fp16.
CN_BUILDER = """
import ast, re, sys, types, torch
from safetensors.torch import save_file
ext, host, out = sys.argv[1:4]
repositories = host + "/repositories/"
sys.path[:0] = [ext + "/scripts", repositories + "stable-diffusion-stability-ai", repositories + "generative-models"]
devices = types.ModuleType("modules.devices")
devices.dtype_unet = torch.float32
sys.modules["modules"] = types.ModuleType("modules")
sys.modules["modules"].devices = sys.modules["modules.devices"] = devices
text = open(ext + "/scripts/controlnet_model_guess.py").read()
config = ast.literal_eval(re.search(r"controlnet_default_config = (\\{.*?\\})\\n", text, re.S).group(1))
config.update(use_fp16=False, hint_channels=3, context_dim=768, global_average_pooling=False)
import cldm
torch.manual_seed(0)
with torch.no_grad():
    model = cldm.ControlNet(**config)
    for name, p in model.named_parameters():
        if p.ndim == 1 and ("norm" in name or name.endswith(".bias")):
            p.fill_(1.0 if "norm" in name and name.endswith("weight") else 0.0)
        else:
            p.normal_(0, 0.02)
save_file({k: v.half().contiguous() for k, v in model.state_dict().items()}, out)
"""
FTF_ON = [True, "Markers only"]
FTF_OFF = [False, "Markers only"]
PREFIX = "[Follow the Flow]"
RP_REGIONS = "a dark cave with ~bats~ BREAK a bright full moon over a lake"
WILDCARD = "ftfpet"  # a wildcard file written into Dynamic Prompts' wildcards folder for the run


def rp_args(calc: str) -> list:
    """Regional Prompter's `ui()` values: active, debug, tab, Matrix/Mask/Prompt submodes, ratios, base ratios,
    use base/common/negative common, calc mode, options, LoRA te/unet ratios, threshold, mask, LoRA stops, flip."""
    return [
        True,
        False,
        "Matrix",
        "Columns",
        "Mask",
        "Prompt",
        "1,1",
        "0.2",
        False,
        False,
        False,
        calc,
        [],
        "0",
        "0",
        "0.4",
        None,
        0,
        0,
        False,
    ]


def mask_png(size: int = 64, box: tuple[int, int, int, int] = (16, 16, 48, 48)) -> str:
    """A black-and-white inpainting mask as a base64 PNG (white inside `box`), written with the standard library."""
    rows = b"".join(
        b"\0" + bytes(255 if box[0] <= x < box[2] and box[1] <= y < box[3] else 0 for x in range(size))
        for y in range(size)
    )

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", size, size, 8, 0, 0, 0, 0)  # 8-bit greyscale
    png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")
    return base64.b64encode(png).decode()


def peer_commit(tree: Path) -> str:
    marker = tree / ".peer-commit"
    return marker.read_text(encoding="utf-8").split()[0] if marker.exists() else "?"


def dp_settings_file(host_dir: Path, tree: Path, out: Path) -> Path:
    """A copy of the WebUI's `config.json` with Dynamic Prompts' settings at their defaults (read from its
    `settings.py`). Its snapshot registers them from `Script.__init__`, after A1111 >= 1.9 has already run the
    settings callbacks, so `opts.dp_ignore_whitespace` raises on a fresh install (its issue 754, fixed upstream
    by PR 760 after this snapshot). The server gets the copy with `--ui-settings-file`; `config.json` is untouched."""
    config = json.loads((host_dir / "config.json").read_text(encoding="utf-8"))
    text = (tree / "sd_dynamic_prompts" / "settings.py").read_text(encoding="utf-8")
    for key, default in re.findall(r'key="(dp_\w+)",\s*info=shared\.OptionInfo\(\s*([^,\n]+),', text):
        try:
            config.setdefault(key, ast.literal_eval(default))
        except ValueError:  # a computed default (the magic prompt model list): not read by these rows
            config.setdefault(key, "")
    target = out / "config-beside.json"
    target.write_text(json.dumps(config), encoding="utf-8")
    return target


class BesideWebUI(WebUI):
    """`host_a1111.WebUI` with extra launch flags (its `__init__` takes none)."""

    def __init__(self, python, host_dir, checkpoint, out, name, flags, **env) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.python, self.out, self.name, self.count = python, out, name, 0
        self.switch_to = None  # `WebUI.wait_ready` reads it: no checkpoint switch here
        command = [python, "launch.py", *FLAGS, "--ckpt", str(checkpoint), "--port", str(self.port), *flags]
        self.server = Server(command, host_dir, launcher_env(out, **env), out / f"{name}.log")


def remove_peers(host_dir: Path) -> None:
    for folder in (*PEER_FOLDERS.values(), BESIDE_PROBE):
        if (host_dir / "extensions" / folder).exists():
            shutil.rmtree(host_dir / "extensions" / folder)


class Client:
    """The WebUI with our extension, the beside probe and the peers; requests with any `alwayson_scripts`."""

    def __init__(self, webui: WebUI, spec: Path, probe_out: Path) -> None:
        self.webui, self.spec, self.probe_out, self.count = webui, spec, probe_out, 0
        self.titles: dict[str, str] = {}

    def title(self, fragment: str) -> str:
        """A script's title as the API knows it (Dynamic Prompts has its version in it)."""
        if not self.titles:
            for script in http_json(f"{self.webui.url}/sdapi/v1/script-info"):
                if not script["is_img2img"]:
                    self.titles[script["name"]] = script["name"]
        return next(name for name in self.titles if fragment.lower() in name.lower())

    def log_size(self) -> int:
        return len(self.webui.server.log.read_text(encoding="utf-8", errors="replace"))

    def txt2img(
        self,
        name: str,
        prompt: str,
        scripts: dict,
        spec_images=None,
        batch_size=1,
        size=64,
        settings: dict | None = None,
        endpoint: str = "txt2img",
        keep: int | None = None,
        **fields,
    ) -> dict:
        """One generation (`endpoint` txt2img or img2img, any other payload `fields`); returns its first `keep`
        images (default: the batch), every infotext, the probe's findings and the log lines it added.
        `spec_images`: the items of each image (a list), or the probe's whole spec (a dict, e.g. `{"items"}`)."""
        if spec_images is not None:
            spec = spec_images if isinstance(spec_images, dict) else {"images": spec_images}
            self.spec.write_text(json.dumps({"name": name, **spec}), encoding="utf-8")
        else:
            self.spec.unlink(missing_ok=True)
        (self.probe_out / f"{name}.json").unlink(missing_ok=True)
        start = self.log_size()
        payload = {
            "prompt": prompt,
            "negative_prompt": NEGATIVE,
            "seed": 1,
            "steps": 2,
            "width": size,
            "height": size,
            "sampler_name": "Euler",
            "cfg_scale": 7,
            "batch_size": batch_size,
            "alwayson_scripts": scripts,
            "override_settings": settings or {},
            **fields,
        }
        answer = http_json(f"{self.webui.url}/sdapi/v1/{endpoint}", payload, timeout=900)
        info = json.loads(answer["info"])
        images = []
        for n, data in enumerate(answer["images"][: keep or batch_size]):
            self.count += 1
            path = self.webui.out / f"{name}-{n}.png"
            path.write_bytes(base64.b64decode(data))
            images.append(path)
        found = None
        result = self.probe_out / f"{name}.json"
        if spec_images is not None:
            found = json.loads(result.read_text(encoding="utf-8")) if result.exists() else {"error": "no probe output"}
        log = self.webui.server.log.read_text(encoding="utf-8", errors="replace")[start:]
        return {"images": images, "infotexts": info["infotexts"], "probe": found, "log": log}


def patched_in(infotext: str) -> list[str]:
    found = re.search(r"FtF patched: (\"[^\"]*\"|[^,\n]*)", infotext)
    return sorted(part.strip() for part in (found.group(1).strip('"') if found else "").split(";") if part.strip())


def ftf_lines(log: str) -> list[str]:
    return [line.strip() for line in log.splitlines() if PREFIX in line]


def rows_ok(found: dict) -> tuple[bool, float | None, str]:
    """Every image: items' rows = alone, other rows as the WebUI encoded them, something changed."""
    if not found or "error" in found:
        return False, None, f"probe: {found.get('error') if found else 'none'}"
    ok, worst, parts = True, 0.0, []
    for b, image in enumerate(found["images"]):
        worst = max(worst, image["max_diff"])
        ok = ok and image["max_diff"] <= tolerance(image["scale"]) and image["others_equal"]
        ok = ok and (image["changed"] or not image["items"])
        where = ", ".join(f"{i['item']}@sub{i.get('subprompt')} diff {i.get('diff', 'n/a')}" for i in image["items"])
        parts.append(
            f"image {b}: {len(image['subprompts'])} sub-prompt(s); {where} (within {tolerance(image['scale']):.2g}); "
            "other rows "
            f"{'bit-identical' if image['others_equal'] else 'DIFFER'}"
        )
    return ok, worst, "; ".join(parts)


def passes_ok(found: dict | None, expected: list[tuple[str, list[list[str]]]]) -> tuple[bool, float | None, str]:
    """Every sampling pass the probe saw, against `expected`: one `(kind, [items of each image])` per pass, in
    order (kind: txt2img, img2img, hires, adetailer). Each item's rows = its encode alone, every other row as the
    WebUI encoded that pass's own text, the cond changed where an item was patched."""
    if not found or "error" in found:
        return False, None, f"probe: {found.get('error') if found else 'none'}"
    passes = found.get("passes", [])
    ok = len(passes) == len(expected)
    worst, parts = 0.0, [f"{len(passes)} pass(es), {len(expected)} expected"]
    for n, (seen, (kind, items)) in enumerate(zip(passes, expected)):
        if "error" in seen:
            ok = False
            parts.append(f"pass {n + 1} ({seen.get('kind')}): probe error {seen['error']}")
            continue
        got = [sorted(i["item"] for i in image["items"]) for image in seen["images"]]
        good = seen["kind"] == kind and got == [sorted(own) for own in items]
        for image in seen["images"]:
            worst = max(worst, image["max_diff"])
            good = good and image["max_diff"] <= tolerance(image["scale"]) and image["others_equal"]
            good = good and (image["changed"] or not image["items"])
        ok = ok and good
        same = all(image["others_equal"] for image in seen["images"])
        diffs = ", ".join(f"{i['item']} {i.get('diff', 0):.2g}" for image in seen["images"] for i in image["items"])
        parts.append(
            f"pass {n + 1} {seen['kind']} {seen.get('size')} {seen['prompts']}: items {got} (want {kind} {items}) "
            f"diff {diffs or '-'}, other rows {'bit-identical' if same else 'DIFFER'}"
            f", FtF ran: {seen.get('ftf_state') is not None}"
        )
    return ok, worst, "; ".join(parts)


def diagnosis(result: dict) -> str:
    """What Follow the Flow's glue saw (from the probe) and said (log), for the detail column."""
    found = result["probe"] or {}
    state = found.get("ftf_state")
    text = f"p.prompts {found.get('prompts')}; p.all_prompts {found.get('all_prompts')}; cond {found.get('cond_shape')}"
    if state is not None:
        text += f"; FtF state: skip {state['skip_reason']!r}, patched {state['patched']}"
    lines = ftf_lines(result["log"])
    return text + f"; FtF log: {lines if lines else 'nothing'}"


def check(args) -> list[Row]:
    host_dir: Path = args.host_dir
    host = version(host_dir)
    out = host_dir / "realclient-beside-out"
    out.mkdir(exist_ok=True)
    for cache in out.glob("flowcore-cache-*"):
        shutil.rmtree(cache)
    log = out / "setup.log"
    remove_copies(host_dir)
    remove_peers(host_dir)
    relaxed_requirements(host_dir, out)
    place_repositories(host_dir, args.deps, log)
    python = args.python
    run([python, "-c", HUB_CACHE, str(out / "hf"), str(REPO)], log, env=host_env())
    checkpoint, lora = random_checkpoint(python, "sd15", host_dir / "realclient-models", log)
    checkpoint = link(checkpoint, host_dir / "models" / "Stable-diffusion")
    extensions = host_dir / "extensions"
    source = args.extension_from or REPO  # the same file list as this checkout, from another tree if asked
    copy_tree([source / name for name in checkout_files() if (source / name).is_file()], source, extensions / EXTENSION)
    probe_root = Path(__file__).with_name("beside_probe")
    copy_tree(list(probe_root.rglob("*.py")), probe_root, extensions / BESIDE_PROBE)
    peers = {}
    for key in PEER_FOLDERS:
        tree = getattr(args, key)
        if tree is None or key not in args.groups:
            continue
        shutil.copytree(tree, extensions / PEER_FOLDERS[key], symlinks=True)
        peers[key] = f"{PEER_FOLDERS[key]}@{peer_commit(tree)}"
        say(f"placed {tree} as extensions/{PEER_FOLDERS[key]} ({peers[key]})")
    if "dp" in peers:
        wildcards = extensions / PEER_FOLDERS["dp"] / "wildcards"
        wildcards.mkdir(exist_ok=True)
        (wildcards / f"{WILDCARD}.txt").write_text("~sleeping cat~\n", encoding="utf-8")
    spec, probe_out = out / "beside-spec.json", out / "probe"
    spec.unlink(missing_ok=True)
    flags = []
    if "dp" in peers:
        flags += ["--ui-settings-file", str(dp_settings_file(host_dir, args.dp, out))]
    if "styles" in args.groups:
        styles = out / "styles.csv"
        styles.write_text(f'name,prompt,negative_prompt\n{STYLE},"{{prompt}}, a lantern with ~glowing moths~",\n')
        flags += ["--styles-file", str(styles)]
    models = args.models or host_dir / "realclient-models"
    if "adetailer" in peers:
        # its install.py would pip-install mediapipe (which needs another protobuf than the WebUI pins): the
        # packages it needs for these rows (ultralytics) are installed beforehand, and installers are skipped
        detector = models / "adetailer" / AD_MODEL
        if not detector.exists():
            detector.parent.mkdir(parents=True, exist_ok=True)
            run([python, "-c", YOLO_BUILDER, str(detector)], log, env=host_env(YOLO_OFFLINE="1"))
        link(detector, host_dir / "models" / "adetailer")
        flags += ["--skip-install", "--ad-no-huggingface"]
    if "controlnet" in peers:
        control = models / "controlnet" / f"{CN_MODEL}.safetensors"
        if not control.exists():
            control.parent.mkdir(parents=True, exist_ok=True)
            run([python, "-c", CN_BUILDER, str(args.controlnet), str(host_dir), str(control)], log, env=host_env())
        link(control, extensions / PEER_FOLDERS["controlnet"] / "models")
        flags += [] if "--skip-install" in flags else ["--skip-install"]
    webui = BesideWebUI(
        python,
        host_dir,
        checkpoint,
        out,
        "webui-beside",
        flags,
        FTF_BESIDE_SPEC=str(spec),
        FTF_BESIDE_OUT=str(probe_out),
        FLOWCORE_CACHE=str(out / "flowcore-cache-host"),
    )
    client = Client(webui, spec, probe_out)
    rows: list[Row] = []

    def row(peer: str, name: str, function) -> None:
        rows.append(checked_row(host, "sd15", peers.get(peer, peer), name, function, webui.server))
        say(f"{name}: {'PASS' if rows[-1].ok else 'FAIL'}")

    try:
        webui.wait_ready()
        off_scripts = {}
        if "dp" in peers:
            off_scripts[client.title("dynamic prompts")] = {"args": [False]}  # on by default: off unless asked
        client.txt2img("warmup", "a warm-up image", {"Follow the Flow": {"args": FTF_OFF}, **off_scripts})

        if "rp" in peers:
            rp = client.title("regional prompter")  # noqa: F841 (read by the rows below)

            def rp_row(calc: str, separator: str, prompt: str = RP_REGIONS, batch: int = 1):
                def compare():
                    prompt_ = prompt.replace("BREAK", separator)
                    name = f"rp-{calc}-{separator}-b{batch}"
                    scripts = {rp: {"args": rp_args(calc)}, **off_scripts}
                    off = client.txt2img(
                        f"{name}-off",
                        prompt_,
                        {**scripts, "Follow the Flow": {"args": FTF_OFF}},
                        batch_size=batch,
                        size=128,
                    )
                    on = client.txt2img(
                        name,
                        prompt_,
                        {**scripts, "Follow the Flow": {"args": FTF_ON}},
                        [[["bats", "bats"]]] * batch,
                        batch_size=batch,
                        size=128,
                    )
                    ok, worst, detail = rows_ok(on["probe"])
                    named = all(patched_in(text) == ["bats"] for text in on["infotexts"][:batch])
                    pixels = max(webui.difference(a, b) for a, b in zip(off["images"], on["images"]))
                    warned_log = any("Regional Prompter" in line for line in ftf_lines(on["log"]))
                    warned_info = all(
                        re.search(r"FtF[^:,]*: [^\n]*Regional Prompter", text) for text in on["infotexts"][:batch]
                    )
                    rp_active = "RP Active: True" in on["infotexts"][0]
                    detail = (
                        f"RP active in infotext: {rp_active}; {detail}; infotext FtF patched: "
                        f"{[patched_in(text) for text in on['infotexts'][:batch]]}; image FtF on vs off: {pixels}; "
                        f"warning naming Regional Prompter: log {warned_log}, infotext {warned_info}; " + diagnosis(on)
                    )
                    patched_ok = ok and named and pixels > 0
                    stepped_aside = warned_log and warned_info and pixels == 0
                    return rp_active and (patched_ok or stepped_aside), worst, detail

                return compare

            row("rp", "RP Attention, BREAK regions: ~bats~ patched in its region", rp_row("Attention", "BREAK"))
            row("rp", "RP Attention, ADDCOL regions: ~bats~ patched", rp_row("Attention", "ADDCOL"))
            row("rp", "RP Latent, BREAK: rows patched + named, or a warning", rp_row("Latent", "BREAK"))
            row("rp", "RP Latent, ADDCOL: rows patched + named, or a warning", rp_row("Latent", "ADDCOL"))
            row(
                "rp",
                "RP Latent, item in region 2, batch 2: patched + named, or a warning",
                rp_row("Latent", "BREAK", "a bright full moon over a lake BREAK a dark cave with ~bats~", 2),
            )

        if "dp" in peers:
            dp = client.title("dynamic prompts")

            def dp_row(name: str, prompt: str, items: list[list[str]]):
                def compare():
                    scripts = {dp: {"args": [True, True]}, "Follow the Flow": {"args": FTF_ON}}
                    on = client.txt2img(name, prompt, scripts, [[[i, i] for i in own] for own in items], batch_size=2)
                    ok, worst, detail = rows_ok(on["probe"])
                    found = on["probe"] or {}
                    named = [patched_in(text) for text in on["infotexts"][:2]]
                    wanted = [sorted(own) for own in items]
                    expanded = found.get("all_prompts", [])
                    kept = len(expanded) == 2 and all(f"~{own[0]}~" in text for own, text in zip(items, expanded))
                    distinct = len(set(found.get("prompts", []))) == 2
                    detail = (
                        f"expanded all_prompts {expanded} (markers kept: {kept}); encoded {found.get('prompts')}; "
                        f"{detail}; infotexts FtF patched {named} (want {wanted}); FtF log: "
                        f"{ftf_lines(on['log']) or 'nothing'}"
                    )
                    return ok and named == wanted and kept and distinct, worst, detail

                return compare

            row(
                "dp",
                "DP combinatorial {red|blue} car, ~bats~ (batch 2): each image patched",
                dp_row("dp-variants", "a {red|blue} car, ~bats~", [["bats"], ["bats"]]),
            )
            row(
                "dp",
                "DP variants + wildcard (batch 2): each infotext names its own item",
                dp_row("dp-wildcard", "{a red car, ~bats~|a blue car, __ftfpet__}", [["bats"], ["sleeping cat"]]),
            )

        if "cutoff" in peers:
            # Cutoff works on comma-separated blocks: a target's block keeps it, the other targets' blocks are padded
            prompt = "a ~red car~, ~blue bats~, a green sky"
            items = [["red car", "red car"], ["blue bats", "blue bats"]]

            def cutoff_row():
                cut = {client.title("Cutoff"): {"args": [True, "red, blue", 0.5, True, False, "", "Lerp", False]}}
                cut_off = {client.title("Cutoff"): {"args": [False]}}
                # Cutoff changes the encoder's output through a forward hook, outside the WebUI's cond cache key:
                # a run with the same prompt reuses the conds of the run before it, Cutoff's or not. A run with
                # another prompt in between replaces the one cached entry.
                runs = {}
                for name, cutoff, ftf in (
                    ("neither", cut_off, FTF_OFF),
                    ("cutoff", cut, FTF_OFF),
                    ("ftf", cut_off, FTF_ON),
                    ("both", cut, FTF_ON),
                ):
                    client.txt2img(
                        f"cutoff-flush-{name}",
                        "a cache flush",
                        {**cut_off, **off_scripts, "Follow the Flow": {"args": FTF_OFF}},
                    )
                    spec_images = [items] if ftf is FTF_ON else None
                    runs[name] = client.txt2img(
                        f"cutoff-{name}",
                        prompt,
                        {**cutoff, **off_scripts, "Follow the Flow": {"args": ftf}},
                        spec_images,
                    )
                both = runs["both"]
                ok, worst, detail = rows_ok(both["probe"])
                named = patched_in(both["infotexts"][0]) == ["blue bats", "red car"]
                pixels = {
                    f"{a} vs {b}": webui.difference(runs[a]["images"][0], runs[b]["images"][0])
                    for a, b in (("neither", "cutoff"), ("neither", "ftf"), ("cutoff", "both"), ("ftf", "both"))
                }
                cut_active = "Cutoff enabled: True" in both["infotexts"][0]
                sensitive = pixels["neither vs cutoff"] > 0 and pixels["neither vs ftf"] > 0
                if pixels["ftf vs both"] == 0:
                    outcome = "FtF supersedes Cutoff: its rows replace Cutoff's on the shared items (both = FtF alone)"
                elif pixels["cutoff vs both"] == 0:
                    outcome = "Cutoff supersedes FtF (both = Cutoff alone)"
                else:
                    outcome = "they compose: both differs from each alone"
                stated = "Cutoff is on too" in both["log"]  # the glue's one line saying whose rows the items get
                detail = (
                    f"OUTCOME: {outcome}, stated in the log: {stated}; both on: Cutoff in infotext {cut_active}, "
                    f"FtF named {patched_in(both['infotexts'][0])}; {detail} (the probe's encodes pass through "
                    f"Cutoff's hook too); pixels {pixels}; FtF log: {ftf_lines(both['log']) or 'nothing'}"
                )
                # nothing breaks, and the outcome is said in the log (README: Follow the Flow's rows on its items)
                good = ok and named and cut_active and sensitive and stated and "Traceback" not in both["log"]
                return good, worst, detail

            row("cutoff", "Cutoff targets red, blue + FtF ~red car~, ~blue bats~: no break, outcome", cutoff_row)

        # The WebUI's own features and the peers that run extra passes: every pass the probe saw, checked.
        base = "a dark cave with ~bats~"
        items = {
            "items": [
                ["bats", "bats"],
                ["owls", "owls"],
                ["glowing moths", "glowing moths"],
                ["swans", "swans"],
                ["red eyes", "red eyes"],
            ]
        }
        ftf_on = {"Follow the Flow": {"args": FTF_ON}, **off_scripts}
        ftf_off = {"Follow the Flow": {"args": FTF_OFF}, **off_scripts}
        warm = client.txt2img("init", "a bright full moon over a lake", ftf_off)["images"][0]
        init = base64.b64encode(warm.read_bytes()).decode()

        def feature_row(name, expected, named, prompt=base, scripts=None, keep=None, off=True, **fields):
            """One generation with FtF on (and one with it off to see it change the image): every pass against
            `expected`, infotexts against `named` (one list of items per infotext that names any), no traceback."""

            def compare():
                on = client.txt2img(name, prompt, {**ftf_on, **(scripts or {})}, items, keep=keep, **fields)
                ok, worst, detail = passes_ok(on["probe"], expected)
                infotexts = on["infotexts"][-len(named) :] if named else []
                got = [patched_in(text) for text in infotexts]
                pixels = None
                if off:
                    plain = client.txt2img(f"{name}-off", prompt, {**ftf_off, **(scripts or {})}, keep=keep, **fields)
                    pixels = max(webui.difference(a, b) for a, b in zip(plain["images"], on["images"]))
                clean = "Traceback" not in on["log"]
                detail = (
                    f"{detail}; infotexts FtF patched {got} (want {named}); image FtF on vs off {pixels}; "
                    f"traceback in log: {not clean}; FtF log: {ftf_lines(on['log']) or 'nothing'}"
                )
                good = ok and got == [sorted(n) for n in named] and clean and (pixels is None or pixels > 0)
                return good, worst, detail

            return compare

        if "img2img" in args.groups:
            row(
                "img2img",
                "img2img (denoise 0.75): ~bats~ patched",
                feature_row(
                    "img2img",
                    [("img2img", [["bats"]])],
                    [["bats"]],
                    endpoint="img2img",
                    init_images=[init],
                    denoising_strength=0.75,
                    steps=4,
                ),
            )
        if "inpaint" in args.groups:
            row(
                "inpaint",
                "inpaint, a mask, only masked: ~bats~ patched",
                feature_row(
                    "inpaint",
                    [("img2img", [["bats"]])],
                    [["bats"]],
                    endpoint="img2img",
                    init_images=[init],
                    mask=mask_png(),
                    denoising_strength=0.75,
                    steps=4,
                    inpainting_fill=1,
                    inpaint_full_res=True,
                    inpaint_full_res_padding=8,
                    mask_blur=2,
                ),
            )
        if "hires" in args.groups:
            hires = {
                "enable_hr": True,
                "hr_scale": 2,
                "hr_upscaler": "Latent",
                "denoising_strength": 0.6,
                "hr_second_pass_steps": 2,
            }
            row(
                "hires",
                "hires fix, its own prompt ~owls~: each pass patched as its prompt says",
                feature_row(
                    "hires-own",
                    [("txt2img", [["bats"]]), ("hires", [["owls"]])],
                    [["bats", "owls"]],
                    hr_prompt="a bright moon over ~owls~",
                    hr_negative_prompt=NEGATIVE,
                    **hires,
                ),
            )
            row(
                "hires",
                "hires fix, same prompt: both passes patched",
                feature_row("hires-same", [("txt2img", [["bats"]]), ("hires", [["bats"]])], [["bats"]], **hires),
            )
        if "styles" in args.groups:
            row(
                "styles",
                "Styles: a saved style adds ~glowing moths~",
                feature_row(
                    "styles", [("txt2img", [["bats", "glowing moths"]])], [["bats", "glowing moths"]], styles=[STYLE]
                ),
            )
        if "xyz" in args.groups:
            xyz = [7, "bats, owls", [], 0, "", [], 0, "", [], True, True, False, False, False, False, False, 0, False]
            row(
                "xyz",
                "X/Y/Z plot, Prompt S/R bats -> owls: each cell patched",
                feature_row(
                    "xyz",
                    [("txt2img", [["bats"]]), ("txt2img", [["owls"]])],
                    [["bats"], ["owls"]],
                    script_name="x/y/z plot",
                    script_args=xyz,
                    keep=3,
                ),
            )
        if "pff" in args.groups:
            lines = 'a dark cave with ~bats~\na quiet lake with ~swans~\n--prompt "a red barn with ~owls~" --steps 3'
            row(
                "pff",
                "Prompts from file or textbox, 3 lines: each line patched",
                feature_row(
                    "pff",
                    [("txt2img", [["bats"]]), ("txt2img", [["swans"]]), ("txt2img", [["owls"]])],
                    [["bats"], ["swans"], ["owls"]],
                    prompt="at night",
                    script_name="prompts from file or textbox",
                    script_args=[False, False, "start", lines],
                    keep=3,
                ),
            )
        if "adetailer" in peers:
            ad = client.title("adetailer")

            def ad_args(prompt: str, confidence: float = 0.0) -> dict:
                unit = {
                    "ad_model": AD_MODEL,
                    "ad_prompt": prompt,
                    "ad_confidence": confidence,
                    "ad_mask_k": 1,
                    "ad_denoising_strength": 0.5,
                    "ad_use_steps": True,
                    "ad_steps": 3,
                }
                return {ad: {"args": [True, False, unit]}}

            def ad_row(name, prompt, expected, info):
                def compare():
                    alone = client.txt2img(f"{name}-alone", base, ftf_on, items)
                    none = client.txt2img(f"{name}-none", base, {**ftf_on, **ad_args(prompt, 1.0)}, items)
                    on = client.txt2img(name, base, {**ftf_on, **ad_args(prompt)}, items)
                    ok, worst, detail = passes_ok(on["probe"], expected)
                    main_same = (alone["probe"] or {}).get("passes", [{}])[0].get("images") == (
                        (on["probe"] or {}).get("passes", [{}])[0].get("images")
                    )
                    unchanged = webui.difference(alone["images"][0], none["images"][0])
                    detailed = webui.difference(alone["images"][0], on["images"][0])
                    named = patched_in(on["infotexts"][0])
                    has_info = info in on["infotexts"][0]
                    clean = "Traceback" not in on["log"] and "Traceback" not in none["log"]
                    ran = [line.strip() for line in on["log"].splitlines() if "ADetailer" in line or "detected" in line]
                    detail = (
                        f"{detail}; main pass as without ADetailer: {main_same}; ADetailer detecting nothing vs "
                        f"FtF alone: pixels {unchanged}; detailed vs FtF alone: pixels {detailed}; infotext FtF "
                        f"patched {named}, has {info!r}: {has_info}; traceback: {not clean}; ADetailer log {ran[:3]}; "
                        f"FtF log: {ftf_lines(on['log']) or 'nothing'}"
                    )
                    good = ok and main_same and unchanged == 0 and detailed > 0 and named == ["bats"]
                    return good and has_info and clean, worst, detail

                return compare

            row(
                "adetailer",
                "ADetailer, empty prompt: its pass reuses the main prompt's patch",
                ad_row(
                    "ad-empty", "", [("txt2img", [["bats"]]), ("adetailer", [["bats"]])], f"ADetailer model: {AD_MODEL}"
                ),
            )
            row(
                "adetailer",
                "ADetailer, its own prompt ~red eyes~: segmented and patched",
                ad_row(
                    "ad-own",
                    "a face with ~red eyes~",
                    [("txt2img", [["bats"]]), ("adetailer", [["red eyes"]])],
                    "ADetailer prompt: a face with ~red eyes~",
                ),
            )
        if "controlnet" in peers:
            cn = client.title("controlnet")

            def cn_row():
                unit = {
                    "enabled": True,
                    "module": "none",
                    "model": CN_MODEL,
                    "image": init,
                    "weight": 1.0,
                    "resize_mode": "Crop and Resize",
                    "control_mode": "Balanced",
                    "pixel_perfect": False,
                }
                scripts = {cn: {"args": [unit]}}
                alone = client.txt2img("cn-alone", base, ftf_on, items)
                on = client.txt2img("cn", base, {**ftf_on, **scripts}, items)
                plain = client.txt2img("cn-off", base, {**ftf_off, **scripts})
                ok, worst, detail = passes_ok(on["probe"], [("txt2img", [["bats"]])])
                control = webui.difference(alone["images"][0], on["images"][0])
                ftf = webui.difference(plain["images"][0], on["images"][0])
                named = patched_in(on["infotexts"][0])
                loaded = [line.strip() for line in on["log"].splitlines() if "ControlNet" in line][:3]
                clean = "Traceback" not in on["log"]
                marked = [seen.get("controlnet_mark_row") for seen in (on["probe"] or {}).get("passes", [])]
                detail = (
                    f"{detail}; ControlNet's mark row before the prompt's rows: {marked}; "
                    f"unit changes the image (vs FtF alone): pixels {control}; FtF on vs off with the "
                    f"unit: pixels {ftf}; infotext FtF patched {named}, ControlNet in infotext "
                    f"{'ControlNet 0' in on['infotexts'][0]}; traceback {not clean}; ControlNet log {loaded}"
                )
                return ok and control > 0 and ftf > 0 and named == ["bats"] and clean, worst, detail

            row("controlnet", "ControlNet unit (random SD1.5 model): patched rows exact", cn_row)
    finally:
        peak = webui.server.peak_mb()
        webui.server.stop()
        spec.unlink(missing_ok=True)
        remove_peers(host_dir)
        remove_copies(host_dir)
        (host_dir / "models" / "adetailer" / AD_MODEL).unlink(missing_ok=True)
    text = webui.server.log.read_text(encoding="utf-8", errors="replace")
    errors = [
        line for line in text.splitlines() if "Error loading script" in line or "Error running install.py" in line
    ]
    rows.append(
        Row(
            host,
            "sd15",
            "all",
            "server log: every extension loaded, no traceback",
            "Traceback" not in text and not errors,
            None,
            peak,
            None,
            f"{text.count('Traceback')} tracebacks, script/install errors {errors[:3]} in {webui.server.log.name}",
        )
    )
    if "refiner" in args.groups and args.sdxl:
        began = time.perf_counter()
        try:
            rows.append(refiner_row(args, host, out))
        except Exception as error:  # its setup: a failed row, the rows above still printed
            detail = f"{type(error).__name__}: {error}"
            rows.append(
                Row(
                    host,
                    "sdxl",
                    "refiner",
                    "SDXL refiner switch",
                    False,
                    None,
                    None,
                    time.perf_counter() - began,
                    detail,
                )
            )
    return rows


def refiner_row(args, host: str, out: Path) -> Row:
    """The WebUI's refiner switch on SDXL (`--sdxl FILE`, as base and, under a second name, as refiner; another
    server, no peers): the first part patched (probe), the switch made, one warning in the log and the infotext
    saying the refiner's part is unpatched. Its peak memory is sampled every second, so that a server killed for
    memory still reports how far it got ("did not fit")."""
    import threading

    host_dir, python = args.host_dir, args.python
    models = host_dir / "models" / "Stable-diffusion"
    base = link(args.sdxl, models)
    refiner = models / "sdxl-refiner-copy.safetensors"  # the same weights: another checkpoint to the WebUI
    refiner.unlink(missing_ok=True)
    refiner.symlink_to(args.sdxl.resolve())
    source = args.extension_from or REPO
    copy_tree(
        [source / name for name in checkout_files() if (source / name).is_file()],
        source,
        host_dir / "extensions" / EXTENSION,
    )
    probe_root = Path(__file__).with_name("beside_probe")
    copy_tree(list(probe_root.rglob("*.py")), probe_root, host_dir / "extensions" / BESIDE_PROBE)
    spec, probe_out = out / "refiner-spec.json", out / "probe"
    webui = BesideWebUI(
        python,
        host_dir,
        base,
        out,
        "webui-refiner",
        [],
        FTF_BESIDE_SPEC=str(spec),
        FTF_BESIDE_OUT=str(probe_out),
        FLOWCORE_CACHE=str(out / "flowcore-cache-sdxl"),
    )
    peak, running = [0.0], [True]

    def sample() -> None:
        while running[0]:
            peak[0] = max(peak[0], webui.server.peak_mb() or 0.0)
            time.sleep(1)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    began = time.perf_counter()
    check_name = "SDXL refiner switch at 0.5 (the SDXL file again as refiner): steps aside with one warning"
    try:
        webui.wait_ready(timeout=900)
        client = Client(webui, spec, probe_out)
        result = client.txt2img(
            "refiner",
            "a dark cave with ~bats~",
            {"Follow the Flow": {"args": FTF_ON}},
            [[["bats", "bats"]]],
            steps=4,
            settings={"live_previews_enable": False},  # on SDXL it would download the preview model first
            refiner_checkpoint=refiner.stem,
            refiner_switch_at=0.5,
        )
        ok, worst, detail = rows_ok(result["probe"])
        text = result["infotexts"][0]
        warned = [line for line in ftf_lines(result["log"]) if "refiner" in line]
        switched = "Refiner: " in text
        detail = (
            f"first part: {detail}; switch made (Refiner in infotext): {switched}; FtF warnings about the refiner "
            f"{warned}; infotext 'FtF refiner: unpatched': {'FtF refiner: unpatched' in text}; FtF patched "
            f"{patched_in(text)}; traceback {'Traceback' in result['log']}"
        )
        good = (
            ok and switched and len(warned) == 1 and "FtF refiner: unpatched" in text and patched_in(text) == ["bats"]
        )
        good = good and "Traceback" not in result["log"]
    except Exception as error:
        alive = webui.server.process.poll() is None
        ok_detail = "" if alive else f"did not fit: the server exited ({webui.server.process.returncode}); "
        good, worst, detail = False, None, f"{ok_detail}{type(error).__name__}: {error}; peak {peak[0]:.0f} MB"
    finally:
        running[0] = False
        sampler.join()
        webui.server.stop()
        spec.unlink(missing_ok=True)
        refiner.unlink(missing_ok=True)
        base.unlink(missing_ok=True)
        remove_copies(host_dir)
        remove_peers(host_dir)
    return Row(host, "sdxl", "refiner", check_name, good, worst, peak[0] or None, time.perf_counter() - began, detail)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="beside_a1111", description=__doc__.splitlines()[0])
    parser.add_argument("--host-dir", required=True, type=Path)
    parser.add_argument("--deps", type=Path)
    parser.add_argument("--python", required=True)
    for key, name in PEER_FOLDERS.items():
        parser.add_argument(f"--{key}", type=Path, metavar="DIR", help=f"an exported tree of {name}")
    parser.add_argument(
        "--extension-from",
        type=Path,
        metavar="DIR",
        help="install the extension from this tree (a copy of the checkout with a fix applied)",
    )
    parser.add_argument(
        "--only", metavar="LIST", help="comma-separated peers to place (rp,dp,cutoff,...): the others are left out"
    )
    parser.add_argument(
        "--rows",
        metavar="LIST",
        help=f"comma-separated row groups to run ({','.join(GROUPS)}; default all): a peer's rows run only when its "
        "tree is given too",
    )
    parser.add_argument(
        "--sdxl", type=Path, metavar="FILE", help="an SDXL checkpoint for the refiner row (base and refiner)"
    )
    parser.add_argument(
        "--models",
        type=Path,
        metavar="DIR",
        help="where the random ADetailer detector (adetailer/) and ControlNet (controlnet/) are, or are built "
        "(default <host-dir>/realclient-models)",
    )
    args = parser.parse_args(argv)
    if args.only:
        for key in set(PEER_FOLDERS) - {name.strip() for name in args.only.split(",")}:
            setattr(args, key, None)
    args.groups = {name.strip() for name in args.rows.split(",")} if args.rows else set(GROUPS)
    unknown = args.groups - set(GROUPS)
    if unknown:
        parser.error(f"`--rows`: unknown groups {sorted(unknown)} (known: {', '.join(GROUPS)})")
    args.host_dir = args.host_dir.resolve()
    started = time.perf_counter()
    try:
        rows = check(args)
    except Exception as error:
        import traceback

        traceback.print_exc()
        rows = [Row("a1111", "sd15", "-", "setup", False, detail=f"{type(error).__name__}: {error}")]
    print(table(rows))
    print(f"\n{sum(bool(row.ok) for row in rows)} of {len(rows)} rows passed in {time.perf_counter() - started:.0f} s")
    return exit_status(rows)


if __name__ == "__main__":
    sys.exit(main())
