"""Stand-in for ``backend/diffusion_engine/sd15.py``: ``StableDiffusion`` (``is_sd1``).

``text_processing_engine`` over CLIP-L: final layer norm, clip skip from 1, no pooled.
``get_learned_conditioning(prompts)`` (under ``torch.inference_mode()``, after
``memory_management.load_model_gpu(forge_objects.clip.patcher)``) -> (B, 77k, width)."""

from __future__ import annotations

import torch

from backend import memory_management
from backend.args import dynamic_args
from backend.diffusion_engine.base import SD15, ForgeDiffusionEngine
from backend.patcher.clip import CLIP
from backend.patcher.unet import UnetPatcher
from backend.patcher.vae import VAE
from backend.text_processing.classic_engine import ClassicTextProcessingEngine


class StableDiffusion(ForgeDiffusionEngine):
    matched_guesses = [SD15]

    def __init__(self, estimated_config, huggingface_components):
        super().__init__(estimated_config, huggingface_components)
        clip = CLIP(
            model_dict={"clip_l": huggingface_components["text_encoder"]},
            tokenizer_dict={"clip_l": huggingface_components["tokenizer"]},
        )
        vae = VAE(model=huggingface_components.get("vae"), latent_channels=4)
        unet = UnetPatcher.from_model(model=huggingface_components.get("unet"), config=estimated_config)
        width = clip.cond_stage_model.clip_l.transformer.config.hidden_size  # Forge: 768
        self.text_processing_engine = ClassicTextProcessingEngine(
            text_encoder=clip.cond_stage_model.clip_l,
            tokenizer=clip.tokenizer.clip_l,
            embedding_dir=dynamic_args["embedding_dir"],
            embedding_key="clip_l",
            embedding_expected_shape=width,
            emphasis_name=dynamic_args["emphasis_name"],
            text_projection=False,
            minimal_clip_skip=1,
            clip_skip=1,
            return_pooled=False,
            final_layer_norm=True,
        )
        self._standin_finish(unet, clip, vae)
        self.is_sd1 = True

    def set_clip_skip(self, clip_skip):
        self.text_processing_engine.clip_skip = clip_skip

    @torch.inference_mode()
    def get_learned_conditioning(self, prompt: list[str]):
        memory_management.load_model_gpu(self.forge_objects.clip.patcher)
        return self.text_processing_engine(prompt)

    @torch.inference_mode()
    def get_prompt_lengths_on_ui(self, prompt):
        _, token_count = self.text_processing_engine.process_texts([prompt])
        return token_count, self.text_processing_engine.get_target_prompt_token_count(token_count)
