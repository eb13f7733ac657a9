"""OpenAI's CLIP tokenizer, built offline from its merges file: what `flowcore.models.pipelines` falls back to when no
tokenizer is in the local Hugging Face cache (single-file checkpoints carry none), and what the tests use.

The merges file `bpe_simple_vocab_16e6.txt.gz` (MIT licence) ships inside the `open-clip-torch` wheel;
`python tools/fetch_clip_bpe.py` extracts it without installing the package. Nothing here downloads.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import gzip
import os
from pathlib import Path

from flowcore.encoders.layout import ROWS_PER_CHUNK
from flowcore.errors import ModelNotFoundError

BPE_FILENAME = "bpe_simple_vocab_16e6.txt.gz"
CLIP_VOCAB_SIZE = 49408  # 256 bytes + 256 bytes with </w> + 48894 merges + BOS + EOS
BOS_ID, EOS_ID = 49406, 49407
CLIP_TOKENIZER_REPO = "openai/clip-vit-large-patch14"  # where the hub cache keeps the real one


def find_clip_bpe() -> Path:
    """Locate the CLIP merges file: `$FLOWCORE_CLIP_BPE`, then `.cache/clip/` in the repo, then ~/.cache."""
    candidates = [
        os.environ.get("FLOWCORE_CLIP_BPE", ""),
        Path(__file__).resolve().parents[2] / ".cache" / "clip" / BPE_FILENAME,
        Path.home() / ".cache" / "flowcore" / "clip" / BPE_FILENAME,
    ]
    for candidate in candidates:
        if candidate and Path(candidate).is_file():
            return Path(candidate)
    raise ModelNotFoundError(
        f"The CLIP merges file `{BPE_FILENAME}` was not found. Run `python tools/fetch_clip_bpe.py` "
        "or set FLOWCORE_CLIP_BPE to its path."
    )


def _byte_characters() -> list[str]:
    """The 256 characters byte-level BPE uses for bytes, in CLIP's vocabulary order: the printable bytes
    as themselves first, then every other byte mapped to 256, 257, ... in byte order."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    others = [byte for byte in range(256) if byte not in printable]
    return [chr(byte) for byte in printable] + [chr(256 + index) for index in range(len(others))]


def _tokenizer_from_files(vocab: dict[str, int], merges: list[tuple[str, str]]):
    """transformers 4.x: write vocab.json and merges.txt to a temporary folder and load them."""
    import json
    import tempfile

    from transformers import CLIPTokenizerFast

    folder = Path(tempfile.mkdtemp(prefix="flowcore-clip-"))
    (folder / "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
    lines = ["#version: 0.2", *(" ".join(merge) for merge in merges)]
    (folder / "merges.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return CLIPTokenizerFast(vocab_file=str(folder / "vocab.json"), merges_file=str(folder / "merges.txt"))


@functools.lru_cache(maxsize=2)
def clip_tokenizer(bpe_path: str | None = None):
    """OpenAI's CLIP tokenizer (49408 tokens, BOS 49406, EOS/pad 49407) built offline from the BPE file."""
    from transformers import CLIPTokenizer

    path = Path(bpe_path) if bpe_path else find_clip_bpe()
    with gzip.open(path, "rt", encoding="utf-8") as file:
        lines = file.read().split("\n")
    merges = [tuple(line.split()) for line in lines[1 : 48894 + 1]]  # line 0 is a version header
    byte_chars = _byte_characters()
    tokens = byte_chars + [c + "</w>" for c in byte_chars] + ["".join(m) for m in merges]
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    vocab = {token: index for index, token in enumerate(tokens)}
    try:
        tokenizer = CLIPTokenizer(vocab=vocab, merges=merges)  # transformers >= 5 builds it in memory
    except TypeError:  # transformers 4.x (the WebUI's 4.30) reads files
        tokenizer = _tokenizer_from_files(vocab, merges)
    if len(tokenizer) != CLIP_VOCAB_SIZE:
        raise ModelNotFoundError(f"The CLIP tokenizer built from {path} has {len(tokenizer)} tokens, not 49408.")
    return tokenizer


def local_clip_tokenizer(pad_token: str | None = None):
    """The CLIP tokenizer (49408 tokens) from the local hub cache, else built from the CLIP merges file.

    `pad_token="!"` gives OpenCLIP's padding (SD 2, SDXL's second encoder); None keeps EOS padding.
    """
    from transformers import CLIPTokenizer

    tokenizer = None
    with contextlib.suppress(OSError, ValueError):
        tokenizer = CLIPTokenizer.from_pretrained(CLIP_TOKENIZER_REPO, local_files_only=True)
    if tokenizer is None or len(tokenizer) != CLIP_VOCAB_SIZE:  # offline, transformers may return a stub
        try:
            tokenizer = copy.deepcopy(clip_tokenizer())
        except ModelNotFoundError as error:
            raise ModelNotFoundError(
                f"No CLIP tokenizer on this machine. Download it once (`hf download {CLIP_TOKENIZER_REPO}`) or "
                f"extract the merges file with `python tools/fetch_clip_bpe.py`. ({error})"
            ) from error
    tokenizer.model_max_length = ROWS_PER_CHUNK
    if pad_token is not None:
        tokenizer.pad_token = pad_token
    return tokenizer
