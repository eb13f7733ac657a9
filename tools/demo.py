"""Main job: `flowcore compare` on the paper's zebra/crosswalk prompt with Stable Diffusion 1.5.

    python3 tools/dev.py demo                                  # SD 1.5 from the local cache, fetched if missing
    python3 tools/dev.py demo --model path/to/v1-5.safetensors # a WebUI checkpoint instead (no download)
    python3 tools/dev.py demo --device cuda --steps 30         # any other `flowcore compare` option
    python3 tools/dev.py demo "a red car, ~blue bicycle~"      # a prompt of your own (markers allowed)

On the paper's prompt, where automatic detection patches nothing, the demo says so before generating and patches
the item the paper patched, `~standing zebra~`, so that the two images show the fix (`--otherwise-patch`).

Writes `flowcore-out/<prompt>/compare.png` (original and patched image, same seed), `report.html` and
`report.json`. The demo is the only part of this repository that downloads, and only when SD 1.5 is not in the
local Hugging Face cache and no `--model` is given: just the files `compare` uses (fp16 weights of the text
encoder, UNet and VAE, configs, tokenizer; about 2 GB of the repository's 40+ GB), after saying their size,
with a progress bar. Without the network it says how to get the model and exits with status 1; `flowcore`
itself then loads everything offline.
"""

from __future__ import annotations

import fnmatch
import sys

PROMPT = "a crosswalk next to a bus station with a standing zebra"
PAPER_ITEM = "standing zebra"  # the item the paper patched in PROMPT (encoded alone "with its own modifiers")
REPO = "stable-diffusion-v1-5/stable-diffusion-v1-5"
# What `flowcore compare` reads from the repository: nothing else is fetched.
ALLOW_PATTERNS = [
    "model_index.json",
    "scheduler/scheduler_config.json",
    "feature_extractor/preprocessor_config.json",
    "tokenizer/*",
    "text_encoder/config.json",
    "text_encoder/model.fp16.safetensors",
    "unet/config.json",
    "unet/diffusion_pytorch_model.fp16.safetensors",
    "vae/config.json",
    "vae/diffusion_pytorch_model.fp16.safetensors",
]


def is_cached(repo: str = REPO) -> bool:
    """Whether the repository's model_index.json and fp16 UNet are already in the local cache."""
    from huggingface_hub import try_to_load_from_cache

    wanted = ("model_index.json", "unet/diffusion_pytorch_model.fp16.safetensors")
    full = ("model_index.json", "unet/diffusion_pytorch_model.safetensors")
    return any(all(isinstance(try_to_load_from_cache(repo, name), str) for name in names) for names in (wanted, full))


def files_to_fetch(repo: str = REPO) -> list[tuple[str, int]]:
    """The repository's files that `ALLOW_PATTERNS` selects, with their sizes in bytes (one hub API call)."""
    from huggingface_hub import HfApi

    info = HfApi().model_info(repo, files_metadata=True, timeout=20)
    return [
        (sibling.rfilename, int(sibling.size or 0))
        for sibling in info.siblings or []
        if any(fnmatch.fnmatch(sibling.rfilename, pattern) for pattern in ALLOW_PATTERNS)
    ]


def fetch(repo: str = REPO) -> str | None:
    """Download the files the demo uses, after printing their size; the snapshot folder, or None (with a
    message on stderr) where the hub cannot be reached."""
    from huggingface_hub import constants, snapshot_download

    if constants.HF_HUB_OFFLINE:
        print(f"demo: {repo} is not in the local Hugging Face cache and HF_HUB_OFFLINE is set.", file=sys.stderr)
        return None
    try:
        files = files_to_fetch(repo)
    except Exception as error:  # noqa: BLE001 - any network or hub error: say it and stop
        print(f"demo: cannot reach the hub at {constants.ENDPOINT} to fetch {repo}: {error}", file=sys.stderr)
        return None
    total = sum(size for _, size in files)
    print(
        f"Downloading {len(files)} files of {repo} ({total / 1e9:.2f} GB: fp16 weights, configs, tokenizer) "
        f"into {constants.HF_HUB_CACHE} ...",
        flush=True,
    )
    return snapshot_download(repo, allow_patterns=ALLOW_PATTERNS)


def split_prompt(argv: list[str]) -> tuple[str | None, list[str]]:
    """The prompt (the first argument that is neither an option of `flowcore compare` nor an option's value;
    None where there is none) and every other argument, in order."""
    import argparse

    from flowcore.frontends.cli import build_parser

    commands = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    takes_value = {
        option
        for action in commands.choices["compare"]._actions
        if action.nargs != 0
        for option in action.option_strings
    }
    index = 0
    while index < len(argv):
        if not argv[index].startswith("-") or argv[index] == "-":
            return argv[index], argv[:index] + argv[index + 1 :]
        index += 2 if argv[index] in takes_value else 1
    return None, argv


def main(argv: list[str]) -> int:
    from flowcore.frontends.cli import main as flowcore_main

    prompt, options = split_prompt(argv)
    if prompt is None:  # the paper's prompt: where nothing is flagged, patch what the paper patched
        prompt = PROMPT
        if not any(arg.startswith("--otherwise-patch") for arg in options):
            options = [*options, "--otherwise-patch", PAPER_ITEM]
    wants_default = not any(arg == "--model" or arg.startswith("--model=") for arg in argv)
    if wants_default and not is_cached() and fetch() is None:
        print(
            "demo: get SD 1.5 once with the network on (`python3 tools/dev.py demo` fetches only what it uses), "
            "or pass a checkpoint you have: `python3 tools/dev.py demo --model path/to/v1-5.safetensors`.",
            file=sys.stderr,
        )
        return 1
    return flowcore_main(["compare", prompt, *options])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
