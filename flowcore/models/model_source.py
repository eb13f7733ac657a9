"""Where a model comes from (a hub id in the local cache, a diffusers folder, a single-file checkpoint) and
whether the path can be read at all, judged before any weights load and without torch.

A `.safetensors` file is checked by its header (8-byte length, then JSON listing every tensor's byte range), so
an empty, truncated or foreign file is reported at once; a `.ckpt` must be a PyTorch zip archive (flowcore
loads checkpoints with `weights_only=True` and never unpickles a legacy file).
"""

from __future__ import annotations

import json
import os
import re
import struct
import zipfile
from dataclasses import dataclass
from pathlib import Path

from flowcore.errors import ModelFileError, ModelNotFoundError

SINGLE_FILE_SUFFIXES = (".safetensors", ".ckpt")
HUB_ID = re.compile(r"[\w.-]+/[\w.-]+")  # owner/name; anything else that does not exist is a wrong path
MAX_HEADER = 100 * 1024 * 1024  # safetensors' own limit on the JSON header
# The SD 1.5 weights moved from runwayml/ to this organisation in 2024; either copy in the cache will do.
DEFAULT_MODEL = "stable-diffusion-v1-5/stable-diffusion-v1-5"
DEFAULT_MODEL_ALIASES = (DEFAULT_MODEL, "runwayml/stable-diffusion-v1-5")

DOWNLOAD_HINT = (
    "Download it once, with the network on: for SD 1.5, `python3 tools/dev.py demo` fetches only the files "
    "flowcore uses (about 2 GB); for any model, `.venv/bin/hf download {repo} --include '*.json' '*.txt' "
    "'*fp16.safetensors'` (`hf` comes with huggingface_hub). Or pass a local model: "
    "`--model path/to/checkpoint.safetensors` (a WebUI checkpoint) or `--model path/to/diffusers-folder`."
)


@dataclass(frozen=True)
class ModelSource:
    """A resolved `--model`: `kind` is "hub" (an id to find in the local cache), "folder" or "file"."""

    kind: str
    location: str


def resolve_source(source: str | os.PathLike, name: str = "model") -> ModelSource:
    """What `source` names, or `ModelFileError` (naming `name`) where it is no readable model."""
    path = Path(source).expanduser()
    if path.is_file():
        check_single_file(path, name)
        return ModelSource("file", str(path))
    if path.is_dir():
        if not (path / "model_index.json").is_file():
            raise ModelFileError(
                f"`{name}` {str(source)!r} is a folder without model_index.json, so not a diffusers pipeline folder. "
                "Pass the folder that holds model_index.json, a .safetensors checkpoint, or a hub id."
            )
        return ModelSource("folder", str(path))
    text = str(source)
    if HUB_ID.fullmatch(text) and not text.endswith(SINGLE_FILE_SUFFIXES) and not text.startswith("."):
        return ModelSource("hub", text)
    raise ModelFileError(f"No model file or folder at `{source}` (`{name}`). Check the path.")


def check_single_file(path: Path, name: str = "model") -> None:
    """Raise `ModelFileError` unless `path` is a readable `.safetensors` or PyTorch zip `.ckpt`."""
    suffix = path.suffix.lower()
    shown = f"`{name}` {str(path)!r}"
    if suffix not in SINGLE_FILE_SUFFIXES:
        raise ModelFileError(
            f"{shown}: flowcore reads whole Stable Diffusion checkpoints as .safetensors or .ckpt files, diffusers "
            f"folders and hub ids, not {suffix or 'files without a suffix'}"
            + (" (a .bin holds one component: pass its diffusers folder)." if suffix == ".bin" else ".")
        )
    size = path.stat().st_size
    if size == 0:
        raise ModelFileError(f"{shown} is empty (0 bytes): the download or copy did not finish. Get the file again.")
    if suffix == ".ckpt":
        if not zipfile.is_zipfile(path):
            raise ModelFileError(
                f"{shown} is not a PyTorch zip checkpoint (a legacy pickle, or another kind of file); flowcore "
                "does not unpickle files. Convert it to .safetensors, or pass the .safetensors version."
            )
        return
    problem = _safetensors_problem(path, size)
    if problem:
        raise ModelFileError(f"{shown} is not a valid .safetensors file: {problem}. Get the file again.")


def _safetensors_problem(path: Path, size: int) -> str:
    """Why `path` is not a safetensors file, or "" when its header and size agree."""
    if size < 8:
        return f"it has {size} bytes, fewer than the 8 of a header length"
    with open(path, "rb") as file:
        (length,) = struct.unpack("<Q", file.read(8))
        if length > min(MAX_HEADER, size - 8):
            return "its header length is larger than the file (it is corrupt, or another kind of file)"
        try:
            header = json.loads(file.read(length))
        except (UnicodeDecodeError, json.JSONDecodeError):
            return "its header is not JSON (it is corrupt, or another kind of file)"
    if not isinstance(header, dict):
        return "its header is not a table of tensors"
    ends = [
        entry["data_offsets"][1] for key, entry in header.items() if key != "__metadata__" and "data_offsets" in entry
    ]
    if not ends:
        return "it holds no tensors"
    expected = 8 + length + max(ends)
    if expected > size:
        return f"it is truncated ({expected - size} bytes missing)"
    return ""


def check_config_folder(config: str | os.PathLike, name: str = "config") -> Path:
    """`config` as a path, or `ModelFileError` unless it is a diffusers folder (with model_index.json)."""
    folder = Path(config).expanduser()
    if not (folder / "model_index.json").is_file():
        raise ModelFileError(
            f"`{name}` must be a diffusers folder with a model_index.json; {str(config)!r} is not. Pass the folder "
            "of a diffusers model of the checkpoint's architecture."
        )
    return folder


def default_source() -> str:
    """The first SD 1.5 copy in the local hub cache (either repo name), else the canonical id (which then fails
    with a download hint)."""
    from huggingface_hub import try_to_load_from_cache

    for repo in DEFAULT_MODEL_ALIASES:
        if isinstance(try_to_load_from_cache(repo, "model_index.json"), str):
            return repo
    return DEFAULT_MODEL


def folder_of(source: ModelSource) -> Path:
    """The local folder of a diffusers folder or of a hub id's cached snapshot (only what analyze needs)."""
    if source.kind == "folder":
        return Path(source.location)
    from huggingface_hub import try_to_load_from_cache

    # The snapshot folder of the cached model_index.json: a partial snapshot (only the files flowcore uses, as
    # the demo fetches them) is fine, where `snapshot_download(local_files_only=True)` would refuse it.
    index = try_to_load_from_cache(source.location, "model_index.json")
    if not isinstance(index, str):
        raise ModelNotFoundError(
            f"The model `{source.location}` is not in the local Hugging Face cache and flowcore never downloads. "
            + DOWNLOAD_HINT.format(repo=source.location)
        )
    return Path(index).parent
