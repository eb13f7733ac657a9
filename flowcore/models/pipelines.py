"""diffusers integration: load a pipeline offline, build its flowcore encoder, and generate from (patched) embeddings.

Three sources, all read without the network:
- a hub id (`stable-diffusion-v1-5/stable-diffusion-v1-5`) already in the local Hugging Face cache;
- a diffusers folder (`model_index.json` with `unet/`, `vae/`, ...);
- a single-file checkpoint (`.safetensors` or `.ckpt`, the layout the WebUI keeps in `models/Stable-diffusion`).
  diffusers' `from_single_file` wants each component's config from the hub; we hand it a local folder instead:
  `config=` if given (a diffusers folder of the same architecture), else the bundled configs of
  `flowcore.models.model_configs` for the architecture diffusers detects from the checkpoint's keys. The tokenizer
  comes from that folder, the local cache (`openai/clip-vit-large-patch14`), or the CLIP merges file.

Supported pipelines: SD 1.x and SD 2.x (`ClipEncoder`), SDXL (`SdxlEncoder`, with pooled embeddings).
SD3 and Flux join CLIP and T5 embeddings in ways the 77-row chunk layout does not cover yet: they raise
`UnsupportedPipelineError`.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import os
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from flowcore.encoders import ClipEncoder, SdxlEncoder
from flowcore.encoders.base import Encoding, TextEncoder
from flowcore.encoders.layout import ROWS_PER_CHUNK
from flowcore.errors import (
    EncodingMismatchError,
    ModelFileError,
    ModelNotFoundError,
    OptionsError,
    UnsupportedPipelineError,
)
from flowcore.models.clip_tokenizer import local_clip_tokenizer
from flowcore.models.devices import resolve_device
from flowcore.models.model_source import (
    DEFAULT_MODEL,
    DOWNLOAD_HINT,
    check_config_folder,
    default_source,
    folder_of,
    resolve_source,
)
from flowcore.models.quiet import diffusers_import_notices, empty_fp32_cast_notice, weight_loading_bars_hidden
from flowcore.patching.options import FlowOptions
from flowcore.patching.patcher import FlowPatcher
from flowcore.patching.report import FlowResult

if TYPE_CHECKING:
    from PIL.Image import Image

logger = logging.getLogger(__name__)


# --- 1. Loading ---


def load_pipeline(
    source: str | os.PathLike | None = None,
    *,
    config: str | os.PathLike | None = None,
    device: str = "auto",
    dtype: torch.dtype | None = None,
):
    """Load a diffusers pipeline from a hub id (local cache only), a diffusers folder or a single-file checkpoint.

    Args:
        source (`str` or `Path`, *optional*): the model; by default SD 1.5 from the local hub cache.
        config (`str` or `Path`, *optional*): for a single file, a diffusers folder whose configs describe its
            architecture; by default flowcore's bundled SD 1.5 / SD 2.1 / SDXL configs, chosen from its keys.
        device (`str`): "auto" (CUDA where available, else CPU), "cpu", "cuda", ...
        dtype (`torch.dtype`, *optional*): by default float16 on CUDA and float32 elsewhere.

    Raises `ModelNotFoundError` (with what to download or pass) when the model is not on this machine.
    """
    # 1. Check inputs: the device, the source and the config folder, before anything loads.
    device = resolve_device(device)
    dtype = dtype or (torch.float16 if device.startswith("cuda") else torch.float32)
    resolved = resolve_source(default_source() if source is None else source)
    if config is not None:
        check_config_folder(config)

    # 2. Load it from whatever `source` names, never from the network.
    with diffusers_import_notices(), empty_fp32_cast_notice(), weight_loading_bars_hidden():
        if resolved.kind == "file":
            pipe = _load_single_file(Path(resolved.location), config, dtype)
        elif resolved.kind == "folder":
            pipe = _load_folder(resolved.location, dtype)
        else:
            pipe = _load_folder(str(folder_of(resolved)), dtype, hub_id=resolved.location)

    # 3. Move it to the device; leave the rest of the pipeline as loaded.
    check_supported(pipe)
    return pipe.to(device)


def _dtype_argument(dtype: torch.dtype) -> dict:
    """diffusers renamed `torch_dtype` to `dtype` in 0.40; pass whichever the installed version takes."""
    import diffusers
    from packaging.version import Version

    return {"dtype" if Version(diffusers.__version__).release >= (0, 40) else "torch_dtype": dtype}


def _load_folder(source: str, dtype: torch.dtype, hub_id: str | None = None):
    """A diffusers folder, or a hub id from the local cache only."""
    from diffusers import DiffusionPipeline

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # huggingface_hub's deprecation noise from diffusers
            config = DiffusionPipeline.load_config(source, local_files_only=True)
    except (OSError, ValueError) as error:
        if hub_id is None:
            raise ModelNotFoundError(f"`{source}` is not a diffusers folder (no readable model_index.json).") from error
        raise ModelNotFoundError(
            f"The model `{hub_id}` is not in the local Hugging Face cache and flowcore never downloads. "
            + DOWNLOAD_HINT.format(repo=hub_id)
        ) from error
    extra = {"safety_checker": None} if "safety_checker" in config else {}
    if "feature_extractor" in config and not (Path(source) / "feature_extractor").is_dir():
        extra["feature_extractor"] = None  # only the safety checker uses it
    variant = _variant_of(Path(source) / "unet")
    try:
        return DiffusionPipeline.from_pretrained(
            source, local_files_only=True, variant=variant, **_dtype_argument(dtype), **extra
        )
    except OSError as error:
        raise ModelNotFoundError(
            f"Part of `{source}` is missing locally ({error}). " + DOWNLOAD_HINT.format(repo=hub_id or DEFAULT_MODEL)
        ) from error


def _variant_of(folder: Path) -> str | None:
    """ "fp16" where a component folder holds only half-precision weights (as `tools/demo.py` fetches them)."""
    names = ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin", "model.safetensors")
    plain = any((folder / name).is_file() for name in names)
    return "fp16" if not plain and any(folder.glob("*.fp16.safetensors")) else None


def detect_checkpoint_type(path: str | os.PathLike) -> str:
    """diffusers' name for a single file's architecture ("v1", "v2", "xl_base", ...), read from its keys and
    shapes without loading the weights (for `.safetensors`)."""
    from diffusers.loaders.single_file_utils import infer_diffusers_model_type

    path = Path(path)
    if path.suffix == ".safetensors":
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as file:
            shapes = {key: file.get_slice(key).get_shape() for key in file.keys()}  # noqa: SIM118 (safe_open is not a dict)
        checkpoint = {key: torch.empty(shape, device="meta") for key, shape in shapes.items()}
    else:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        checkpoint = checkpoint.get("state_dict", checkpoint)
    return infer_diffusers_model_type(checkpoint)


def _load_single_file(path: Path, config: str | os.PathLike | None, dtype: torch.dtype):
    """A single-file checkpoint, with its configs from `config` or flowcore's bundled ones (never the hub)."""
    import diffusers

    from flowcore.models.model_configs import FAMILY_OF_MODEL_TYPE, PAD_TOKENS, write_config_folder

    # 1. Find a local config folder for the checkpoint's architecture.
    family = None
    if config is None:
        model_type = detect_checkpoint_type(path)
        family = FAMILY_OF_MODEL_TYPE.get(model_type)
        if family is None:
            raise ModelFileError(
                f"`model` {path.name!r} looks like a `{model_type}` checkpoint; flowcore's bundled configs cover SD "
                "1.x, SD 2.x and SDXL base. Pass `--config` (`config=`): a diffusers folder of its architecture."
            )
        config = write_config_folder(family)
    config = Path(config)
    if not (config / "model_index.json").is_file():
        raise ModelNotFoundError(f"`config` must be a diffusers folder with a model_index.json; `{config}` is not.")
    class_name = diffusers.DiffusionPipeline.load_config(str(config))["_class_name"]
    pipeline_class = getattr(diffusers, class_name)

    # 2. Tokenizers: the config folder's own, else the cached CLIP tokenizer or the CLIP merges file.
    tokenizers = {}
    for name in ("tokenizer", "tokenizer_2"):
        if name in pipeline_class.load_config(str(config)) and not (config / name).is_dir():
            pad = PAD_TOKENS.get(family or "", {}).get(name)
            tokenizers[name] = local_clip_tokenizer(pad_token=pad)

    # 3. Let diffusers convert the weights, reading every config from the local folder.
    logger.info("Loading %s as %s with configs from %s", path, class_name, config)
    try:
        return pipeline_class.from_single_file(
            str(path), config=str(config), local_files_only=True, **_dtype_argument(dtype), **tokenizers
        )
    except OSError as error:
        raise ModelNotFoundError(f"Could not load `{path}` offline: {error}") from error
    except ValueError as error:  # diffusers: a tensor's shape does not fit the config
        raise ModelFileError(
            f"`model` {path.name!r} does not fit the configs in `{config}` ({str(error).split('. ')[0]}). Pass "
            "`--config` (`config=`): a diffusers folder of the checkpoint's architecture."
        ) from error


# --- 2. The encoder adapter ---


def check_supported(pipe) -> None:
    """Raise `UnsupportedPipelineError` unless flowcore can build an encoder for `pipe`."""
    name = type(pipe).__name__
    if "StableDiffusion3" in name or "Flux" in name:
        raise UnsupportedPipelineError(
            f"`{name}` is not supported yet: its prompt embeddings come from T5 (with CLIP), which flowcore's "
            "77-row chunks do not lay out. To analyze its T5 encoder alone, wrap it yourself: "
            "`GenericEncoder(pipe.tokenizer_2, pipe.text_encoder_2, causal=False)`."
        )
    if not hasattr(pipe, "text_encoder") or not hasattr(pipe, "tokenizer") or not hasattr(pipe, "unet"):
        raise UnsupportedPipelineError(f"`{name}` is not a Stable Diffusion pipeline (SD 1.x, SD 2.x or SDXL).")


def encoder_for_pipeline(pipe, clip_skip: int = 1) -> TextEncoder:
    """The flowcore encoder for a loaded pipeline: `SdxlEncoder` for SDXL, `ClipEncoder` for SD 1.x / 2.x.

    Its encodings are what the pipeline itself would compute for `prompt_embeds` (diffusers' `clip_skip=None`
    equals our `clip_skip=1`).
    """
    check_supported(pipe)
    if getattr(pipe, "text_encoder_2", None) is not None:
        if clip_skip != 1:
            raise OptionsError(f"`clip_skip` must be 1 for SDXL (it uses the penultimate layer) but is {clip_skip}.")
        return SdxlEncoder(pipe.tokenizer, pipe.text_encoder, pipe.tokenizer_2, pipe.text_encoder_2)
    return ClipEncoder(pipe.tokenizer, pipe.text_encoder, clip_skip=clip_skip)


def patcher_for_pipeline(pipe, options: FlowOptions | None = None, clip_skip: int = 1, **kwargs) -> FlowPatcher:
    """A `FlowPatcher` over the pipeline's text encoder(s); `kwargs` go to it (`syntax=`, `emphasis=`, ...)."""
    return FlowPatcher(encoder_for_pipeline(pipe, clip_skip=clip_skip), options=options, **kwargs)


# --- 3. Generation ---


def as_encoding(conditioning: FlowResult | Encoding | torch.Tensor, patched: bool = True) -> Encoding:
    """The rows `(77 * chunks, dim)` and pooled vector to generate from: a result's patched (or original)
    encoding, an `Encoding`, or bare rows."""
    if isinstance(conditioning, FlowResult):
        if patched:
            return Encoding(conditioning.patched, conditioning.pooled_patched)
        return Encoding(conditioning.original, conditioning.pooled_original)
    if isinstance(conditioning, Encoding):
        return conditioning
    return Encoding(conditioning, None)


@contextlib.contextmanager
def progress_bar_config(pipe, **settings):
    """The pipeline's progress bar set as `settings` inside the block, and the caller's own settings back after:
    the pipeline is the caller's, shared with their code."""
    had = hasattr(pipe, "_progress_bar_config")
    saved = copy.deepcopy(pipe._progress_bar_config) if had else None
    pipe.set_progress_bar_config(**settings)
    try:
        yield
    finally:
        if had:
            pipe._progress_bar_config = saved
        else:
            del pipe._progress_bar_config


def _pad_to_rows(rows: torch.Tensor, n_rows: int, empty: torch.Tensor) -> torch.Tensor:
    """Append empty-prompt chunks `(77, dim)` until `rows` has `n_rows` rows (the WebUI's way of matching
    a positive and a negative prompt of different lengths)."""
    missing = (n_rows - rows.shape[0]) // ROWS_PER_CHUNK
    if missing <= 0:
        return rows
    return torch.cat([rows, empty.to(rows).repeat(missing, 1)])


@torch.no_grad()
def generate(
    pipe,
    conditioning: FlowResult | Encoding | torch.Tensor,
    *,
    seed: int = 0,
    steps: int = 25,
    guidance_scale: float = 7.5,
    negative_prompt: str = "",
    width: int | None = None,
    height: int | None = None,
    patched: bool = True,
    encoder: TextEncoder | None = None,
    progress: bool = True,
) -> Image:
    """Generate one image from an encoding, passing `prompt_embeds` (and SDXL's pooled embeds) to the pipeline.

    Args:
        conditioning: a `FlowResult` (its patched encoding, or the original with `patched=False`), an
            `Encoding`, or rows `(77 * chunks, dim)`.
        seed (`int`): the same seed gives the same starting noise, so original and patched images compare.
        negative_prompt (`str`): encoded with the same encoder; SDXL with an empty one uses zeros, as diffusers does.
        encoder: the pipeline's flowcore encoder (built with `encoder_for_pipeline` when not given).
    """
    # 1. Check inputs.
    encoding = as_encoding(conditioning, patched)
    rows, pooled = encoding.rows, encoding.pooled
    if rows.ndim != 2 or rows.shape[0] % ROWS_PER_CHUNK:
        raise EncodingMismatchError(
            f"`conditioning` rows must have shape (77 * chunks, dim) but have shape {tuple(rows.shape)}."
        )
    encoder = encoder or encoder_for_pipeline(pipe)
    is_sdxl = getattr(pipe, "text_encoder_2", None) is not None
    if is_sdxl and pooled is None:
        raise EncodingMismatchError("SDXL needs a pooled vector: pass a `FlowResult` or an `Encoding` with `pooled`.")

    # 2. Encode the negative prompt and give both sides the same number of chunks.
    if is_sdxl and not negative_prompt and getattr(pipe.config, "force_zeros_for_empty_prompt", False):
        negative = Encoding(torch.zeros_like(rows), torch.zeros_like(pooled))
    else:
        negative = encoder.encode(encoder.layout(negative_prompt))
    negative_rows = negative.rows
    if rows.shape[0] != negative_rows.shape[0]:
        empty = encoder.empty().rows
        n_rows = max(rows.shape[0], negative_rows.shape[0])
        rows, negative_rows = _pad_to_rows(rows, n_rows, empty), _pad_to_rows(negative_rows, n_rows, empty)

    # 3. Run the pipeline on the embeddings.
    kwargs = {}
    if is_sdxl:
        kwargs = {"pooled_prompt_embeds": pooled[None], "negative_pooled_prompt_embeds": negative.pooled[None]}
    generator = torch.Generator(device="cpu").manual_seed(seed)
    with progress_bar_config(pipe, disable=not progress, leave=False):
        output = pipe(
            prompt_embeds=rows[None],
            negative_prompt_embeds=negative_rows[None],
            num_inference_steps=steps,
            guidance_scale=guidance_scale,
            width=width,
            height=height,
            generator=generator,
            output_type="pil",
            **kwargs,
        )
    return output.images[0]
