"""tools/checkpoints/llm.py: the language-model families' layouts (checked against ComfyUI 0.3.64's own modules
by the real-client suite, `tests/realclient/comfyui_llm.py`), the scaled-fp8 plan, the tensor-by-tensor writer and
the stand-in tokenizers, at full size on paper (no tensors) or at tiny sizes."""

from __future__ import annotations

import json
import struct
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))

from checkpoints import llm  # noqa: E402
from checkpoints.common import Tensor  # noqa: E402


def keys(layout) -> dict[str, tuple[int, ...]]:
    return {tensor.key: tensor.shape for tensor in layout}


def parameters(layout) -> int:
    return sum(llm._count(shape) for shape in keys(layout).values())


def test_language_models_at_full_size():
    gemma = keys(llm.language_model(llm.GEMMA2_2B))
    assert len(gemma) == 288 and parameters(llm.language_model(llm.GEMMA2_2B)) == 2_614_341_888
    assert gemma["model.embed_tokens.weight"] == (256000, 2304)
    assert gemma["model.layers.25.self_attn.q_proj.weight"] == (2048, 2304)  # 8 heads of 256
    assert "model.layers.0.post_feedforward_layernorm.weight" in gemma  # ComfyUI tells Gemma 2 apart by it
    qwen = keys(llm.qwen25_vl_7b())
    assert len(qwen) == 728 and parameters(llm.qwen25_vl_7b()) == 7_747_169_280
    assert qwen["model.layers.0.self_attn.k_proj.bias"] == (512,)  # ComfyUI: 512 -> Qwen2.5 7B
    assert qwen["visual.patch_embed.proj.weight"] == (1280, 3, 2, 14, 14)
    assert qwen["visual.merger.mlp.2.weight"] == (3584, 5120)
    llama = keys(llm.language_model(llm.LLAMA31_8B))
    assert len(llama) == 290 and parameters(llm.language_model(llm.LLAMA31_8B)) == 7_504_924_672
    assert llama["model.layers.31.mlp.down_proj.weight"] == (4096, 14336)
    assert not any(key.endswith("bias") or "feedforward_layernorm" in key for key in llama)  # -> Llama 3


def test_gemma_norms_are_stored_as_weight_minus_one():
    kinds = {t.key: t.kind for t in llm.language_model(llm.GEMMA2_2B, layers=1)}
    assert kinds["model.norm.weight"] == "bias" and kinds["model.layers.0.input_layernorm.weight"] == "bias"
    assert {t.kind for t in llm.language_model(llm.LLAMA31_8B, layers=1) if "norm" in t.key} == {"norm"}


def test_shallow_diffusion_models_keep_the_keys_comfyui_reads():
    lumina = keys(llm.lumina2(layers=1))
    assert len(lumina) == 75 and lumina["cap_embedder.1.weight"] == (2304, 2304)
    assert not any(key.startswith("layers.1.") for key in lumina) and "noise_refiner.1.ffn_norm2.weight" in lumina
    assert lumina["layers.0.attention.qkv.weight"] == (3840, 2304)  # 24 + 2 x 8 heads of 96
    qwen = keys(llm.qwen_image(blocks=1))
    assert len(qwen) == 45 and qwen["txt_norm.weight"] == (3584,) and qwen["img_in.weight"] == (3072, 64)
    hidream = keys(llm.hidream(double=1, single=1))
    assert len(hidream) == 86 and hidream["caption_projection.2.linear.weight"] == (2560, 4096)
    assert "caption_projection.3.linear.weight" not in hidream
    assert hidream["double_stream_blocks.0.block.adaLN_modulation.1.weight"] == (30720, 2560)
    assert hidream["single_stream_blocks.0.block.ff_i.experts.3.w2.weight"] == (2560, 6912)


def test_scaled_fp8_plan():
    entries = {
        entry.tensor.key: entry for entry in llm.plan(list(llm.language_model(llm.LLAMA31_8B, 1)), "bfloat16", True)
    }
    weight = entries["model.layers.0.mlp.up_proj.weight"]
    assert weight.dtype == "float8_e4m3fn" and weight.std == 1.0
    assert entries["model.layers.0.mlp.up_proj.scale_weight"].dtype == "float32"
    assert entries["model.embed_tokens.weight"].dtype == "bfloat16"  # ComfyUI's embedding is not a scaled op
    assert entries["model.norm.weight"].dtype == "bfloat16" and "model.norm.scale_weight" not in entries
    assert entries["scaled_fp8"].dtype == "float8_e4m3fn" and entries["scaled_fp8"].tensor.shape == (0,)
    plain = llm.plan(list(llm.language_model(llm.GEMMA2_2B, 1)), "float16")
    assert {entry.dtype for entry in plain} == {"float16"}


def test_streaming_writer_round_trip(tmp_path):
    import torch
    from safetensors.torch import load_file

    layout = [Tensor("a.weight", (3, 5)), Tensor("a.bias", (3,), "bias"), Tensor("n.weight", (4,), "norm")]
    entries = llm.plan(layout, "bfloat16", scaled_fp8=True)
    entries.append(llm.Entry(Tensor("spiece_model", (3,), "raw"), "uint8", raw=b"abc"))
    path = llm.write_streaming(entries, tmp_path / "tiny.safetensors", seed=1)
    state = load_file(str(path))
    assert state["a.weight"].dtype == torch.float8_e4m3fn and state["a.weight"].shape == (3, 5)
    assert state["a.scale_weight"].item() == torch.tensor(0.02).item() and state["a.scale_weight"].shape == ()
    assert torch.equal(state["a.bias"], torch.zeros(3, dtype=torch.bfloat16))
    assert torch.equal(state["n.weight"], torch.ones(4, dtype=torch.bfloat16))
    assert bytes(state["spiece_model"].tolist()) == b"abc" and state["scaled_fp8"].numel() == 0
    drawn = state["a.weight"].float()
    assert drawn.abs().max() > 0.1 and drawn.std() < 3  # N(0, 1) in fp8, the scale applied by ComfyUI
    again = load_file(str(llm.write_streaming(entries, tmp_path / "again.safetensors", seed=1)))
    assert torch.equal(again["a.weight"].float(), drawn) and not (tmp_path / "tiny.partial").exists()


def _pieces(proto: bytes) -> tuple[list[tuple[str, int]], bytes]:
    """(piece, type) of each SentencePiece, and the trainer spec's bytes, from a serialized model."""

    def varint(data: bytes, at: int) -> tuple[int, int]:
        value = shift = 0
        while True:
            byte = data[at]
            value, shift, at = value | (byte & 0x7F) << shift, shift + 7, at + 1
            if byte < 0x80:
                return value, at

    def fields(data: bytes):
        at = 0
        while at < len(data):
            tag, at = varint(data, at)
            number, wire = tag >> 3, tag & 7
            if wire == 0:
                value, at = varint(data, at)
            elif wire == 5:
                value, at = data[at : at + 4], at + 4
            else:
                size, at = varint(data, at)
                value, at = data[at : at + size], at + size
            yield number, value

    pieces, trainer = [], b""
    for number, value in fields(proto):
        if number == 1:
            found = dict(fields(value))
            pieces.append((found[1].decode(), found[3]))
        elif number == 2:
            trainer = value
    return pieces, trainer


def test_gemma_tokenizer_standin_has_gemma_ids():
    vocab = {"a": 0, "Ġzebra": 1, "Ġa": 2, "Ġ": 3, "\u00e7\u012e": 4}  # the last: half a UTF-8 character
    pieces, trainer = _pieces(llm.gemma_spiece_standin(vocab, size=300))
    assert len(pieces) == 300
    assert pieces[:4] == [("<pad>", 3), ("<eos>", 3), ("<bos>", 3), ("<unk>", 2)]
    assert pieces[4] == ("<0x00>", 6) and pieces[259] == ("<0xFF>", 6)
    assert pieces[260:264] == [("a", 1), ("▁zebra", 1), ("▁a", 1), ("▁", 1)]
    assert pieces[264] == ("<unused0>", 5)
    assert b"<bos>" in trainer and b"<eos>" in trainer


def test_llama3_tokenizer_standin(monkeypatch):
    monkeypatch.setattr(llm, "LLAMA3_REGULAR", 259)
    vocab = {chr(c): n for n, c in enumerate(range(33, 33 + 256))}
    vocab |= {"ab": 256, "Ġa": 257, "abc": 258, "cut": 259}
    merges = ["a b", "Ġ a", "ab c", "cu t"]
    config = {"added_tokens_decoder": {"259": {"content": "<|begin_of_text|>"}, "260": {"content": "<|eot_id|>"}}}
    found = llm.llama3_tokenizer_standin(vocab, merges, config)
    assert "cut" not in found["model"]["vocab"] and found["model"]["merges"] == ["a b", "Ġ a", "ab c"]
    assert [(token["id"], token["content"]) for token in found["added_tokens"]] == [
        (259, "<|begin_of_text|>"),
        (260, "<|eot_id|>"),
    ]
    assert json.loads(json.dumps(found)) == found


def test_protobuf_field_encoding():
    assert llm._varint(300) == bytes([0xAC, 0x02])
    assert llm._field(2, 5, struct.pack("<f", 1.0)) == b"\x15" + struct.pack("<f", 1.0)
    assert llm._field(1, 2, b"ab") == b"\x0a\x02ab"


def test_missing_tokenizer_sources_fail_before_any_file_is_written(tmp_path):
    import pytest

    out = tmp_path / "lumina2"
    with pytest.raises(FileNotFoundError, match="qwen25_tokenizer"):
        llm.write_family("lumina2", out, 0, tmp_path / "nowhere", None)
    (tmp_path / "qwen").mkdir()
    (tmp_path / "qwen" / "vocab.json").write_text("{}")
    (tmp_path / "qwen" / "merges.txt").write_text("")
    with pytest.raises(FileNotFoundError, match="llama_config"):
        llm.write_family("hidream", tmp_path / "hidream", 0, tmp_path / "qwen", tmp_path / "missing.json")
    assert not any(path.is_file() for path in tmp_path.rglob("*.safetensors"))
