"""Stand-in for ``backend/diffusion_engine/base.py``: ``ForgeObjects`` and ``ForgeDiffusionEngine``.

An engine is a plain object (not a ``torch.nn.Module``) with WebUI-compatibility attributes:
``cond_stage_model = None``, ``first_stage_model = None``, ``is_sd1/is_sd2/is_sdxl/is_sd3`` (Flux: all
False), ``use_distilled_cfg_scale``, ``tiling_enabled``; ``forge_objects`` (``unet``, ``clip``, ``vae``,
``clipvision``), ``forge_objects_original`` and ``forge_objects_after_applying_lora`` (shallow copies),
``current_lora_hash``. What ``sd_models.forge_model_reload`` adds after building one is set by the
stand-in's builder: ``sd_checkpoint_info``, ``filename``, ``sd_model_hash``, ``extra_generation_params``,
``comments``."""

from __future__ import annotations


class ForgeObjects:
    def __init__(self, unet, clip, vae, clipvision):
        self.unet = unet
        self.clip = clip
        self.vae = vae
        self.clipvision = clipvision

    def shallow_copy(self):
        return ForgeObjects(self.unet, self.clip, self.vae, self.clipvision)


class StandinConfig:
    """What ``huggingface_guess`` returns (the stand-in's: the class name and ``huggingface_repo``)."""

    huggingface_repo: str | None = None

    def __init__(self, huggingface_repo=None, inpaint=False):
        if huggingface_repo is not None:
            self.huggingface_repo = huggingface_repo
        self.inpaint = inpaint

    def inpaint_model(self):
        return self.inpaint


class SD15(StandinConfig):
    huggingface_repo = "runwayml/stable-diffusion-v1-5"


class SDXL(StandinConfig):
    huggingface_repo = "stabilityai/stable-diffusion-xl-base-1.0"


class SD3(StandinConfig):
    huggingface_repo = "stabilityai/stable-diffusion-3-medium-diffusers"


class Flux(StandinConfig):
    huggingface_repo = "black-forest-labs/FLUX.1-dev"


class FluxSchnell(Flux):
    huggingface_repo = "black-forest-labs/FLUX.1-schnell"


class ForgeDiffusionEngine:
    matched_guesses: list = []

    def __init__(self, estimated_config, huggingface_components):
        self.model_config = estimated_config
        self.is_inpaint = estimated_config.inpaint_model()
        self.forge_objects = None
        self.forge_objects_original = None
        self.forge_objects_after_applying_lora = None
        self.current_lora_hash = str([])
        self.fix_for_webui_backward_compatibility()

    def set_clip_skip(self, clip_skip):
        pass

    def get_first_stage_encoding(self, x):
        return x

    def get_learned_conditioning(self, prompt: list[str]):
        pass

    def encode_first_stage(self, x):
        return x  # no VAE in the stand-in

    def decode_first_stage(self, x):
        return x

    def get_prompt_lengths_on_ui(self, prompt):
        return 0, 75

    def is_webui_legacy_model(self):
        return self.is_sd1 or self.is_sd2 or self.is_sdxl or self.is_sd3

    def fix_for_webui_backward_compatibility(self):
        self.tiling_enabled = False
        self.first_stage_model = None
        self.cond_stage_model = None
        self.use_distilled_cfg_scale = False
        self.is_sd1 = False
        self.is_sd2 = False
        self.is_sdxl = False
        self.is_sd3 = False

    def _standin_finish(self, unet, clip, vae):
        self.forge_objects = ForgeObjects(unet=unet, clip=clip, vae=vae, clipvision=None)
        self.forge_objects_original = self.forge_objects.shallow_copy()
        self.forge_objects_after_applying_lora = self.forge_objects.shallow_copy()
