"""Fetch OpenAI's CLIP BPE merges file (MIT licence) for tests, without installing anything.

The file ships inside the `open-clip-torch` wheel on the package index; we download that wheel with
`--no-deps`, take the one file out of it and leave the package uninstalled. The tokenizer built from it
(`flowcore.testing.clip_tokenizer`) has OpenAI's 49408-token vocabulary and ids.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

WHEEL = "open-clip-torch==3.3.0"
MEMBER = "open_clip/bpe_simple_vocab_16e6.txt.gz"
DEFAULT_TARGET = Path(__file__).resolve().parent.parent / ".cache" / "clip" / "bpe_simple_vocab_16e6.txt.gz"


def fetch(target: Path = DEFAULT_TARGET) -> Path:
    """Download the wheel into a temporary folder and extract the BPE file to `target`."""
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", WHEEL, "-d", tmp],
            check=True,
        )
        (wheel,) = Path(tmp).glob("*.whl")
        with zipfile.ZipFile(wheel) as archive:
            target.write_bytes(archive.read(MEMBER))
    return target


if __name__ == "__main__":
    path = fetch(Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_TARGET)
    print(f"CLIP merges file for the tests' tokenizer: {path}")
