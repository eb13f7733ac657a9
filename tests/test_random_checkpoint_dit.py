"""tools/checkpoints/dit.py and text_encoders.py: the layouts a host's own detection reads (checked against
ComfyUI 0.3.64 by the real-client suite, `tests/realclient/comfyui_families.py`); here, the keys that
tell the families apart and the full-size text encoders' shapes, without torch."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))

from checkpoints import dit, text_encoders  # noqa: E402


def keys(layout) -> dict[str, tuple[int, ...]]:
    return {tensor.key: tensor.shape for tensor in layout}


def test_flux_dev_has_guidance_in_and_schnell_not():
    dev, schnell = keys(dit.flux(guidance=True)), keys(dit.flux(guidance=False))
    assert "guidance_in.in_layer.weight" in dev and "guidance_in.in_layer.weight" not in schnell
    assert set(dev) - set(schnell) == {f"guidance_in.{n}_layer.{p}" for n in ("in", "out") for p in ("weight", "bias")}
    assert dev["double_blocks.0.img_attn.norm.key_norm.scale"] == (128,) and dev["img_in.weight"] == (3072, 64)
    assert not any(key.startswith(("double_blocks.1.", "single_blocks.1.")) for key in dev)  # one block each


def test_chroma_has_its_approximator_and_no_modulation():
    chroma = keys(dit.chroma())
    assert chroma["distilled_guidance_layer.norms.0.scale"] == (5120,)
    assert chroma["distilled_guidance_layer.out_proj.weight"] == (3072, 5120)
    assert not any("_mod." in key or "modulation" in key or key.startswith("vector_in") for key in chroma)


def test_sd35_width_is_64_per_joint_block_and_the_last_context_block_is_pre_only():
    sd35 = keys(dit.sd35(depth=2))
    assert sd35["x_embedder.proj.weight"] == (128, 16, 2, 2) and sd35["pos_embed"] == (1, 192 * 192, 128)
    assert "joint_blocks.1.context_block.attn.proj.weight" not in sd35
    assert sd35["joint_blocks.1.context_block.adaLN_modulation.1.weight"] == (256, 128)
    assert sd35["joint_blocks.0.x_block.attn.ln_q.weight"] == (64,)


def test_text_encoders_at_full_size():
    t5 = keys(text_encoders.t5xxl())
    assert len(t5) == 219 and t5["shared.weight"] == (32128, 4096)
    assert t5["encoder.block.23.layer.1.DenseReluDense.wi_1.weight"] == (10240, 4096)
    assert [key for key in t5 if "relative_attention_bias" in key] == [
        "encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight"
    ]
    clip_g = keys(text_encoders.clip_g())
    assert len(clip_g) == 517 and "text_model.encoder.layers.31.mlp.fc1.weight" in clip_g
    assert clip_g["text_projection.weight"] == (1280, 1280)
    assert len(keys(text_encoders.clip_l())) == 197
    final_bias = [t for t in text_encoders.clip_l() if t.key == "text_model.final_layer_norm.bias"]
    assert final_bias[0].kind == "final_norm_bias"


def test_the_vae_has_16_latent_channels_and_no_quant_convs():
    vae = keys(dit.vae16())
    assert vae["decoder.conv_in.weight"] == (512, 16, 3, 3) and vae["encoder.conv_out.weight"] == (32, 512, 3, 3)
    assert not any("quant_conv" in key for key in vae)
