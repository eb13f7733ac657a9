"""`tools/random_checkpoint.py`'s layouts and writers: the key counts of the original single files, and the
streaming writer (SDXL) giving the same file content as the in-memory one."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))

from checkpoints import common, ldm, sdxl  # noqa: E402


@pytest.mark.parametrize(
    ("layout", "keys"),
    [(ldm.sd15_layout, 1143), (ldm.sd2_layout, 1240), (sdxl.sdxl_layout, 2515)],
)
def test_layouts_have_the_original_key_counts(layout, keys):
    tensors = layout()
    assert len(tensors) == keys
    assert len({tensor.key for tensor in tensors}) == keys


def test_sd2_is_the_768_v_layout():
    shapes = {tensor.key: tensor.shape for tensor in ldm.sd2_layout()}
    block = "model.diffusion_model.input_blocks.1.1."
    assert shapes[block + "proj_in.weight"] == (320, 320)  # linear, not a 1x1 convolution
    assert shapes[block + "transformer_blocks.0.attn2.to_k.weight"] == (320, 1024)
    assert shapes["cond_stage_model.model.transformer.resblocks.23.attn.in_proj_weight"] == (3072, 1024)
    assert "cond_stage_model.model.ln_final.bias" in shapes


def test_sdxl_layout_shapes():
    shapes = {tensor.key: tensor.shape for tensor in sdxl.sdxl_layout()}
    assert shapes["model.diffusion_model.label_emb.0.0.weight"] == (1280, 2816)
    assert "model.diffusion_model.middle_block.1.transformer_blocks.9.attn1.to_q.weight" in shapes
    assert "model.diffusion_model.input_blocks.1.1.norm.weight" not in shapes  # no attention on the first level
    assert shapes["conditioner.embedders.1.model.transformer.resblocks.31.mlp.c_fc.weight"] == (5120, 1280)
    assert not any(key.startswith("betas") or key == "alphas_cumprod" for key in shapes)


def test_streaming_writer_matches_save_file(tmp_path):
    torch = pytest.importorskip("torch")
    from safetensors.torch import load_file

    layout = [
        *common.linear("a.proj", 3, 5),
        *common.norm("a.norm", 3),
        common.Tensor("a.final.bias", (3,), "final_norm_bias"),
        common.Tensor("a.logit_scale", (), "buffer"),
        common.Tensor("a.position_ids", (1, 4), "buffer"),
    ]
    buffers = ldm.logit_scale("a.logit_scale")
    common.write_checkpoint(layout, tmp_path / "memory.safetensors", 3, buffers)
    sdxl.write_streaming(layout, tmp_path / "stream.safetensors", 3, buffers)
    memory, stream = load_file(tmp_path / "memory.safetensors"), load_file(tmp_path / "stream.safetensors")
    assert memory.keys() == stream.keys()
    for key in memory:
        assert memory[key].dtype == stream[key].dtype and torch.equal(memory[key], stream[key]), key


def test_lora_names_follow_kohya():
    sd2 = [name for name, _, _ in ldm.sd1_lora_layout(context=1024, text_layers=24)]
    assert "lora_te_text_model_encoder_layers_23_mlp_fc2" in sd2
    xl = {name: (inp, out) for name, inp, out in sdxl.sdxl_lora_layout()}
    assert xl["lora_te2_text_model_encoder_layers_31_mlp_fc1"] == (1280, 5120)
    assert xl["lora_te1_text_model_encoder_layers_11_self_attn_q_proj"] == (768, 768)
    assert xl["lora_unet_input_blocks_4_1_transformer_blocks_0_attn2_to_k"] == (2048, 640)
