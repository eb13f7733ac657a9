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

from flowcore.errors import ModelFileError

SINGLE_FILE_SUFFIXES = (".safetensors", ".ckpt")
HUB_ID = re.compile(r"[\w.-]+/[\w.-]+")  # owner/name; anything else that does not exist is a wrong path
MAX_HEADER = 100 * 1024 * 1024  # safetensors' own limit on the JSON header


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
