"""The families conditioned by a causal language model (Lumina 2, Qwen-Image, HiDream) as the split files their
loaders read (ComfyUI's `UNETLoader`, `CLIPLoader`, `QuadrupleCLIPLoader`): the language model at full size with
the released files' key names and dtypes, the diffusion model shallow, the 16-channel autoencoder (Lumina 2,
HiDream), and a stand-in tokenizer where the real one cannot be had offline.

| family | diffusion model (fp16, shallow) | language model file (in `<out>/../text_encoders/`) |
|---|---|---|
| lumina2 | NextDiT (width 2304, 2+2 refiners), 1 layer | `gemma_2_2b_fp16.safetensors`: Gemma 2 2B, fp16 |
| qwen-image | MMDiT (width 3072), 1 block | `qwen_2.5_vl_7b_fp8_scaled.safetensors`: Qwen2.5-VL 7B, scaled fp8 |
| hidream | HiDream I1 (width 2560), 1 double, 1 single block | `llama_3.1_8b_instruct_fp8_scaled.safetensors` |

Gemma's file carries its tokenizer (`spiece_model`); Qwen's holds the vision tower (`visual.*`) too; HiDream also
reads clip_l, clip_g and t5xxl (`text_encoders.py`, shared with SD 3.5 and Flux).

Scaled fp8 is the layout of the fp8 files ComfyUI's text encoder loaders take as such (`comfy/ops.py`'s scaled fp8
operations): every linear weight in `float8_e4m3fn` with a float32 `<name>.scale_weight` beside it, the embedding,
norms and biases in bf16, and an empty `scaled_fp8` tensor whose dtype names the fp8 format. Gemma 2 is released
for Lumina 2 in fp16; its RMS norms store `weight - 1` (zeros here).

Depth: ComfyUI reads the depth of Lumina 2 (`layers.N`) and Qwen-Image (`transformer_blocks.N`) from the keys; its
HiDream configuration is fixed (16 double, 32 single blocks, 49 caption projections) whatever the file holds, so
the shallow HiDream file is classified as HiDream but cannot be sampled.

Tokenizers (labelled stand-ins, built from the Qwen2 byte-level BPE files that ComfyUI ships,
`comfy/text_encoders/qwen25_tokenizer`, given as `tokenizer_source`):
- Gemma 2's SentencePiece model lives in the checkpoint (`spiece_model`, its serialized bytes as uint8). The
  stand-in is a unigram model of Gemma's 256000 pieces and special ids (pad 0, eos 1, bos 2, unk 3), byte fallback,
  its word pieces taken from Qwen2's vocabulary, the rest unused pieces.
- Llama 3's `tokenizer.json` is missing from the ComfyUI source that can be fetched here. The stand-in
  (`llama3_tokenizer_standin/tokenizer.json`) keeps Qwen2's first 128000 byte-level BPE tokens (its merges are in
  id order, so the cut is a complete BPE) and adds Llama 3's 256 special tokens at 128000-128255.

Files are written one tensor at a time (`write_streaming`), in row chunks, so the peak memory stays under a GB.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from checkpoints.common import STD, Tensor, linear, write_checkpoint
from checkpoints.dit import vae16
from checkpoints.text_encoders import write_text_encoders

CHUNK_VALUES = 1 << 26  # values drawn at a time (256 MB of float32)


@dataclass(frozen=True)
class LanguageModel:
    """A decoder-only transformer's shapes (the published configurations)."""

    vocab: int
    width: int
    ff: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    qkv_bias: bool = False
    gemma_norms: bool = False  # Gemma 2: four norms a layer, stored as `weight - 1`


GEMMA2_2B = LanguageModel(256000, 2304, 9216, 26, 8, 4, 256, gemma_norms=True)
QWEN25_VL_7B = LanguageModel(152064, 3584, 18944, 28, 28, 4, 128, qkv_bias=True)
LLAMA31_8B = LanguageModel(128256, 4096, 14336, 32, 32, 8, 128)
QWEN_VISION_WIDTH, QWEN_VISION_FF, QWEN_VISION_BLOCKS = 1280, 3420, 32


def language_model(spec: LanguageModel, layers: int | None = None) -> Iterator[Tensor]:
    """The model in transformers names (`model.embed_tokens`, `model.layers.N.*`, `model.norm`), no `lm_head`."""
    norm_kind = "bias" if spec.gemma_norms else "norm"  # Gemma's stored zeros mean a scale of 1
    yield Tensor("model.embed_tokens.weight", (spec.vocab, spec.width))
    for layer in range(spec.layers if layers is None else layers):
        key = f"model.layers.{layer}"
        yield from linear(f"{key}.self_attn.q_proj", spec.heads * spec.head_dim, spec.width, spec.qkv_bias)
        yield from linear(f"{key}.self_attn.k_proj", spec.kv_heads * spec.head_dim, spec.width, spec.qkv_bias)
        yield from linear(f"{key}.self_attn.v_proj", spec.kv_heads * spec.head_dim, spec.width, spec.qkv_bias)
        yield from linear(f"{key}.self_attn.o_proj", spec.width, spec.heads * spec.head_dim, bias=False)
        yield from linear(f"{key}.mlp.gate_proj", spec.ff, spec.width, bias=False)
        yield from linear(f"{key}.mlp.up_proj", spec.ff, spec.width, bias=False)
        yield from linear(f"{key}.mlp.down_proj", spec.width, spec.ff, bias=False)
        norms = ["input_layernorm", "post_attention_layernorm"]
        if spec.gemma_norms:
            norms += ["pre_feedforward_layernorm", "post_feedforward_layernorm"]
        for name in norms:
            yield Tensor(f"{key}.{name}.weight", (spec.width,), norm_kind)
    yield Tensor("model.norm.weight", (spec.width,), norm_kind)


def qwen_vision(blocks: int = QWEN_VISION_BLOCKS) -> Iterator[Tensor]:
    """Qwen2.5-VL's vision tower (`visual.*`): a 3-D patch embedding (2 frames of 14x14), `blocks` blocks with a
    gated MLP, and the merger into the language model's width."""
    width, ff = QWEN_VISION_WIDTH, QWEN_VISION_FF
    yield Tensor("visual.patch_embed.proj.weight", (width, 3, 2, 14, 14))
    for block in range(blocks):
        key = f"visual.blocks.{block}"
        yield Tensor(f"{key}.norm1.weight", (width,), "norm")
        yield Tensor(f"{key}.norm2.weight", (width,), "norm")
        yield from linear(f"{key}.attn.qkv", 3 * width, width)
        yield from linear(f"{key}.attn.proj", width, width)
        yield from linear(f"{key}.mlp.gate_proj", ff, width)
        yield from linear(f"{key}.mlp.up_proj", ff, width)
        yield from linear(f"{key}.mlp.down_proj", width, ff)
    yield Tensor("visual.merger.ln_q.weight", (width,), "norm")
    yield from linear("visual.merger.mlp.0", 4 * width, 4 * width)
    yield from linear("visual.merger.mlp.2", QWEN25_VL_7B.width, 4 * width)


def qwen25_vl_7b(layers: int | None = None, vision_blocks: int = QWEN_VISION_BLOCKS) -> list[Tensor]:
    """Qwen2.5-VL 7B Instruct as Qwen-Image's text encoder file holds it: the language model and the vision tower."""
    return [*language_model(QWEN25_VL_7B, layers), *qwen_vision(vision_blocks)]


# --- diffusion models ----------------------------------------------------------------------------------------------

LUMINA_WIDTH, LUMINA_FF, LUMINA_HEADS, LUMINA_KV_HEADS, LUMINA_T = 2304, 9216, 24, 8, 1024
QWEN_IMAGE_WIDTH, QWEN_IMAGE_HEAD = 3072, 128
HIDREAM_WIDTH, HIDREAM_EXPERT_FF, HIDREAM_SHARED_FF, HIDREAM_EXPERTS = 2560, 6912, 3584, 4


def _lumina_block(key: str, modulated: bool) -> Iterator[Tensor]:
    """A NextDiT block: fused qkv (24 query and 8 key/value heads of 96), RMS q/k norms, SwiGLU, sandwich norms;
    the context refiner's blocks have no modulation."""
    head = LUMINA_WIDTH // LUMINA_HEADS
    yield from linear(f"{key}.attention.qkv", (LUMINA_HEADS + 2 * LUMINA_KV_HEADS) * head, LUMINA_WIDTH, bias=False)
    yield from linear(f"{key}.attention.out", LUMINA_WIDTH, LUMINA_WIDTH, bias=False)
    yield Tensor(f"{key}.attention.q_norm.weight", (head,), "norm")
    yield Tensor(f"{key}.attention.k_norm.weight", (head,), "norm")
    yield from linear(f"{key}.feed_forward.w1", LUMINA_FF, LUMINA_WIDTH, bias=False)
    yield from linear(f"{key}.feed_forward.w2", LUMINA_WIDTH, LUMINA_FF, bias=False)
    yield from linear(f"{key}.feed_forward.w3", LUMINA_FF, LUMINA_WIDTH, bias=False)
    for name in ("attention_norm1", "ffn_norm1", "attention_norm2", "ffn_norm2"):
        yield Tensor(f"{key}.{name}.weight", (LUMINA_WIDTH,), "norm")
    if modulated:
        yield from linear(f"{key}.adaLN_modulation.1", 4 * LUMINA_WIDTH, LUMINA_T)


def lumina2(layers: int = 1, caption_width: int = GEMMA2_2B.width) -> Iterator[Tensor]:
    """Lumina Image 2.0's NextDiT at `layers` main layers (the 2 noise and 2 context refiners kept)."""
    yield from linear("x_embedder", LUMINA_WIDTH, 2 * 2 * 16)
    for block in range(2):
        yield from _lumina_block(f"noise_refiner.{block}", modulated=True)
    for block in range(2):
        yield from _lumina_block(f"context_refiner.{block}", modulated=False)
    yield from linear("t_embedder.mlp.0", LUMINA_T, 256)
    yield from linear("t_embedder.mlp.2", LUMINA_T, LUMINA_T)
    yield Tensor("cap_embedder.0.weight", (caption_width,), "norm")
    yield from linear("cap_embedder.1", LUMINA_WIDTH, caption_width)
    for layer in range(layers):
        yield from _lumina_block(f"layers.{layer}", modulated=True)
    yield Tensor("norm_final.weight", (LUMINA_WIDTH,), "norm")
    yield from linear("final_layer.linear", 2 * 2 * 16, LUMINA_WIDTH)
    yield from linear("final_layer.adaLN_modulation.1", LUMINA_WIDTH, LUMINA_T)


def qwen_image(blocks: int = 1) -> Iterator[Tensor]:
    """Qwen-Image's MMDiT (diffusers names) at `blocks` dual-stream blocks."""
    width = QWEN_IMAGE_WIDTH
    yield from linear("time_text_embed.timestep_embedder.linear_1", width, 256)
    yield from linear("time_text_embed.timestep_embedder.linear_2", width, width)
    yield Tensor("txt_norm.weight", (QWEN25_VL_7B.width,), "norm")
    yield from linear("img_in", width, 64)
    yield from linear("txt_in", width, QWEN25_VL_7B.width)
    for block in range(blocks):
        key = f"transformer_blocks.{block}"
        for stream in ("img", "txt"):
            yield from linear(f"{key}.{stream}_mod.1", 6 * width, width)
            yield from linear(f"{key}.{stream}_mlp.net.0.proj", 4 * width, width)
            yield from linear(f"{key}.{stream}_mlp.net.2", width, 4 * width)
        for name in ("norm_q", "norm_k", "norm_added_q", "norm_added_k"):
            yield Tensor(f"{key}.attn.{name}.weight", (QWEN_IMAGE_HEAD,), "norm")
        for name in ("to_q", "to_k", "to_v", "add_q_proj", "add_k_proj", "add_v_proj", "to_out.0", "to_add_out"):
            yield from linear(f"{key}.attn.{name}", width, width)
    yield from linear("norm_out.linear", 2 * width, width)
    yield from linear("proj_out", 64, width)


def _swiglu(key: str, ff: int) -> Iterator[Tensor]:
    yield from linear(f"{key}.w1", ff, HIDREAM_WIDTH, bias=False)
    yield from linear(f"{key}.w2", HIDREAM_WIDTH, ff, bias=False)
    yield from linear(f"{key}.w3", ff, HIDREAM_WIDTH, bias=False)


def _hidream_block(key: str, double: bool) -> Iterator[Tensor]:
    """A HiDream block: adaLN (12 or 6 chunks), attention with RMS q/k norms (and the text stream's `_t` copies in
    a double block), a mixture of 4 experts plus a shared one on the image stream, SwiGLU on the text stream."""
    width = HIDREAM_WIDTH
    yield from linear(f"{key}.adaLN_modulation.1", (12 if double else 6) * width, width)
    for suffix in ("", "_t") if double else ("",):
        for name in ("to_q", "to_k", "to_v", "to_out"):
            yield from linear(f"{key}.attn1.{name}{suffix}", width, width)
        yield Tensor(f"{key}.attn1.q_rms_norm{suffix}.weight", (width,), "norm")
        yield Tensor(f"{key}.attn1.k_rms_norm{suffix}.weight", (width,), "norm")
    yield from _swiglu(f"{key}.ff_i.shared_experts", HIDREAM_SHARED_FF)
    for expert in range(HIDREAM_EXPERTS):
        yield from _swiglu(f"{key}.ff_i.experts.{expert}", HIDREAM_EXPERT_FF)
    yield Tensor(f"{key}.ff_i.gate.weight", (HIDREAM_EXPERTS, width))
    if double:
        yield from _swiglu(f"{key}.ff_t", HIDREAM_EXPERT_FF)


def hidream(double: int = 1, single: int = 1) -> Iterator[Tensor]:
    """HiDream I1 at `double` double-stream and `single` single-stream blocks, with a caption projection a block
    plus one (T5's)."""
    width = HIDREAM_WIDTH
    yield from linear("t_embedder.timestep_embedder.linear_1", width, 256)
    yield from linear("t_embedder.timestep_embedder.linear_2", width, width)
    yield from linear("p_embedder.pooled_embedder.linear_1", width, 768 + 1280)
    yield from linear("p_embedder.pooled_embedder.linear_2", width, width)
    yield from linear("x_embedder.proj", width, 2 * 2 * 16)
    for block in range(double):
        yield from _hidream_block(f"double_stream_blocks.{block}.block", double=True)
    for block in range(single):
        yield from _hidream_block(f"single_stream_blocks.{block}.block", double=False)
    yield from linear("final_layer.linear", 2 * 2 * 16, width)
    yield from linear("final_layer.adaLN_modulation.1", 2 * width, width)
    for projection in range(double + single + 1):
        yield Tensor(f"caption_projection.{projection}.linear.weight", (width, 4096))


# --- writing one tensor at a time ----------------------------------------------------------------------------------

SAFETENSORS_DTYPES = {"float16": "F16", "bfloat16": "BF16", "float32": "F32", "float8_e4m3fn": "F8_E4M3", "uint8": "U8"}
SIZES = {"float16": 2, "bfloat16": 2, "float32": 4, "float8_e4m3fn": 1, "uint8": 1}


@dataclass(frozen=True)
class Entry:
    """One tensor of a file being written: its layout entry, the dtype on disk and the std it is drawn with
    (`raw`: fixed bytes, e.g. the tokenizer model)."""

    tensor: Tensor
    dtype: str
    std: float = STD
    raw: bytes | None = None


def plan(layout: list[Tensor], dtype: str, scaled_fp8: bool = False) -> list[Entry]:
    """The entries of a file in `dtype`; with `scaled_fp8`, every 2-D linear weight of the layers (not the
    embedding) in fp8 drawn from N(0, 1) with a `scale_weight` of `STD` beside it, and the `scaled_fp8` marker."""
    entries = []
    for tensor in layout:
        fp8 = scaled_fp8 and len(tensor.shape) == 2 and tensor.kind == "random" and "embed_tokens" not in tensor.key
        if fp8:
            entries.append(Entry(tensor, "float8_e4m3fn", std=1.0))
            scale = Tensor(tensor.key.removesuffix(".weight") + ".scale_weight", (), "scale")
            entries.append(Entry(scale, "float32"))
        else:
            entries.append(Entry(tensor, dtype))
    if scaled_fp8:
        entries.append(Entry(Tensor("scaled_fp8", (0,), "marker"), "float8_e4m3fn"))
    return entries


def _count(shape: tuple[int, ...]) -> int:
    count = 1
    for size in shape:
        count *= size
    return count


def _chunks(entry: Entry, generator) -> Iterator[bytes]:
    """The bytes of one entry, drawn in chunks of rows (see `common.fill` for the kinds)."""
    import torch

    tensor, dtype = entry.tensor, getattr(torch, entry.dtype)
    if entry.raw is not None:
        yield entry.raw
        return
    if tensor.kind == "marker":
        return
    if tensor.kind == "scale":
        yield torch.tensor([STD], dtype=torch.float32).numpy().tobytes()
        return
    total = _count(tensor.shape)
    if tensor.kind in ("norm", "bias"):
        value = torch.full((total,), 1.0 if tensor.kind == "norm" else 0.0, dtype=dtype)
        yield value.view(torch.uint8).numpy().tobytes()
        return
    row = _count(tensor.shape[1:]) if len(tensor.shape) > 1 else total
    rows_at_once = max(1, CHUNK_VALUES // row)
    for start in range(0, total // row, rows_at_once):
        rows = min(rows_at_once, total // row - start)
        value = (torch.randn(rows * row, generator=generator) * entry.std).to(dtype)
        yield value.view(torch.uint8).numpy().tobytes()


def write_streaming(entries: list[Entry], path: Path, seed: int) -> Path:
    """A safetensors file written tensor by tensor: the header from the shapes first, then each tensor's bytes."""
    import torch

    header, offset = {}, 0
    for entry in entries:
        size = len(entry.raw) if entry.raw is not None else _count(entry.tensor.shape) * SIZES[entry.dtype]
        shape = [size] if entry.raw is not None else list(entry.tensor.shape)
        header[entry.tensor.key] = {
            "dtype": SAFETENSORS_DTYPES[entry.dtype],
            "shape": shape,
            "data_offsets": [offset, offset + size],
        }
        offset += size
    header["__metadata__"] = {"format": "pt"}
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    generator = torch.Generator().manual_seed(seed)
    partial = path.with_suffix(".partial")
    with open(partial, "wb") as out:
        out.write(struct.pack("<Q", len(text)) + text)
        for entry in entries:
            for chunk in _chunks(entry, generator):
                out.write(chunk)
    if partial.stat().st_size != 8 + len(text) + offset:
        raise RuntimeError(f"{partial}: {partial.stat().st_size} bytes written, {8 + len(text) + offset} planned")
    partial.rename(path)
    return path


# --- stand-in tokenizers -------------------------------------------------------------------------------------------

GEMMA_SPECIALS = (("<pad>", 3), ("<eos>", 3), ("<bos>", 3), ("<unk>", 2))  # (piece, sentencepiece type)
LLAMA3_REGULAR = 128000
LLAMA3_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|"
    r"\s+(?!\S)|\s+"
)


def _byte_decoder() -> dict[str, int]:
    """GPT-2's byte-level alphabet, reversed: the character that stands for each byte."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    printable += list(range(ord("®"), ord("ÿ") + 1))
    codes, extra = printable[:], 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            codes.append(256 + extra)
            extra += 1
    return {chr(code): byte for byte, code in zip(printable, codes)}


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        low, value = value & 0x7F, value >> 7
        out.append(low | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _field(number: int, wire: int, payload: bytes) -> bytes:
    """One protobuf field: the tag, then a varint value (wire 0), 4 bytes (wire 5) or length-delimited (wire 2)."""
    tag = _varint(number << 3 | wire)
    return tag + (_varint(len(payload)) + payload if wire == 2 else payload)


def gemma_spiece_standin(qwen_vocab: dict[str, int], size: int = GEMMA2_2B.vocab) -> bytes:
    """A serialized SentencePiece unigram model of `size` pieces with Gemma's special ids (pad 0, eos 1, bos 2,
    unk 3), byte fallback, whitespace as "▁" and no dummy prefix (as Gemma's), its word pieces the decoded tokens
    of Qwen2's vocabulary (`qwen_vocab`, vocab.json), every piece scored alike (fewest pieces win), the remaining
    ids unused pieces. A stand-in: Gemma's own model is not available offline."""
    decoder = _byte_decoder()
    pieces: list[tuple[str, float, int]] = [(piece, 0.0, kind) for piece, kind in GEMMA_SPECIALS]
    pieces += [(f"<0x{byte:02X}>", 0.0, 6) for byte in range(256)]
    seen = {piece for piece, _, _ in pieces}
    for token, _ in sorted(qwen_vocab.items(), key=lambda item: item[1]):
        try:
            text = bytes(decoder[char] for char in token).decode("utf-8")
        except (KeyError, UnicodeDecodeError):
            continue  # a token that is part of a multi-byte character: the byte pieces cover it
        piece = text.replace(" ", "▁")
        if piece and "\0" not in piece and piece not in seen and len(pieces) < size:
            seen.add(piece)
            pieces.append((piece, -1.0 - 0.001 * len(piece) ** 0.5, 1))
    pieces += [(f"<unused{n}>", 0.0, 5) for n in range(size - len(pieces))]
    proto = b"".join(
        _field(
            1, 2, _field(1, 2, piece.encode()) + _field(2, 5, struct.pack("<f", score)) + _field(3, 0, _varint(kind))
        )
        for piece, score, kind in pieces
    )
    trainer = _field(3, 0, _varint(1)) + _field(4, 0, _varint(size)) + _field(35, 0, _varint(1))  # unigram, bytes
    trainer += _field(40, 0, _varint(3)) + _field(41, 0, _varint(2)) + _field(42, 0, _varint(1))  # unk, bos, eos
    trainer += _field(43, 0, _varint(0)) + _field(46, 2, b"<bos>") + _field(47, 2, b"<eos>")  # pad; Gemma's names
    normalizer = _field(1, 2, b"identity") + _field(3, 0, _varint(0)) + _field(4, 0, _varint(0))
    normalizer += _field(5, 0, _varint(1))  # no dummy prefix, keep extra spaces, escape spaces as "▁"
    return proto + _field(2, 2, trainer) + _field(3, 2, normalizer)


def llama3_tokenizer_standin(qwen_vocab: dict[str, int], qwen_merges: list[str], llama_config: dict) -> dict:
    """A `tokenizer.json` of Llama 3's size: Qwen2's byte-level BPE cut to its first 128000 tokens (ids and merges
    in the same order, so the cut is complete), Llama 3's pre-tokenizer pattern, and the 256 special tokens of
    `llama_config` (ComfyUI's `llama_tokenizer/tokenizer_config.json`) at 128000-128255. A stand-in."""
    vocab = {token: index for token, index in qwen_vocab.items() if index < LLAMA3_REGULAR}
    merges = [merge for merge in qwen_merges[: LLAMA3_REGULAR - 256] if "".join(merge.split(" ")) in vocab]
    added = [
        {"id": int(index), "content": token["content"], "single_word": False, "lstrip": False, "rstrip": False}
        | {"normalized": False, "special": True}
        for index, token in sorted(llama_config["added_tokens_decoder"].items(), key=lambda item: int(item[0]))
    ]
    split = {"type": "Split", "pattern": {"Regex": LLAMA3_PATTERN}, "behavior": "Isolated", "invert": False}
    return {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": added,
        "normalizer": None,
        "pre_tokenizer": {
            "type": "Sequence",
            "pretokenizers": [
                split,
                {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False},
            ],
        },
        "post_processor": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": False, "use_regex": True},
        "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True},
        "model": {
            "type": "BPE",
            "dropout": None,
            "unk_token": None,
            "continuing_subword_prefix": None,
            "end_of_word_suffix": None,
            "fuse_unk": False,
            "byte_fallback": False,
            "ignore_merges": True,
            "vocab": vocab,
            "merges": merges,
        },
    }


def _qwen_files(tokenizer_source: Path | None) -> tuple[dict[str, int], list[str]]:
    if tokenizer_source is None or not (tokenizer_source / "vocab.json").exists():
        raise FileNotFoundError(
            f"`tokenizer_source` {tokenizer_source} has no vocab.json: give ComfyUI's "
            "comfy/text_encoders/qwen25_tokenizer (the stand-in tokenizers are built from it)"
        )
    vocab = json.loads((tokenizer_source / "vocab.json").read_text(encoding="utf-8"))
    lines = (tokenizer_source / "merges.txt").read_text(encoding="utf-8").splitlines()
    return vocab, [line for line in lines if line and not line.startswith("#version")]


# --- the families --------------------------------------------------------------------------------------------------

TEXT_ENCODER_FILES = {
    "lumina2": "gemma_2_2b_fp16.safetensors",
    "qwen-image": "qwen_2.5_vl_7b_fp8_scaled.safetensors",
    "hidream": "llama_3.1_8b_instruct_fp8_scaled.safetensors",
}
LLAMA3_TOKENIZER_FOLDER = "llama3_tokenizer_standin"


def write_text_encoder(family: str, folder: Path, seed: int, tokenizer_source: Path | None) -> Path:
    """The family's language model file in `folder` (written once and reused)."""
    path = folder / TEXT_ENCODER_FILES[family]
    if path.exists():
        return path
    folder.mkdir(parents=True, exist_ok=True)
    if family == "lumina2":
        vocab, _ = _qwen_files(tokenizer_source)
        entries = plan(list(language_model(GEMMA2_2B)), "float16")
        spiece = gemma_spiece_standin(vocab)
        entries.append(Entry(Tensor("spiece_model", (len(spiece),), "raw"), "uint8", raw=spiece))
    elif family == "qwen-image":
        entries = plan(qwen25_vl_7b(), "bfloat16", scaled_fp8=True)
    else:
        entries = plan(list(language_model(LLAMA31_8B)), "bfloat16", scaled_fp8=True)
    return write_streaming(entries, path, seed + 111)


def write_llama3_tokenizer(folder: Path, tokenizer_source: Path | None, llama_config: Path | None) -> Path:
    """`<folder>/llama3_tokenizer_standin/tokenizer.json` (and its `tokenizer_config.json`) for HiDream."""
    if llama_config is None or not llama_config.exists():
        raise FileNotFoundError(
            f"the Llama 3 tokenizer_config.json {llama_config} is missing: give ComfyUI's "
            "comfy/text_encoders/llama_tokenizer/tokenizer_config.json"
        )
    target = folder / LLAMA3_TOKENIZER_FOLDER
    target.mkdir(parents=True, exist_ok=True)
    vocab, merges = _qwen_files(tokenizer_source)
    config = json.loads(llama_config.read_text(encoding="utf-8"))
    (target / "tokenizer.json").write_text(json.dumps(llama3_tokenizer_standin(vocab, merges, config)), "utf-8")
    (target / "tokenizer_config.json").write_text(llama_config.read_text(encoding="utf-8"), "utf-8")
    (target / "README.txt").write_text(
        "A stand-in for Llama 3's tokenizer.json, built by tools/random_checkpoint.py (tools/checkpoints/llm.py): "
        "Qwen2's byte-level BPE cut to 128000 tokens and Llama 3's 256 special tokens. Not Meta's tokenizer.\n",
        "utf-8",
    )
    return target / "tokenizer.json"


DIFFUSION_MODELS = {"lumina2": lambda: list(lumina2()), "qwen-image": lambda: list(qwen_image())}
DIFFUSION_MODELS["hidream"] = lambda: list(hidream())
VAE_FAMILIES = ("lumina2", "hidream")  # the 16-channel Flux autoencoder; Qwen-Image's (Wan 2.1's) is not written


def write_family(
    family: str, out: Path, seed: int, tokenizer_source: Path | None, llama_config: Path | None
) -> list[Path]:
    """`<family>-random.safetensors` (the diffusion model), `<family>-ae-random.safetensors` where the family uses
    the 16-channel autoencoder, the language model in `out/../text_encoders/`, and for HiDream the CLIP and T5 files
    there too and the stand-in Llama 3 tokenizer in `out`."""
    encoders = out.parent / "text_encoders"
    if family != "qwen-image":  # 1. the tokenizer sources, before any large file is written
        _qwen_files(tokenizer_source)
    if family == "hidream" and (llama_config is None or not llama_config.exists()):
        raise FileNotFoundError(f"`llama_config` {llama_config} is missing: give ComfyUI's llama_tokenizer config")
    model = out / f"{family}-random.safetensors"  # 2. the files
    write_streaming(plan(DIFFUSION_MODELS[family](), "float16"), model, seed)
    files = [model]
    if family in VAE_FAMILIES:
        vae = out / f"{family}-ae-random.safetensors"
        write_checkpoint(vae16(), vae, seed + 1)
        files.append(vae)
    files.append(write_text_encoder(family, encoders, seed, tokenizer_source))
    if family == "hidream":
        files += write_text_encoders(encoders, seed, ("clip_l", "clip_g", "t5xxl"))
        files.append(write_llama3_tokenizer(out, tokenizer_source, llama_config))
    return files
