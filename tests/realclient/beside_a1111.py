"""Follow the Flow beside other extensions in a real AUTOMATIC1111 WebUI v1.10.1 (issue 19): one table of rows.

    python3 tests/realclient/beside_a1111.py --host-dir /work/hosts/a1111 --deps /work/hosts/a1111-deps \
        --python /work/hosts/a1111/venv/bin/python --rp DIR --dp DIR --cutoff DIR --adetailer DIR --controlnet DIR \
        [--models DIR] [--sdxl FILE] [--rows LIST] [--only LIST] [--extension-from DIR]

`--rp`, `--dp`, `--cutoff`, `--adetailer`, `--controlnet`: an exported tree of hako-mikan/sd-webui-regional-prompter,
adieyal/sd-dynamic-prompts, hnmr293/sd-webui-cutoff, Bing-su/adetailer, Mikubill/sd-webui-controlnet (none of their
code is committed here); a peer left out is not placed. A `.peer-commit` file in a tree names its commit for the
table. Each tree is copied into `<host-dir>/extensions/` for the run and removed after it, with this checkout (as
`host_a1111.py` installs it; `--extension-from DIR`: the same files from another tree, to try a fix) and the probe
`beside_probe/` (every sampling pass's cond against the WebUI's own encodes). One WebUI server runs all rows; the
peers stay off unless a row turns them on. Outputs in `<host-dir>/realclient-beside-out/`.

The rows are `beside_common.py`'s (the same in Forge, `beside_forge.py`), and here also the SDXL refiner switch
(`refiner`, with `--sdxl`: another server). ADetailer's detector and ControlNet's model are hub downloads: random ones
are built into `--models` (a YOLOv8n from ultralytics' own yaml, needing ultralytics in the WebUI's venv; a
`control_v11p_sd15` from sd-webui-controlnet's own config). With either placed, the WebUI starts with `--skip-install`
(ADetailer's `install.py` would pull mediapipe, which needs a newer protobuf than the WebUI pins).
Exit status as `run.py`'s: 0 all passed, 1 a row failed.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from beside_common import (  # noqa: E402
    AD_MODEL,
    CN_MODEL,
    FEATURES,
    YOLO_BUILDER,
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
from host_a1111 import (  # noqa: E402
    FLAGS,
    HUB_CACHE,
    WebUI,
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
    free_port,
    host_env,
    link,
    random_checkpoint,
    run,
)

PEER_FOLDERS = {
    "rp": "sd-webui-regional-prompter",
    "dp": "sd-dynamic-prompts",
    "cutoff": "sd-webui-cutoff",
    "adetailer": "adetailer",
    "controlnet": "sd-webui-controlnet",
}
GROUPS = (*PEER_FOLDERS, *FEATURES)  # row groups (`--rows`): the peers' own, and the WebUI's features (no peer)
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


class BesideWebUI(WebUI):
    """`host_a1111.WebUI` with extra launch flags (its `__init__` takes none)."""

    def __init__(self, python, host_dir, checkpoint, out, name, flags, **env) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.python, self.out, self.name, self.count = python, out, name, 0
        self.switch_to = None  # `WebUI.wait_ready` reads it: no checkpoint switch here
        command = [python, "launch.py", *FLAGS, "--ckpt", str(checkpoint), "--port", str(self.port), *flags]
        self.server = Server(command, host_dir, launcher_env(out, **env), out / f"{name}.log")


def controlnet_unit(init: str) -> dict:
    """One sd-webui-controlnet unit as its API takes it: the random model, no preprocessor, `init` as control."""
    return {
        "enabled": True,
        "module": "none",
        "model": CN_MODEL,
        "image": init,
        "weight": 1.0,
        "resize_mode": "Crop and Resize",
        "control_mode": "Balanced",
        "pixel_perfect": False,
    }


def check(args) -> list[Row]:
    host_dir: Path = args.host_dir
    host = version(host_dir)
    out = output_folder(host_dir)
    log = out / "setup.log"
    remove_copies(host_dir)
    remove_peers(host_dir / "extensions", list(PEER_FOLDERS.values()))
    relaxed_requirements(host_dir, out)
    place_repositories(host_dir, args.deps, log)
    python = args.python
    run([python, "-c", HUB_CACHE, str(out / "hf"), str(REPO)], log, env=host_env())
    checkpoint, lora = random_checkpoint(python, "sd15", host_dir / "realclient-models", log)
    checkpoint = link(checkpoint, host_dir / "models" / "Stable-diffusion")
    extensions = host_dir / "extensions"
    install_ours(args.extension_from or REPO, extensions)
    trees = {key: getattr(args, key) for key in PEER_FOLDERS if getattr(args, key) and key in args.groups}
    peers = place_peers(trees, PEER_FOLDERS, extensions)
    spec, probe_out = out / "beside-spec.json", out / "probe"
    spec.unlink(missing_ok=True)
    flags = []
    if "dp" in peers:
        config = json.loads((host_dir / "config.json").read_text(encoding="utf-8"))
        flags += ["--ui-settings-file", str(settings_file(config, args.dp, out))]
    if "styles" in args.groups:
        flags += ["--styles-file", str(styles_file(out))]
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
    rows = run_and_clean_up(
        Host(host, client, peers, args.groups, controlnet_unit), host_dir, list(PEER_FOLDERS.values())
    )

    def start(checkpoint: Path, name: str, **env: str) -> BesideWebUI:  # the refiner row's server: no peers
        return BesideWebUI(python, host_dir, checkpoint, out, f"webui-{name}", [], **env)

    return rows + refiner_rows(args, host, list(PEER_FOLDERS.values()), start)


def main(argv: list[str] | None = None) -> int:
    parser = command_line("beside_a1111", __doc__, PEER_FOLDERS, GROUPS)
    parser.add_argument(
        "--extension-from",
        type=Path,
        metavar="DIR",
        help="install the extension from this tree (a copy of the checkout with a fix applied)",
    )
    return run_from_command_line(parser, argv, PEER_FOLDERS, GROUPS, check, "a1111")


if __name__ == "__main__":
    sys.exit(main())
