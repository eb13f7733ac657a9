"""diffusers integration on tiny random-weight pipelines saved to disk and loaded back the way users load them."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch
from pipeline_fixtures import *  # noqa: F403 (the tiny pipelines, saved in each format)

from flowcore import ModelFileError, ModelNotFoundError
from flowcore.models.pipelines import (
    UnsupportedPipelineError,
    detect_checkpoint_type,
    encoder_for_pipeline,
    generate,
    load_pipeline,
    patcher_for_pipeline,
)
from flowcore.testing import CLIP_VOCAB_SIZE

FAST = {"steps": 2, "width": 64, "height": 64, "progress": False}


def assert_same_weights(expected, loaded) -> None:
    for name in ("unet", "vae", "text_encoder"):
        want, got = getattr(expected, name).state_dict(), getattr(loaded, name).state_dict()
        assert set(want) == set(got), name
        for key, value in want.items():
            assert torch.equal(value, got[key].reshape(value.shape)), f"{name}.{key}"


def test_bundled_configs_describe_the_published_models(tmp_path):
    """The configs used for single files offline build models of exactly the published parameter counts."""
    from diffusers import UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from flowcore.models.model_configs import write_config_folder

    def count(model):
        return sum(p.numel() for p in model.parameters())

    expected = {"sd15": (859_520_964, 123_060_480), "sd21": (865_910_724, 340_387_840)}
    for family, (unet_size, text_size) in expected.items():
        folder = write_config_folder(family, tmp_path)
        with torch.device("meta"):
            unet = UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(folder / "unet"))
            text = CLIPTextModel(CLIPTextConfig.from_pretrained(folder / "text_encoder"))
        assert (count(unet), count(text)) == (unet_size, text_size), family


def test_diffusers_folder_round_trip(tiny_sd15, sd15_folder):
    pipe = load_pipeline(sd15_folder, device="cpu")
    assert type(pipe).__name__ == "StableDiffusionPipeline"
    assert len(pipe.tokenizer) == CLIP_VOCAB_SIZE
    assert_same_weights(tiny_sd15, pipe)


def test_single_file_in_webui_layout_round_trip(tiny_sd15, sd15_folder, sd15_single_file):
    """A WebUI-layout .safetensors (ldm key names) loads through diffusers' own conversion, configs from a folder."""
    from safetensors import safe_open

    with safe_open(str(sd15_single_file), framework="pt") as file:
        prefixes = {key.split(".")[0] for key in file.keys()}  # noqa: SIM118
    assert prefixes == {"model", "first_stage_model", "cond_stage_model"}
    assert detect_checkpoint_type(sd15_single_file) == "v1"
    pipe = load_pipeline(sd15_single_file, config=sd15_folder, device="cpu")
    assert_same_weights(tiny_sd15, pipe)


def test_loading_does_not_warn_about_float32_modules_there_are_none_of(sd15_folder, sd15_single_file, caplog):
    """diffusers casts each single-file model with `.to(dtype)` and warns "should be kept in float32: []"."""
    import logging

    load_pipeline(sd15_single_file, config=sd15_folder, device="cpu")
    assert not [record for record in caplog.records if "kept in float32" in record.getMessage()]
    message = "There are modules in X that should be kept in float32: ['norm']. Casting directly ..."
    logging.getLogger("diffusers.models.modeling_utils").warning(message)  # a real one still shows
    assert [record.getMessage() for record in caplog.records] == [message]


def test_single_file_with_detected_config_and_no_tokenizer_files(
    tiny_sd15, sd15_folder, sd15_single_file, tmp_path, monkeypatch
):
    """Without `config`, the architecture is detected from the keys and a config folder without tokenizer files
    is used (as the bundled ones are): the tokenizer is built locally, with the real 49408-token vocabulary."""
    import flowcore.models.model_configs

    configs_only = tmp_path / "sd15"
    shutil.copytree(sd15_folder, configs_only, ignore=shutil.ignore_patterns("*.safetensors", "*.bin", "tokenizer"))
    detected = []
    monkeypatch.setattr(
        flowcore.models.model_configs, "write_config_folder", lambda family: detected.append(family) or configs_only
    )
    pipe = load_pipeline(sd15_single_file, device="cpu")
    assert detected == ["sd15"]
    assert len(pipe.tokenizer) == CLIP_VOCAB_SIZE and pipe.tokenizer.model_max_length == 77
    assert_same_weights(tiny_sd15, pipe)


def test_missing_models_say_what_to_do(tmp_path):
    with pytest.raises(ModelNotFoundError, match="hf download nobody/no-such-model"):
        load_pipeline("nobody/no-such-model", device="cpu")
    with pytest.raises(ModelFileError, match="No model file or folder"):
        load_pipeline(tmp_path / "missing.safetensors", device="cpu")
    with pytest.raises(ModelFileError, match="not a diffusers"):
        load_pipeline(tmp_path, device="cpu")


def test_sd3_and_flux_are_refused_clearly():
    class FluxPipeline:
        pass

    with pytest.raises(UnsupportedPipelineError, match="GenericEncoder"):
        encoder_for_pipeline(FluxPipeline())


@pytest.mark.parametrize("which", ["tiny_sd15", "tiny_sdxl"])
def test_encoder_reproduces_the_pipelines_own_prompt_embeds(which, request):
    pipe = request.getfixturevalue(which)
    encoder = encoder_for_pipeline(pipe)
    encoding = encoder.encode(encoder.layout("a standing zebra"))
    if which == "tiny_sdxl":
        embeds, _, pooled, _ = pipe.encode_prompt("a standing zebra", do_classifier_free_guidance=False)
        torch.testing.assert_close(encoding.pooled, pooled[0])
    else:
        embeds, _ = pipe.encode_prompt("a standing zebra", "cpu", 1, do_classifier_free_guidance=False)
    torch.testing.assert_close(encoding.rows, embeds[0])


def test_generate_from_the_original_encoding_matches_the_pipeline(tiny_sd15):
    patcher = patcher_for_pipeline(tiny_sd15)
    result = patcher.run("a crosswalk next to a bus station with a ~standing zebra~")
    ours = generate(tiny_sd15, result, patched=False, seed=3, encoder=patcher.encoder, **FAST)
    theirs = tiny_sd15(
        result.report.text, num_inference_steps=2, width=64, height=64, generator=torch.Generator().manual_seed(3)
    ).images[0]
    assert np.abs(np.asarray(ours, dtype=int) - np.asarray(theirs, dtype=int)).max() <= 1
    patched = generate(tiny_sd15, result, seed=3, encoder=patcher.encoder, **FAST)
    assert patched.size == (64, 64) and np.asarray(patched).tobytes() != np.asarray(ours).tobytes()


def test_generate_sdxl_with_pooled_and_a_two_chunk_prompt(tiny_sdxl):
    patcher = patcher_for_pipeline(tiny_sdxl)
    long_prompt = "a ~standing zebra~ BREAK a crosswalk next to a bus station"
    result = patcher.run(long_prompt)
    assert result.patched.shape == (154, 64) and result.pooled_patched is not None
    image = generate(tiny_sdxl, result, seed=0, negative_prompt="blurry", encoder=patcher.encoder, **FAST)
    assert image.size == (64, 64)
