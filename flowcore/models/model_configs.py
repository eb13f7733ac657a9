"""Minimal diffusers configs for loading single-file checkpoints (`.safetensors`, the WebUI's layout) offline.

diffusers' `from_single_file` needs each component's diffusers config; by default it fetches them from the
hub. These are the published configs of SD 1.5, SD 2.1 (768, v-prediction) and SDXL base 1.0, reduced to
the fields that differ from diffusers' and transformers' defaults. `write_config_folder(family)` writes one
as a diffusers folder (no weights, no tokenizer) that `from_single_file(..., config=folder)` reads.
"""

from __future__ import annotations

import atexit
import json
import shutil
import tempfile
from pathlib import Path

from flowcore.errors import OptionsError

_CLIP_L = {
    "architectures": ["CLIPTextModel"],
    "model_type": "clip_text_model",
    "hidden_act": "quick_gelu",
    "hidden_size": 768,
    "intermediate_size": 3072,
    "num_attention_heads": 12,
    "num_hidden_layers": 12,
    "max_position_embeddings": 77,
    "projection_dim": 768,
    "vocab_size": 49408,
    "bos_token_id": 49406,
    "eos_token_id": 49407,
    "pad_token_id": 49407,
}
_SD_SCHEDULER = {
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "num_train_timesteps": 1000,
    "steps_offset": 1,
    "clip_sample": False,
    "set_alpha_to_one": False,
}
_SD_UNET = {
    "_class_name": "UNet2DConditionModel",
    "block_out_channels": [320, 640, 1280, 1280],
    "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
    "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
    "layers_per_block": 2,
    "in_channels": 4,
    "out_channels": 4,
}
_SD_VAE = {
    "_class_name": "AutoencoderKL",
    "block_out_channels": [128, 256, 512, 512],
    "down_block_types": ["DownEncoderBlock2D"] * 4,
    "up_block_types": ["UpDecoderBlock2D"] * 4,
    "layers_per_block": 2,
    "latent_channels": 4,
    "in_channels": 3,
    "out_channels": 3,
}

CONFIGS: dict[str, dict[str, dict]] = {
    "sd15": {
        "model_index.json": {
            "_class_name": "StableDiffusionPipeline",
            "feature_extractor": [None, None],
            "safety_checker": [None, None],
            "requires_safety_checker": False,
            "scheduler": ["diffusers", "PNDMScheduler"],
            "text_encoder": ["transformers", "CLIPTextModel"],
            "tokenizer": ["transformers", "CLIPTokenizer"],
            "unet": ["diffusers", "UNet2DConditionModel"],
            "vae": ["diffusers", "AutoencoderKL"],
        },
        "unet/config.json": {**_SD_UNET, "attention_head_dim": 8, "cross_attention_dim": 768, "sample_size": 64},
        "vae/config.json": {**_SD_VAE, "sample_size": 512},
        "text_encoder/config.json": _CLIP_L,
        "scheduler/scheduler_config.json": {"_class_name": "PNDMScheduler", **_SD_SCHEDULER, "skip_prk_steps": True},
    },
    "sd21": {
        "model_index.json": {
            "_class_name": "StableDiffusionPipeline",
            "feature_extractor": [None, None],
            "safety_checker": [None, None],
            "requires_safety_checker": False,
            "scheduler": ["diffusers", "DDIMScheduler"],
            "text_encoder": ["transformers", "CLIPTextModel"],
            "tokenizer": ["transformers", "CLIPTokenizer"],
            "unet": ["diffusers", "UNet2DConditionModel"],
            "vae": ["diffusers", "AutoencoderKL"],
        },
        "unet/config.json": {
            **_SD_UNET,
            "attention_head_dim": [5, 10, 20, 20],
            "cross_attention_dim": 1024,
            "use_linear_projection": True,
            "sample_size": 96,
        },
        "vae/config.json": {**_SD_VAE, "sample_size": 768},
        # OpenCLIP ViT-H/14 without its last layer: SD 2 conditions on the penultimate layer.
        "text_encoder/config.json": {
            **_CLIP_L,
            "hidden_act": "gelu",
            "hidden_size": 1024,
            "intermediate_size": 4096,
            "num_attention_heads": 16,
            "num_hidden_layers": 23,
            "projection_dim": 512,
        },
        "scheduler/scheduler_config.json": {
            "_class_name": "DDIMScheduler",
            **_SD_SCHEDULER,
            "prediction_type": "v_prediction",
        },
    },
    "sdxl": {
        "model_index.json": {
            "_class_name": "StableDiffusionXLPipeline",
            "force_zeros_for_empty_prompt": True,
            "scheduler": ["diffusers", "EulerDiscreteScheduler"],
            "text_encoder": ["transformers", "CLIPTextModel"],
            "text_encoder_2": ["transformers", "CLIPTextModelWithProjection"],
            "tokenizer": ["transformers", "CLIPTokenizer"],
            "tokenizer_2": ["transformers", "CLIPTokenizer"],
            "unet": ["diffusers", "UNet2DConditionModel"],
            "vae": ["diffusers", "AutoencoderKL"],
        },
        "unet/config.json": {
            "_class_name": "UNet2DConditionModel",
            "addition_embed_type": "text_time",
            "addition_embed_type_num_heads": 64,
            "addition_time_embed_dim": 256,
            "attention_head_dim": [5, 10, 20],
            "block_out_channels": [320, 640, 1280],
            "cross_attention_dim": 2048,
            "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
            "up_block_types": ["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"],
            "layers_per_block": 2,
            "projection_class_embeddings_input_dim": 2816,
            "transformer_layers_per_block": [1, 2, 10],
            "use_linear_projection": True,
            "sample_size": 128,
            "in_channels": 4,
            "out_channels": 4,
        },
        "vae/config.json": {**_SD_VAE, "sample_size": 1024, "scaling_factor": 0.13025, "force_upcast": True},
        "text_encoder/config.json": _CLIP_L,
        "text_encoder_2/config.json": {
            **_CLIP_L,
            "architectures": ["CLIPTextModelWithProjection"],
            "hidden_act": "gelu",
            "hidden_size": 1280,
            "intermediate_size": 5120,
            "num_attention_heads": 20,
            "num_hidden_layers": 32,
            "projection_dim": 1280,
        },
        "scheduler/scheduler_config.json": {
            "_class_name": "EulerDiscreteScheduler",
            **_SD_SCHEDULER,
            "interpolation_type": "linear",
            "prediction_type": "epsilon",
            "timestep_spacing": "leading",
        },
    },
}

# diffusers' name for a checkpoint's architecture (`infer_diffusers_model_type`) -> our config family.
FAMILY_OF_MODEL_TYPE = {"v1": "sd15", "v2": "sd21", "xl_base": "sdxl"}

# Tokenizer padding per family: SD 2 and SDXL's second encoder (OpenCLIP) pad with "!" (id 0), CLIP-L with EOS.
PAD_TOKENS = {"sd15": {"tokenizer": None}, "sd21": {"tokenizer": "!"}, "sdxl": {"tokenizer": None, "tokenizer_2": "!"}}


def write_config_folder(family: str, root: str | Path | None = None) -> Path:
    """Write the configs of `family` ("sd15", "sd21", "sdxl") as a diffusers folder and return its path.

    Without `root`, the folder is a fresh temporary one owned by this call (`flowcore-configs-*` in the system
    temp directory, removed when the process exits), so that processes loading at the same time never write
    into each other's configs."""
    if family not in CONFIGS:
        raise OptionsError(f"`family` must be one of {sorted(CONFIGS)} but is {family!r}.")
    if root is None:
        root = tempfile.mkdtemp(prefix="flowcore-configs-")
        atexit.register(shutil.rmtree, root, ignore_errors=True)
    folder = Path(root) / family
    for name, content in CONFIGS[family].items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(content, indent=2))
    return folder
