"""Load only a Stable Diffusion model's tokenizer(s) and text encoder(s), offline: what `flowcore analyze` needs.

A text encoder is a tenth of SD 1.5 (123M of its 1.07B parameters, 246 MB in fp16), so analyzing a prompt
neither reads the UNet and the VAE nor needs them on disk: a hub cache holding only `text_encoder/`,
`tokenizer/` and `model_index.json` is enough. Three sources, as for `flowcore.models.pipelines.load_pipeline`:
- a hub id already in the local Hugging Face cache (only the files needed are looked for);
- a diffusers folder (`model_index.json`, `text_encoder/`, `tokenizer/`, and SDXL's `_2` ones);
- a single-file checkpoint: only the text encoder's tensors (`cond_stage_model.*`, SDXL's `conditioner.*`) are
  read from it, converted by diffusers' own converters, with `config=` or the bundled configs
  (`flowcore.models.model_configs`) for the architecture its keys show.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from flowcore.encoders import ClipEncoder, SdxlEncoder
from flowcore.encoders.base import TextEncoder
from flowcore.errors import ModelFileError, ModelNotFoundError, OptionsError, UnsupportedPipelineError
from flowcore.models.clip_tokenizer import local_clip_tokenizer
from flowcore.models.devices import resolve_device
from flowcore.models.model_source import default_source, folder_of, resolve_source

TEXT_PREFIXES = ("cond_stage_model.", "conditioner.")  # the text encoders' tensors in a single file
# A single file's text-encoder keys -> the bundled config family (SD 1.x: CLIP-L; SD 2.x: OpenCLIP-H; SDXL both)
FAMILY_KEYS = (
    ("sdxl", "conditioner.embedders.1.model.positional_embedding"),
    ("sd21", "cond_stage_model.model.positional_embedding"),
    ("sd15", "cond_stage_model.transformer.text_model.embeddings.position_embedding.weight"),
)
WIDTH_KEYS = {
    "sd15": ["cond_stage_model.transformer.text_model.embeddings.position_embedding.weight"],
    "sd21": ["cond_stage_model.model.positional_embedding"],
    "sdxl": [
        "conditioner.embedders.0.transformer.text_model.embeddings.position_embedding.weight",
        "conditioner.embedders.1.model.positional_embedding",
    ],
}


def load_encoder(
    source: str | os.PathLike | None = None,
    *,
    config: str | os.PathLike | None = None,
    device: str = "auto",
    dtype: torch.dtype | None = None,
    clip_skip: int = 1,
) -> TextEncoder:
    """The flowcore encoder of a Stable Diffusion model, loading nothing but its tokenizer(s) and text encoder(s).

    Args:
        source: a hub id in the local cache, a diffusers folder or a `.safetensors` / `.ckpt` file; by default
            SD 1.5 from the local hub cache.
        config: for a single file, a diffusers folder of the same architecture (its `text_encoder*/config.json`).
        device (`str`): "auto", "cpu", "cuda", "cuda:1", "mps".
        dtype (`torch.dtype`, *optional*): by default float16 on CUDA and float32 elsewhere.
        clip_skip (`int`): 1 = the last layer; SDXL takes 1 only (it reads the penultimate layer itself).

    Returns a `ClipEncoder` (SD 1.x / 2.x) or an `SdxlEncoder`. Raises `InputError`s for bad arguments and
    `ModelNotFoundError` where a hub model is not in the local cache.
    """
    # 1. Check inputs.
    if isinstance(clip_skip, bool) or not isinstance(clip_skip, int) or clip_skip < 1:
        raise OptionsError(f"`clip_skip` must be a whole number of at least 1 but is {clip_skip!r}.")
    device = resolve_device(device)
    dtype = dtype or (torch.float16 if device.startswith("cuda") else torch.float32)

    resolved = resolve_source(default_source() if source is None else source)

    # 2. Load the tokenizers and text models.
    from flowcore.models.quiet import weight_loading_bars_hidden

    with weight_loading_bars_hidden():
        if resolved.kind == "file":
            parts = _from_single_file(Path(resolved.location), config)
        else:
            parts = _from_folder(folder_of(resolved))

    # 3. Build the encoder on the device.
    models = [model.to(device=device, dtype=dtype).eval() for model in parts["models"]]
    tokenizers = parts["tokenizers"]
    if len(models) == 2:
        if clip_skip != 1:
            raise OptionsError(f"`clip_skip` must be 1 for SDXL (it reads the penultimate layer) but is {clip_skip}.")
        return SdxlEncoder(tokenizers[0], models[0], tokenizers[1], models[1])
    return ClipEncoder(tokenizers[0], models[0], clip_skip=clip_skip)


def _from_folder(folder: Path) -> dict:
    """Tokenizers and text models from a diffusers folder: `text_encoder`, and SDXL's `text_encoder_2`."""
    from transformers import CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

    index = json.loads((folder / "model_index.json").read_text(encoding="utf-8"))
    name = index.get("_class_name", "")
    if "StableDiffusion3" in name or "Flux" in name or "text_encoder" not in index:
        raise UnsupportedPipelineError(
            f"`{name or folder}` is not supported: flowcore drives SD 1.x, SD 2.x and SDXL (CLIP text encoders)."
        )
    tokenizers, models = [], []
    for suffix, model_class in (("", CLIPTextModel), ("_2", CLIPTextModelWithProjection)):
        if f"text_encoder{suffix}" not in index or index[f"text_encoder{suffix}"][0] is None:
            continue
        model_folder, tokenizer_folder = folder / f"text_encoder{suffix}", folder / f"tokenizer{suffix}"
        if not (model_folder / "config.json").is_file():
            raise ModelNotFoundError(
                f"`{folder}` has no text_encoder{suffix}/config.json: the text encoder is missing from this folder or "
                "cache. Download the model's text_encoder and tokenizer folders, or pass another model."
            )
        if tokenizer_folder.is_dir():
            tokenizers.append(CLIPTokenizer.from_pretrained(str(tokenizer_folder), local_files_only=True))
        else:
            tokenizers.append(local_clip_tokenizer(pad_token="!" if suffix else None))
        try:
            models.append(
                model_class.from_pretrained(str(model_folder), local_files_only=True, variant=_variant(model_folder))
            )
        except OSError as error:
            raise ModelNotFoundError(f"The weights of `{model_folder}` are missing or unreadable: {error}") from error
    return {"tokenizers": tokenizers, "models": models}


def _variant(folder: Path) -> str | None:
    """ "fp16" where a folder holds only half-precision weights (`model.fp16.safetensors`), else None."""
    plain = any((folder / name).is_file() for name in ("model.safetensors", "pytorch_model.bin"))
    return "fp16" if not plain and any(folder.glob("*.fp16.safetensors")) else None


def read_text_tensors(path: Path) -> dict[str, torch.Tensor]:
    """Only the text encoders' tensors of a single-file checkpoint (`cond_stage_model.*`, `conditioner.*`)."""
    if path.suffix.lower() == ".safetensors":
        from safetensors import SafetensorError, safe_open

        try:
            with safe_open(str(path), framework="pt") as file:
                return {key: file.get_tensor(key) for key in file.keys() if key.startswith(TEXT_PREFIXES)}  # noqa: SIM118
        except SafetensorError as error:
            raise ModelFileError(f"`model` {str(path)!r} could not be read as .safetensors: {error}") from error
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as error:  # noqa: BLE001 - torch raises many kinds for a bad archive
        raise ModelFileError(f"`model` {str(path)!r} could not be read as a PyTorch checkpoint: {error}") from error
    checkpoint = checkpoint.get("state_dict", checkpoint) if isinstance(checkpoint, dict) else {}
    return {key: value for key, value in checkpoint.items() if key.startswith(TEXT_PREFIXES)}


def _from_single_file(path: Path, config: str | os.PathLike | None) -> dict:
    """Tokenizers and text models from a single file's text-encoder tensors, configs from `config` or bundled."""
    from diffusers.loaders.single_file_utils import create_diffusers_clip_model_from_ldm
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    from flowcore.models.model_configs import PAD_TOKENS, write_config_folder
    from flowcore.models.model_source import check_config_folder
    from flowcore.models.quiet import diffusers_import_notices

    # 1. The text encoders' tensors and the architecture they show.
    tensors = read_text_tensors(path)
    family = next((family for family, key in FAMILY_KEYS if key in tensors), None)
    if family is None:
        raise ModelFileError(
            f"`model` {str(path)!r} holds no text encoder flowcore knows (SD 1.x CLIP, SD 2.x OpenCLIP, SDXL): no "
            "`cond_stage_model.*` or `conditioner.*` tensors. Pass a Stable Diffusion checkpoint."
        )

    # 2. The configs: given, or bundled; a bundled one must fit the tensors' widths.
    if config is not None:
        folder = check_config_folder(config)
    else:
        folder = write_config_folder(family)
        widths = [int(tensors[key].shape[-1]) for key in WIDTH_KEYS[family]]
        expected = [
            json.loads((folder / name / "config.json").read_text())["hidden_size"]
            for name in ("text_encoder", "text_encoder_2")[: len(widths)]
        ]
        if widths != expected:
            raise ModelFileError(no_bundled_config(path, family, widths, expected))

    # 3. Convert with diffusers' own converters, tokenizers from the config folder or built locally.
    tokenizers, models = [], []
    subfolders = ("text_encoder", "text_encoder_2") if family == "sdxl" else ("text_encoder",)
    for subfolder, model_class in zip(subfolders, (CLIPTextModel, CLIPTextModelWithProjection)):
        tokenizer_name = subfolder.replace("text_encoder", "tokenizer")
        if (folder / tokenizer_name).is_dir():
            from transformers import CLIPTokenizer

            tokenizers.append(CLIPTokenizer.from_pretrained(str(folder / tokenizer_name), local_files_only=True))
        else:
            tokenizers.append(local_clip_tokenizer(pad_token=PAD_TOKENS[family].get(tokenizer_name)))
        try:
            with diffusers_import_notices():
                models.append(
                    create_diffusers_clip_model_from_ldm(
                        model_class, tensors, subfolder=subfolder, config=str(folder), local_files_only=True
                    )
                )
        except ValueError as error:  # shapes that do not fit the config
            raise ModelFileError(
                f"`model` {str(path)!r} does not fit the configs in `{folder}` ({error}). Pass `--config` (`config=`): "
                "a diffusers folder of the checkpoint's architecture."
            ) from error
    return {"tokenizers": tokenizers, "models": models}


def no_bundled_config(path: Path, family: str, widths: list[int], expected: list[int]) -> str:
    """The message for a single file whose text encoder no bundled config describes."""
    return (
        f"`model` {str(path)!r} looks like a {family} checkpoint but its text encoder has width {widths}, not the "
        f"{expected} of the published {family} models, so no bundled config fits it. Pass `--config` (`config=`): "
        "a diffusers folder of the checkpoint's architecture (its model_index.json and text_encoder/config.json)."
    )
