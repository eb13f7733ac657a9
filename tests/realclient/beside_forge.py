"""Follow the Flow beside other extensions in a real Forge f2.0.1v1.10.1 (issue 19): `beside_common.py`'s rows.

    python3 tests/realclient/beside_forge.py --host-dir /work/hosts/forge --deps /work/hosts/forge-deps \
        --python /work/hosts/forge/venv/bin/python --site DIR --rp DIR --dp DIR --cutoff DIR --adetailer DIR \
        [--checkpoint FILE] [--models DIR] [--sdxl FILE] [--rows LIST] [--only LIST]

As `beside_a1111.py` (the same peer trees, rows and probe, random SD 1.5), with Forge's differences:
- ControlNet is Forge's built-in one (`extensions-builtin/sd_forge_controlnet`, no tree to place): the random
  `control_v11p_sd15` in `--models/controlnet/` (which `beside_a1111.py` builds from sd-webui-controlnet's config) is
  given with `--controlnet-dir`, and the unit names it as Forge lists it (`/controlnet/model_list`: name and hash),
  with Forge's preprocessor "None".
- The packages ADetailer and Dynamic Prompts need and Forge's venv lacks (ultralytics, ultralytics-thop,
  dynamicprompts) come from `--site DIR`, a `pip install --target DIR --no-deps` folder put on `PYTHONPATH` for this
  server only, so Forge's venv stays as it is; Forge starts with `--skip-install` (no extension's installer runs).
- The server reads its own copy of Forge's settings (`--ui-settings-file`) with no additional modules: the suite's
  `config.json` names the last family's VAE and text encoders.
`--sdxl FILE` adds the refiner row (`beside_common.refiner_row`, a server of its own). Forge alone is not started:
`host_forge.py` shows that the extension switched off is Forge alone. Outputs in `<host-dir>/realclient-beside-out/`.
Exit status as `run.py`'s: 0 all passed, 1 a row failed.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from beside_common import (  # noqa: E402
    AD_MODEL,
    CN_MODEL,
    FEATURES,
    Client,
    Host,
    command_line,
    install_ours,
    output_folder,
    place_peers,
    refiner_rows,
    remove_peers,
    run_and_clean_up,
    run_from_command_line,
    settings_file,
    styles_file,
)
from host_a1111 import WebUI, remove_copies  # noqa: E402
from host_common import (  # noqa: E402
    REPO,
    Row,
    Server,
    free_port,
    http_json,
    link,
    random_checkpoint,
)
from host_forge import FLAGS, launcher_env, place_repositories, version  # noqa: E402

PEER_FOLDERS = {  # the peers placed from a tree; ControlNet is built in
    "rp": "sd-webui-regional-prompter",
    "dp": "sd-dynamic-prompts",
    "cutoff": "sd-webui-cutoff",
    "adetailer": "adetailer",
}
BUILT_IN_CONTROLNET = "sd_forge_controlnet (built-in)"
GROUPS = (*PEER_FOLDERS, "controlnet", *FEATURES)


class BesideForge(WebUI):
    """A Forge server with extra launch flags; A1111's API, readiness and images (`host_a1111.WebUI`)."""

    def __init__(self, python, host_dir, checkpoint, out, name, deps, flags, **env) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.python, self.out, self.name, self.count = python, out, name, 0
        self.switch_to = None  # `WebUI.wait_ready` reads it: no checkpoint switch here
        command = [python, "launch.py", *FLAGS, "--ckpt", str(checkpoint), "--port", str(self.port), *flags]
        self.server = Server(command, host_dir, launcher_env(out, deps, **env), out / f"{name}.log")


def controlnet_unit(url: str):
    """Forge's ControlNet unit as its API takes it: the random model by the name Forge lists, no preprocessor."""

    def unit(init: str) -> dict:
        names = http_json(f"{url}/controlnet/model_list")["model_list"]
        model = next((name for name in names if name.startswith(CN_MODEL)), None)
        if model is None:
            raise LookupError(f"Forge lists no ControlNet model named {CN_MODEL}: {names}")
        return {
            "enabled": True,
            "module": "None",
            "model": model,
            "image": init,
            "weight": 1.0,
            "resize_mode": "Crop and Resize",
            "control_mode": "Balanced",
            "pixel_perfect": False,
        }

    return unit


def check(args) -> list[Row]:
    host_dir: Path = args.host_dir
    host = version(host_dir)
    out = output_folder(host_dir)
    log = out / "setup.log"
    extensions = host_dir / "extensions"
    remove_copies(host_dir)
    remove_peers(extensions, list(PEER_FOLDERS.values()))
    place_repositories(host_dir, args.deps, log)
    python = args.python
    checkpoint = args.checkpoint or random_checkpoint(python, "sd15", host_dir / "realclient-models", log)[0]
    checkpoint = link(checkpoint, host_dir / "models" / "Stable-diffusion")
    install_ours(REPO, extensions)
    trees = {key: getattr(args, key) for key in PEER_FOLDERS if getattr(args, key) and key in args.groups}
    peers = place_peers(trees, PEER_FOLDERS, extensions)
    config_json = host_dir / "config.json"
    config = json.loads(config_json.read_text(encoding="utf-8")) if config_json.exists() else {}
    config.update(forge_additional_modules=[], live_previews_enable=False)
    config.pop("sd_model_checkpoint", None)  # `--ckpt` names it
    flags = ["--skip-install", "--ui-settings-file", str(settings_file(config, trees.get("dp"), out))]
    if "styles" in args.groups:
        flags += ["--styles-file", str(styles_file(out))]
    models = args.models or host_dir / "realclient-models"
    if "adetailer" in peers:
        detector = models / "adetailer" / AD_MODEL
        if not detector.exists():
            raise RuntimeError(f"no {detector}: build it with beside_a1111.py (ultralytics' yolov8n.yaml)")
        link(detector, host_dir / "models" / "adetailer")
        flags += ["--ad-no-huggingface"]
    if "controlnet" in args.groups:
        control = models / "controlnet" / f"{CN_MODEL}.safetensors"
        if not control.exists():
            raise RuntimeError(f"no {control}: build it with beside_a1111.py (sd-webui-controlnet's config)")
        flags += ["--controlnet-dir", str(control.parent)]
        peers["controlnet"] = BUILT_IN_CONTROLNET
    env = {"YOLO_OFFLINE": "1"}
    if args.site:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(args.site), os.environ.get("PYTHONPATH")]))
    spec, probe_out = out / "beside-spec.json", out / "probe"
    spec.unlink(missing_ok=True)
    webui = BesideForge(
        python,
        host_dir,
        checkpoint,
        out,
        "forge-beside",
        args.deps,
        flags,
        FTF_BESIDE_SPEC=str(spec),
        FTF_BESIDE_OUT=str(probe_out),
        FLOWCORE_CACHE=str(out / "flowcore-cache-host"),
        **env,
    )
    client = Client(webui, spec, probe_out)
    # Forge's API takes its own `hr_additional_modules` as None, and its hires pass then fails (`'Use same choices'
    # not in None`): the hires rows send the value its UI sends
    hires_fields = {"hr_additional_modules": ["Use same choices"]}
    host_rows = Host(host, client, peers, args.groups, controlnet_unit(webui.url), hires_fields)
    rows = run_and_clean_up(host_rows, host_dir, list(PEER_FOLDERS.values()))
    # the refiner row's server: no peers, no additional modules (Forge would load the last family's VAE and text
    # encoders beside SDXL), no live previews
    refiner_flags = ["--skip-install", "--ui-settings-file", str(settings_file(config, None, out))]

    def start(checkpoint: Path, name: str, **env: str) -> BesideForge:
        return BesideForge(python, host_dir, checkpoint, out, f"forge-{name}", args.deps, refiner_flags, **env)

    return rows + refiner_rows(args, host, list(PEER_FOLDERS.values()), start)


def main(argv: list[str] | None = None) -> int:
    parser = command_line("beside_forge", __doc__, PEER_FOLDERS, GROUPS)
    parser.add_argument(
        "--site", type=Path, metavar="DIR", help="packages the peers need, on PYTHONPATH for the server"
    )
    parser.add_argument("--checkpoint", type=Path, metavar="FILE", help="a random SD 1.5 checkpoint to reuse")
    return run_from_command_line(parser, argv, PEER_FOLDERS, GROUPS, check, "forge")


if __name__ == "__main__":
    sys.exit(main())
