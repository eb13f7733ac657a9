"""Stand-in for ``backend/diffusion_engine/flux.py``: ``Flux`` (no ``is_*`` flag set; tell it by the
class name or ``model_config``: ``Flux`` (dev) / ``FluxSchnell``, ``huggingface_repo``).

CLIP-L engine: last hidden state + final norm (unused but computed), pooled without projection; T5
engine. Conds: ``crossattn`` = T5 (B, 256, t5 width), ``vector`` = CLIP-L pooled, and for dev
(``use_distilled_cfg_scale`` True, i.e. "schnell" not in the repo name) ``guidance`` =
``[prompts.distilled_cfg_scale or 3.5] * B`` (``SdConditioning.distilled_cfg_scale``, set from
``p.distilled_cfg_scale`` / ``p.hr_distilled_cfg``)."""

from __future__ import annotations

import torch

from backend import memory_management
from backend.args import dynamic_args
from backend.diffusion_engine.base import Flux as FluxConfig
from backend.diffusion_engine.base import FluxSchnell, ForgeDiffusionEngine
from backend.patcher.clip import CLIP
from backend.patcher.unet import UnetPatcher
from backend.patcher.vae import VAE
from backend.text_processing.classic_engine import ClassicTextProcessingEngine
from backend.text_processing.t5_engine import T5TextProcessingEngine


class Flux(ForgeDiffusionEngine):
    matched_guesses = [FluxConfig, FluxSchnell]

    def __init__(self, estimated_config, huggingface_components):
        super().__init__(estimated_config, huggingface_components)
        self.is_inpaint = False
        clip = CLIP(
            model_dict={
                "clip_l": huggingface_components["text_encoder"],
                "t5xxl": huggingface_components["text_encoder_2"],
            },
            tokenizer_dict={
                "clip_l": huggingface_components["tokenizer"],
                "t5xxl": huggingface_components["tokenizer_2"],
            },
        )
        vae = VAE(model=huggingface_components.get("vae"), latent_channels=16)
        if "schnell" not in estimated_config.huggingface_repo.lower():
            self.use_distilled_cfg_scale = True
        unet = UnetPatcher.from_model(model=huggingface_components.get("transformer"), config=estimated_config)
        self.text_processing_engine_l = ClassicTextProcessingEngine(
            text_encoder=clip.cond_stage_model.clip_l,
            tokenizer=clip.tokenizer.clip_l,
            embedding_dir=dynamic_args["embedding_dir"],
            embedding_key="clip_l",
            embedding_expected_shape=clip.cond_stage_model.clip_l.transformer.config.hidden_size,  # Forge: 768
            emphasis_name=dynamic_args["emphasis_name"],
            text_projection=False,
            minimal_clip_skip=1,
            clip_skip=1,
            return_pooled=True,
            final_layer_norm=True,
        )
        self.text_processing_engine_t5 = T5TextProcessingEngine(
            text_encoder=clip.cond_stage_model.t5xxl,
            tokenizer=clip.tokenizer.t5xxl,
            emphasis_name=dynamic_args["emphasis_name"],
        )
        self._standin_finish(unet, clip, vae)

    def set_clip_skip(self, clip_skip):
        self.text_processing_engine_l.clip_skip = clip_skip

    @torch.inference_mode()
    def get_learned_conditioning(self, prompt: list[str]):
        memory_management.load_model_gpu(self.forge_objects.clip.patcher)
        _cond_l, pooled_l = self.text_processing_engine_l(prompt)
        cond_t5 = self.text_processing_engine_t5(prompt)
        cond = dict(crossattn=cond_t5, vector=pooled_l)
        if self.use_distilled_cfg_scale:
            distilled_cfg_scale = getattr(prompt, "distilled_cfg_scale", 3.5) or 3.5
            cond["guidance"] = torch.FloatTensor([distilled_cfg_scale] * len(prompt))
        return cond

    @torch.inference_mode()
    def get_prompt_lengths_on_ui(self, prompt):
        token_count = len(self.text_processing_engine_t5.tokenize([prompt])[0])
        return token_count, max(255, token_count)
