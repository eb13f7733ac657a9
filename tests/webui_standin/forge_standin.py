"""Forge mode of the stand-in: tiny random Forge diffusion-engine models and the Forge side of LoRA
and textual inversion. ``standin.WebUI("forge-sd15" | "forge-sdxl" | "forge-sd35" | "forge-flux" |
"forge-flux-schnell")`` uses this; the ``backend`` package lives in ``forge/`` and becomes importable
once ``install()`` ran (never in A1111 mode before that)."""

from __future__ import annotations

import copy
import functools
import importlib.util
import os
import shutil
import sys
import tempfile
import zlib
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
FORGE_ROOT = HERE / "forge"
FAMILIES = ("forge-sd15", "forge-sdxl", "forge-sd35", "forge-flux", "forge-flux-schnell")

_embedding_dir: str | None = None


def install():
    """Put ``backend`` on ``sys.path`` and point ``dynamic_args["embedding_dir"]`` at an empty folder."""
    if str(FORGE_ROOT) not in sys.path:
        sys.path.insert(0, str(FORGE_ROOT))
    from backend.args import dynamic_args

    dynamic_args["embedding_dir"] = embedding_dir()


def embedding_dir() -> str:
    global _embedding_dir
    if _embedding_dir is None:
        _embedding_dir = tempfile.mkdtemp(prefix="standin-forge-embeddings-")
    return _embedding_dir


def reset():
    """Empty the embeddings folder, forget loaded models and the last TI/emphasis params."""
    install()
    folder = embedding_dir()
    for entry in os.listdir(folder):
        path = os.path.join(folder, entry)
        shutil.rmtree(path) if os.path.isdir(path) else os.remove(path)
    from backend import memory_management
    from backend.text_processing import classic_engine

    memory_management.standin_reset()
    classic_engine.last_extra_generation_params = {}


# ------------------------------------------------------------------------------------------
# tokenizers and tiny encoders
# ------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=1)
def clip_g_tokenizer():
    """SDXL's / SD3's ``tokenizer_2``: the CLIP BPE with pad token "!" (id 0)."""
    import standin

    tokenizer = copy.deepcopy(standin.shared_tokenizer())
    tokenizer.pad_token = "!"
    return tokenizer


@functools.lru_cache(maxsize=1)
def t5_tokenizer():
    """A tiny SentencePiece-style (Unigram, ``▁`` word starts) fast tokenizer: <pad> 0, </s> 1, <unk> 2,
    no BOS (T5's layout; the real one has 32100 entries)."""
    spec = importlib.util.spec_from_file_location("_standin_tokenizer_families", HERE.parent / "tokenizer_families.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    tokenizer = module.sentencepiece(start_token=False)
    assert tokenizer.pad_token_id == 0 and tokenizer.eos_token_id == 1
    return tokenizer


def integrated_clip(seed, hidden_size, layers, act="quick_gelu", projection=False):
    """``IntegratedCLIP`` over a tiny random ``CLIPTextModel`` (trained-like LayerNorms); with
    ``projection`` a random ``transformer.text_projection`` (hidden -> hidden)."""
    import standin
    from backend.nn.clip import IntegratedCLIP

    transformer = standin.tiny_clip(seed, hidden_size=hidden_size, layers=layers, act=act)
    clip = IntegratedCLIP(None, transformer.config, add_text_projection=projection, transformer=transformer)
    if projection:
        generator = torch.Generator().manual_seed(seed + 2000)
        with torch.no_grad():
            weight = clip.transformer.text_projection.weight
            weight.copy_(torch.randn(weight.shape, generator=generator) / hidden_size**0.5)
    return clip.eval()


def integrated_t5(seed, d_model=64, layers=2, heads=4, d_ff=96):
    """``IntegratedT5`` over a tiny random transformers ``T5EncoderModel`` (gated GELU like T5 v1.1 /
    T5-XXL, relative attention buckets 32), layer norms with trained-like random scales."""
    from backend.nn.t5 import IntegratedT5
    from transformers import T5Config, T5EncoderModel

    config = T5Config(
        vocab_size=len(t5_tokenizer()),
        d_model=d_model,
        d_kv=d_model // heads,
        d_ff=d_ff,
        num_layers=layers,
        num_heads=heads,
        feed_forward_proj="gated-gelu",
        is_encoder_decoder=False,
        use_cache=False,
        pad_token_id=0,
        eos_token_id=1,
    )
    torch.manual_seed(seed)
    model = T5EncoderModel(config).eval()
    generator = torch.Generator().manual_seed(seed + 1000)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if name.endswith("layer_norm.weight"):
                parameter.copy_(1 + 0.1 * torch.randn(parameter.shape, generator=generator))
    return IntegratedT5(model).eval()


# ------------------------------------------------------------------------------------------
# models
# ------------------------------------------------------------------------------------------


def _finish(model, name):
    from modules.sd_models import CheckpointInfo

    # what sd_models.forge_model_reload sets after building the engine
    model.extra_generation_params = {}
    model.comments = []
    model.sd_checkpoint_info = CheckpointInfo(name=name, title=name, short_title=name, name_for_extra=name)
    model.filename = f"<standin>/{name}.safetensors"
    model.sd_model_hash = model.sd_checkpoint_info.hash
    return model


def make_forge_sd15_model(seed=0, hidden_size=32, layers=2, name="standin-forge-sd15"):
    """Same CLIP weights as ``standin.make_sd1_model`` with the same arguments."""
    import standin
    from backend.diffusion_engine.base import SD15
    from backend.diffusion_engine.sd15 import StableDiffusion

    components = {"text_encoder": integrated_clip(seed, hidden_size, layers), "tokenizer": standin.shared_tokenizer()}
    return _finish(StableDiffusion(SD15(), components), name)


def make_forge_sdxl_model(seed=0, dim_l=32, dim_g=48, layers=3, size_dim=8, name="standin-forge-sdxl"):
    """crossattn dim_l + dim_g (SDXL: 768 + 1280), vector dim_g + 6 * size_dim (SDXL: 1280 + 6 * 256)."""
    import standin
    from backend.diffusion_engine.base import SDXL
    from backend.diffusion_engine.sdxl import StableDiffusionXL

    components = {
        "text_encoder": integrated_clip(seed, dim_l, layers),
        "text_encoder_2": integrated_clip(seed + 1, dim_g, layers, act="gelu", projection=True),
        "tokenizer": standin.shared_tokenizer(),
        "tokenizer_2": clip_g_tokenizer(),
    }
    return _finish(StableDiffusionXL(SDXL(), components, size_dim=size_dim), name)


def make_forge_sd35_model(seed=0, dim_l=16, dim_g=32, dim_t5=64, layers=2, name="standin-forge-sd35"):
    """crossattn (B, 77k + 256, dim_t5) with L|G zero-padded to dim_t5 (SD3.5: 768 + 1280 -> 4096),
    vector dim_l + dim_g (SD3.5: 2048). T5 only with ``opts.sd3_enable_t5``."""
    import standin
    from backend.diffusion_engine.base import SD3
    from backend.diffusion_engine.sd35 import StableDiffusion3

    assert dim_l + dim_g <= dim_t5, "the CLIP part is padded to the T5 width"
    components = {
        "text_encoder": integrated_clip(seed, dim_l, layers, projection=True),
        "text_encoder_2": integrated_clip(seed + 1, dim_g, layers, act="gelu", projection=True),
        "text_encoder_3": integrated_t5(seed + 2, d_model=dim_t5),
        "tokenizer": standin.shared_tokenizer(),
        "tokenizer_2": clip_g_tokenizer(),
        "tokenizer_3": t5_tokenizer(),
    }
    return _finish(StableDiffusion3(SD3(), components), name)


def make_forge_flux_model(seed=0, dim_l=32, dim_t5=64, layers=2, schnell=False, name=None):
    """crossattn (B, 256, dim_t5) (Flux: 4096), vector dim_l (768), ``guidance`` for dev."""
    import standin
    from backend.diffusion_engine.base import Flux as FluxConfig
    from backend.diffusion_engine.base import FluxSchnell
    from backend.diffusion_engine.flux import Flux

    components = {
        "text_encoder": integrated_clip(seed, dim_l, layers),
        "text_encoder_2": integrated_t5(seed + 2, d_model=dim_t5),
        "tokenizer": standin.shared_tokenizer(),
        "tokenizer_2": t5_tokenizer(),
    }
    config = FluxSchnell() if schnell else FluxConfig()
    return _finish(Flux(config, components), name or ("standin-flux-schnell" if schnell else "standin-flux-dev"))


def make_model(family, seed=0):
    install()
    if family == "forge-sd15":
        return make_forge_sd15_model(seed)
    if family == "forge-sdxl":
        return make_forge_sdxl_model(seed)
    if family == "forge-sd35":
        return make_forge_sd35_model(seed)
    if family == "forge-flux":
        return make_forge_flux_model(seed)
    if family == "forge-flux-schnell":
        return make_forge_flux_model(seed, schnell=True)
    raise ValueError(f"unknown Forge family {family!r}")


def is_forge_model(model) -> bool:
    return hasattr(model, "forge_objects") and hasattr(model, "forge_objects_original")


def text_engines(model):
    """Every ``ClassicTextProcessingEngine`` of the model (L first)."""
    names = ("text_processing_engine", "text_processing_engine_l", "text_processing_engine_g")
    return [getattr(model, n) for n in names if hasattr(model, n)]


# ------------------------------------------------------------------------------------------
# textual inversion
# ------------------------------------------------------------------------------------------


def add_embedding(model, name, vectors=1, seed=0, scale=0.5, data=None):
    """Write ``name.safetensors`` into the embeddings folder and reload every engine's database (Forge
    reads the folder when the model is built, so this is what loading the model again does). Default
    data: SDXL ``{"clip_l", "clip_g"}``, else one ``(vectors, CLIP-L width)`` tensor (SD3: only its L
    engine takes it). Returns the first engine's ``Embedding`` (registered or skipped)."""
    import safetensors.torch

    engines = text_engines(model)
    generator = torch.Generator().manual_seed(seed)

    def width(engine):
        return engine.text_encoder.transformer.config.hidden_size

    if data is None:
        if getattr(model, "is_sdxl", False):
            data = {
                "clip_l": scale * torch.randn(vectors, width(engines[0]), generator=generator),
                "clip_g": scale * torch.randn(vectors, width(engines[1]), generator=generator),
            }
        else:
            data = {"emb_params": scale * torch.randn(vectors, width(engines[0]), generator=generator)}
    safetensors.torch.save_file(
        {k: v.contiguous() for k, v in data.items()}, os.path.join(embedding_dir(), f"{name}.safetensors")
    )
    for engine in engines:
        engine.embeddings.load_textual_inversion_embeddings()
    db = engines[0].embeddings
    return db.word_embeddings.get(name) or db.skipped_embeddings.get(name)


# ------------------------------------------------------------------------------------------
# LoRA (extensions-builtin/sd_forge_lora/networks.py)
# ------------------------------------------------------------------------------------------


def lora_clip_patches(on_disk, cond_stage_model) -> dict:
    """The synthetic LoRA's patches for a ``JointTextEncoder``: every 2-D ``weight`` of a Linear of every
    text encoder (CLIP-L/G attention and MLP, ``text_projection``, T5 q/k/v/o and wi/wo), keyed by Forge's
    parameter name, ``("lora", (up, down, None, None, None))`` with ``up`` = scale * N(0, 1) (out, rank)
    and ``down`` N(0, 1) (rank, in) from a generator seeded by ``seed`` and the key."""
    from backend.patcher.base import _with_text_model

    patches = {}
    for module_name, module in cond_stage_model.named_modules():
        if not isinstance(module, torch.nn.Linear):
            continue
        key = _with_text_model(cond_stage_model, f"{module_name}.weight")
        up, down = lora_up_down(on_disk, key, module.weight.shape)
        patches[key] = ("lora", (up, down, None, None, None))
    return patches


def lora_up_down(on_disk, key, shape):
    generator = torch.Generator().manual_seed(zlib.crc32(f"{on_disk.seed}:{key}".encode()))
    up = on_disk.scale * torch.randn(shape[0], on_disk.rank, generator=generator)
    down = torch.randn(on_disk.rank, shape[1], generator=generator)
    return up, down


def load_lora_for_models(model, clip, on_disk, strength_model, strength_clip, filename="default", online_mode=False):
    """No UNet in the stand-in: only the clip gets a clone with the patches (when any key matched)."""
    new_clip = clip.clone() if clip is not None else None
    if new_clip is not None:
        patches = lora_clip_patches(on_disk, clip.cond_stage_model)
        loaded = new_clip.add_patches(
            filename=filename, patches=patches, strength_patch=strength_clip, online_mode=online_mode
        )
        if loaded:
            clip = new_clip
    return model, clip


def load_networks(names, te_multipliers=None, unet_multipliers=None, dyn_dims=None):
    """Forge's ``networks.load_networks``: ``loaded_networks`` lists the named networks; when the
    ``[[filename, unet, te, online]...]`` list differs from ``sd_model.current_lora_hash``, the clip
    and unet go back to ``forge_objects_original`` and every LoRA is added to fresh clones; the result
    is stored in ``forge_objects_after_applying_lora``. Nothing touches weights here: they change when
    the clip patcher is loaded (``memory_management.load_model_gpu``). A missing name makes Forge raise
    (``None.filename``) after ``loaded_networks`` was filled, leaving the previous LoRA set applied."""
    import networks
    from modules import shared

    sd_model = shared.sd_model
    networks.loaded_networks.clear()
    on_disk_list = [networks.available_network_aliases.get(name) for name in names]
    for name, on_disk in zip(names, on_disk_list):
        if on_disk is None:
            continue
        net = networks.Network(name, on_disk)
        net.mentioned_name = name
        on_disk.read_hash()
        networks.loaded_networks.append(net)
    unet_multipliers = unet_multipliers or [1.0] * len(names)
    te_multipliers = te_multipliers or [1.0] * len(names)
    targets = [[on_disk.filename, u, t, False] for on_disk, u, t in zip(on_disk_list, unet_multipliers, te_multipliers)]
    targets_hash = str(targets)
    if sd_model.current_lora_hash == targets_hash:
        return
    sd_model.current_lora_hash = targets_hash
    sd_model.forge_objects.unet = sd_model.forge_objects_original.unet
    sd_model.forge_objects.clip = sd_model.forge_objects_original.clip
    for on_disk, (filename, strength_model, strength_clip, online) in zip(on_disk_list, targets):
        sd_model.forge_objects.unet, sd_model.forge_objects.clip = load_lora_for_models(
            sd_model.forge_objects.unet,
            sd_model.forge_objects.clip,
            on_disk,
            strength_model,
            strength_clip,
            filename,
            online,
        )
    sd_model.forge_objects_after_applying_lora = sd_model.forge_objects.shallow_copy()
