"""The rows of Follow the Flow beside other extensions and the host's own features (issue 19), for any WebUI host
that speaks A1111's API: `beside_a1111.py` (AUTOMATIC1111 v1.10.1) and `beside_forge.py` (Forge f2.0.1v1.10.1) start
the host with the peers placed and this probe (`beside_probe/`), then call `run_rows`.

Rows (a group runs when `--rows` names it, a peer's group only where the peer is placed):
- Regional Prompter (`rp`), Attention mode, regions by `BREAK` and by `ADDCOL`: the marked item's rows = its encode
  alone, every other row as the host encoded it, the image changed, the infotext names the item. Latent mode (`BREAK`,
  `ADDCOL`, the item in region 2 with a batch of 2): the same, OR Follow the Flow steps aside (image unchanged) with a
  warning naming Regional Prompter in the log and the infotext.
- Dynamic Prompts (`dp`), combinatorial, batch of 2, `{..|..}` and a wildcard: every image's own cond patched, markers
  kept through the expansion, every image's infotext names its own items.
- Cutoff (`cutoff`) with targets = the marked items: nothing breaks, the log says whose rows the patched items get.
- The host's img2img, inpaint, hires fix (its own prompt, the same prompt), Styles, X/Y/Z Prompt S/R, Prompts from
  file: every sampling pass the probe saw patched as its own prompt says, each infotext its own items.
- ADetailer (`adetailer`): an empty ADetailer prompt gets the image's patch, a prompt of its own is segmented and
  patched, the main pass is as without ADetailer; with Dynamic Prompts placed too, a batch of 2 with two prompts: each
  image's ADetailer pass gets its own image's patch, each infotext its own item.
- ControlNet (`controlnet`; the host says how its unit is written): one unit, and one unit with hires fix: each pass's
  cond patched exact.
"""

from __future__ import annotations

import argparse
import ast
import base64
import json
import re
import shutil
import struct
import threading
import time
import traceback
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from host_a1111 import EXTENSION, NEGATIVE, WebUI, copy_tree, remove_copies
from host_common import (
    NOT_RUN,
    REPO,
    Row,
    checked_row,
    checkout_files,
    exit_status,
    http_json,
    link,
    say,
    table,
    tolerance,
)

BESIDE_PROBE = "ftf-beside-probe"
FEATURES = ("img2img", "inpaint", "hires", "styles", "xyz", "pff", "refiner")  # the host's own features (no peer)
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
# each peer's txt2img script as `/sdapi/v1/script-info` names it
PEER_SCRIPTS = {
    "rp": "regional prompter",
    "dp": "dynamic prompts",
    "cutoff": "cutoff",
    "adetailer": "adetailer",
    "controlnet": "controlnet",
}
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


def output_folder(host_dir: Path) -> Path:
    """`<host-dir>/realclient-beside-out`, without the flowcore caches of an earlier run."""
    out = host_dir / "realclient-beside-out"
    out.mkdir(exist_ok=True)
    for cache in out.glob("flowcore-cache-*"):
        shutil.rmtree(cache)
    return out


def install_ours(source: Path, extensions: Path) -> None:
    """This checkout's files (from `source`: this checkout or a copy with a fix) and the probe, as extensions."""
    copy_tree([source / name for name in checkout_files() if (source / name).is_file()], source, extensions / EXTENSION)
    probe_root = Path(__file__).with_name("beside_probe")
    copy_tree(list(probe_root.rglob("*.py")), probe_root, extensions / BESIDE_PROBE)


def peer_commit(tree: Path) -> str:
    marker = tree / ".peer-commit"
    return marker.read_text(encoding="utf-8").split()[0] if marker.exists() else "?"


def settings_file(config: dict, dp_tree: Path | None, out: Path) -> Path:
    """The host's settings for the run (`config`, from its `config.json`, with the host's own changes) as
    `<out>/config-beside.json`, given to the server with `--ui-settings-file` (the host's `config.json` is untouched).
    With Dynamic Prompts placed (`dp_tree`), its settings at their defaults (read from its `settings.py`): its snapshot
    registers them from `Script.__init__`, after A1111 >= 1.9 has already run the settings callbacks, so
    `opts.dp_ignore_whitespace` raises on a fresh install (its issue 754, fixed upstream by PR 760 after this
    snapshot)."""
    config = dict(config)
    if dp_tree is not None:
        text = (dp_tree / "sd_dynamic_prompts" / "settings.py").read_text(encoding="utf-8")
        for key, default in re.findall(r'key="(dp_\w+)",\s*info=shared\.OptionInfo\(\s*([^,\n]+),', text):
            try:
                config.setdefault(key, ast.literal_eval(default))
            except ValueError:  # a computed default (the magic prompt model list): not read by these rows
                config.setdefault(key, "")
    target = out / "config-beside.json"
    target.write_text(json.dumps(config), encoding="utf-8")
    return target


def place_peers(trees: dict[str, Path], folders: dict[str, str], extensions: Path) -> dict[str, str]:
    """Copies each peer's exported tree (group -> tree) into `extensions/` under its folder name; returns the table's
    label of each (group -> `folder@commit`)."""
    peers = {}
    for key, tree in trees.items():
        shutil.copytree(tree, extensions / folders[key], symlinks=True)
        peers[key] = f"{folders[key]}@{peer_commit(tree)}"
        say(f"placed {tree} as extensions/{folders[key]} ({peers[key]})")
    if "dp" in peers:
        wildcards = extensions / folders["dp"] / "wildcards"
        wildcards.mkdir(exist_ok=True)
        (wildcards / f"{WILDCARD}.txt").write_text("~sleeping cat~\n", encoding="utf-8")
    return peers


def remove_peers(extensions: Path, folders: list[str]) -> None:
    """Removes the peers' and the probe's folders a run placed (or an earlier one left) in `extensions/`."""
    for folder in (*folders, BESIDE_PROBE):
        if (extensions / folder).exists():
            shutil.rmtree(extensions / folder)


def styles_file(out: Path) -> Path:
    """A styles file with one saved style (`STYLE`) that adds a marked item, for `--styles-file`."""
    styles = out / "styles.csv"
    styles.write_text(f'name,prompt,negative_prompt\n{STYLE},"{{prompt}}, a lantern with ~glowing moths~",\n')
    return styles


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

    def choice_index(self, fragment: str, arg: int, label: str) -> int:
        """The index of `label` among the choices of a script's argument (X/Y/Z's axis types differ by host)."""
        for script in http_json(f"{self.webui.url}/sdapi/v1/script-info"):
            if not script["is_img2img"] and fragment.lower() in script["name"].lower():
                return list(script["args"][arg]["choices"]).index(label)
        raise LookupError(f"no txt2img script named like {fragment!r}")

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


def error_lines(log: str) -> list[str]:
    """The first few exception lines of a log (`SomeError: ...`, indented where the WebUI indents a traceback)."""
    return [line.strip() for line in log.splitlines() if re.match(r"\s*[\w.]+(Error|Exception): ", line)][:3]


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
    errors = error_lines(result["log"])
    return text + f"; FtF log: {lines if lines else 'nothing'}; errors in the log: {errors or 'none'}"


@dataclass
class Host:
    """What the rows need to know of the host: its label in the table, the server's client, the peers placed
    (group -> label), the row groups asked for, and its ControlNet unit as the API takes it (for a base64 control
    image; None where the host has no ControlNet)."""

    name: str
    client: Client
    peers: dict[str, str]
    groups: set[str]
    controlnet_unit: Callable[[str], dict] | None = None
    hires_fields: dict = field(default_factory=dict)  # what the host's API needs besides A1111's hires fields


def run_rows(host: Host) -> list[Row]:
    """Every row of the groups asked for, on the server `host.client` drives (started, not yet ready)."""
    client, peers, groups = host.client, host.peers, host.groups
    webui = client.webui
    rows: list[Row] = []

    def row(peer: str, name: str, function) -> None:
        rows.append(checked_row(host.name, "sd15", peers.get(peer, peer), name, function, webui.server))
        say(f"{name}: {'PASS' if rows[-1].ok else 'FAIL'}")

    webui.wait_ready()
    listed = {script["name"] for script in http_json(f"{webui.url}/sdapi/v1/script-info") if not script["is_img2img"]}
    for key, fragment in PEER_SCRIPTS.items():
        if key in peers and not any(fragment in name for name in listed):  # it failed to load: its rows cannot run
            errors = error_lines(webui.server.log.read_text(encoding="utf-8", errors="replace"))
            detail = f"its script is not in /sdapi/v1/script-info; errors in the server log: {errors or 'none'}"
            rows.append(Row(host.name, "sd15", peers.pop(key), "the extension loads", False, detail=detail))
    off_scripts = {}
    if "dp" in peers:
        off_scripts[client.title("dynamic prompts")] = {"args": [False]}  # on by default: off unless asked
    client.txt2img("warmup", "a warm-up image", {"Follow the Flow": {"args": FTF_OFF}, **off_scripts})

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

    if "img2img" in groups:
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
    if "inpaint" in groups:
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
    hires = {
        "enable_hr": True,
        "hr_scale": 2,
        "hr_upscaler": "Latent",
        "denoising_strength": 0.6,
        "hr_second_pass_steps": 2,
        **host.hires_fields,
    }
    if "hires" in groups:
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
    if "styles" in groups:
        row(
            "styles",
            "Styles: a saved style adds ~glowing moths~",
            feature_row(
                "styles", [("txt2img", [["bats", "glowing moths"]])], [["bats", "glowing moths"]], styles=[STYLE]
            ),
        )
    if "xyz" in groups:
        prompt_sr = client.choice_index("x/y/z plot", 0, "Prompt S/R")  # 7 in A1111, 8 in Forge
        xyz = [
            prompt_sr,
            "bats, owls",
            [],
            0,
            "",
            [],
            0,
            "",
            [],
            True,
            True,
            False,
            False,
            False,
            False,
            False,
            0,
            False,
        ]
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
    if "pff" in groups:
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

        def ad_batch_row():
            # two prompts in one batch: Dynamic Prompts' combinatorial expansion (the API takes one prompt)
            prompt = "{a dark cave with ~bats~|a quiet lake with ~swans~}"
            dp_on = {client.title("dynamic prompts"): {"args": [True, True]}}
            alone = client.txt2img("ad-batch-alone", prompt, {**ftf_on, **dp_on}, items, batch_size=2)
            on = client.txt2img("ad-batch", prompt, {**ftf_on, **dp_on, **ad_args("")}, items, batch_size=2)
            expected = [
                ("txt2img", [["bats"], ["swans"]]),
                ("adetailer", [["bats"]]),
                ("adetailer", [["swans"]]),
            ]
            ok, worst, detail = passes_ok(on["probe"], expected)
            main_same = (alone["probe"] or {}).get("passes", [{}])[0].get("images") == (
                (on["probe"] or {}).get("passes", [{}])[0].get("images")
            )
            detailed = [webui.difference(a, b) for a, b in zip(alone["images"], on["images"])]
            named = [patched_in(text) for text in on["infotexts"][:2]]
            has_info = all(f"ADetailer model: {AD_MODEL}" in text for text in on["infotexts"][:2])
            clean = "Traceback" not in on["log"] and "Traceback" not in alone["log"]
            detail = (
                f"{detail}; main pass as without ADetailer: {main_same}; detailed vs FtF alone: pixels {detailed}; "
                f"infotexts FtF patched {named} (want [['bats'], ['swans']]), ADetailer model in both: {has_info}; "
                f"errors {error_lines(on['log']) or 'none'}; FtF log: {ftf_lines(on['log']) or 'nothing'}"
            )
            good = ok and main_same and all(d > 0 for d in detailed) and named == [["bats"], ["swans"]]
            return good and has_info and clean, worst, detail

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
        batch_name = "ADetailer, batch of 2 (two prompts by Dynamic Prompts): each image's pass gets its own patch"
        if "dp" in peers:
            row("adetailer", batch_name, ad_batch_row)
        else:
            why = "not run: two prompts in one batch need Dynamic Prompts (its tree and the `dp` group)"
            rows.append(Row(host.name, "sd15", peers["adetailer"], batch_name, NOT_RUN, detail=why))
    if "controlnet" in peers and host.controlnet_unit is not None:
        cn = client.title("controlnet")

        def cn_row(hires_fix: bool):
            def compare():
                name, fields = ("cn-hires", hires) if hires_fix else ("cn", {})
                scripts = {cn: {"args": [host.controlnet_unit(init)]}}
                alone = client.txt2img(f"{name}-alone", base, ftf_on, items, **fields)
                on = client.txt2img(name, base, {**ftf_on, **scripts}, items, **fields)
                plain = client.txt2img(f"{name}-off", base, {**ftf_off, **scripts}, **fields)
                expected = [("txt2img", [["bats"]])] + ([("hires", [["bats"]])] if hires_fix else [])
                ok, worst, detail = passes_ok(on["probe"], expected)
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
                    f"{'ControlNet 0' in on['infotexts'][0]}; traceback {not clean}, errors "
                    f"{error_lines(on['log']) or 'none'}; ControlNet log {loaded}"
                )
                return ok and control > 0 and ftf > 0 and named == ["bats"] and clean, worst, detail

            return compare

        row("controlnet", "ControlNet unit (random SD1.5 model): patched rows exact", cn_row(False))
        row("controlnet", "ControlNet unit + hires fix: each pass's cond patched exact", cn_row(True))
    # last: Regional Prompter and Cutoff hook the model and the text encoder, and a host they break keeps the hooks
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
    return rows


def run_and_clean_up(host: Host, host_dir: Path, peer_folders: list[str]) -> list[Row]:
    """`run_rows` on the host's started server; then stops it, removes what the run placed (the peers, this
    checkout's and the probe's copies, the random detector's link) and adds the server-log row."""
    webui = host.client.webui
    try:
        rows = run_rows(host)
    finally:
        peak = webui.server.peak_mb()
        webui.server.stop()
        host.client.spec.unlink(missing_ok=True)
        remove_peers(host_dir / "extensions", peer_folders)
        remove_copies(host_dir)
        (host_dir / "models" / "adetailer" / AD_MODEL).unlink(missing_ok=True)
    text = webui.server.log.read_text(encoding="utf-8", errors="replace")
    errors = [line for line in text.splitlines() if "Error loading script" in line or "Error running" in line]
    detail = f"{text.count('Traceback')} tracebacks ({error_lines(text) or 'none'}), script or install errors "
    detail += f"{errors[:3]} in {webui.server.log.name}"
    ok = "Traceback" not in text and not errors
    check_name = "server log: every extension loaded, no traceback"
    return [*rows, Row(host.name, "sd15", "all", check_name, ok, None, peak, None, detail)]


def refiner_row(
    host: str, host_dir: Path, sdxl: Path, source: Path, peers: list[str], start: Callable[..., WebUI]
) -> Row:
    """The host's refiner switch on SDXL: `sdxl` as base and, under a second name, as refiner, on a server of its own
    (`start(checkpoint, name, **env)`, no peers): the first part patched (probe), the switch made, one warning in the
    log and the infotext saying the refiner's part is unpatched. Its peak memory is sampled every second, so that a
    server killed for memory still reports how far it got ("did not fit")."""
    out = output_folder(host_dir)
    models = host_dir / "models" / "Stable-diffusion"
    base = link(sdxl, models)
    refiner = models / "sdxl-refiner-copy.safetensors"  # the same weights: another checkpoint to the host
    refiner.unlink(missing_ok=True)
    refiner.symlink_to(sdxl.resolve())
    install_ours(source, host_dir / "extensions")
    spec, probe_out = out / "refiner-spec.json", out / "probe"
    webui = start(
        base,
        "refiner",
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
        remove_peers(host_dir / "extensions", peers)
    return Row(host, "sdxl", "refiner", check_name, good, worst, peak[0] or None, time.perf_counter() - began, detail)


def refiner_rows(args: argparse.Namespace, host: str, peers: list[str], start: Callable[..., WebUI]) -> list[Row]:
    """`refiner_row` where `--rows` names it and `--sdxl` is given; a failure of its setup is a failed row."""
    if "refiner" not in args.groups or not args.sdxl:
        return []
    began = time.perf_counter()
    source = getattr(args, "extension_from", None) or REPO
    try:
        return [refiner_row(host, args.host_dir, args.sdxl, source, peers, start)]
    except Exception as error:
        seconds, detail = time.perf_counter() - began, f"{type(error).__name__}: {error}"
        return [Row(host, "sdxl", "refiner", "SDXL refiner switch", False, None, None, seconds, detail)]


def command_line(prog: str, doc: str, peer_folders: dict[str, str], groups: tuple[str, ...]) -> argparse.ArgumentParser:
    """The options both hosts' scripts take: the host, its Python and deps, a tree per peer, `--models`, `--only`,
    `--rows`; each script adds its own."""
    parser = argparse.ArgumentParser(prog=prog, description=doc.splitlines()[0])
    parser.add_argument("--host-dir", required=True, type=Path)
    parser.add_argument("--deps", type=Path, help="the host's pinned repositories (see host_a1111.py, host_forge.py)")
    parser.add_argument("--python", required=True, help="the python of the host's venv")
    for key, name in peer_folders.items():
        parser.add_argument(f"--{key}", type=Path, metavar="DIR", help=f"an exported tree of {name}")
    parser.add_argument(
        "--models",
        type=Path,
        metavar="DIR",
        help="where the random ADetailer detector (adetailer/) and ControlNet (controlnet/) are "
        "(default <host-dir>/realclient-models)",
    )
    parser.add_argument(
        "--sdxl", type=Path, metavar="FILE", help="an SDXL checkpoint for the refiner row (base and refiner)"
    )
    parser.add_argument("--only", metavar="LIST", help="comma-separated peers to place: the others are left out")
    parser.add_argument(
        "--rows",
        metavar="LIST",
        help=f"comma-separated row groups to run ({','.join(groups)}; default all): a peer's rows run only when its "
        "tree is given too",
    )
    return parser


def run_from_command_line(
    parser: argparse.ArgumentParser,
    argv: list[str] | None,
    peer_folders: dict[str, str],
    groups: tuple[str, ...],
    check: Callable[[argparse.Namespace], list[Row]],
    host: str,
) -> int:
    """Reads the command line (`--only` drops the other peers' trees, `--rows` picks groups), runs `check` and
    prints its table: exit status as `run.py`'s."""
    args = parser.parse_args(argv)
    if args.only:
        for key in set(peer_folders) - {name.strip() for name in args.only.split(",")}:
            setattr(args, key, None)
    args.groups = {name.strip() for name in args.rows.split(",")} if args.rows else set(groups)
    unknown = args.groups - set(groups)
    if unknown:
        parser.error(f"`--rows`: unknown groups {sorted(unknown)} (known: {', '.join(groups)})")
    args.host_dir = args.host_dir.resolve()
    started = time.perf_counter()
    try:
        rows = check(args)
    except Exception as error:
        traceback.print_exc()
        rows = [Row(host, "sd15", "-", "setup", False, detail=f"{type(error).__name__}: {error}")]
    print(table(rows))
    print(f"\n{sum(bool(row.ok) for row in rows)} of {len(rows)} rows passed in {time.perf_counter() - started:.0f} s")
    return exit_status(rows)
