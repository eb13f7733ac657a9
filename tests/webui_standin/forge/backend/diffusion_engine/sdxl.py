"""Stand-in for ``backend/diffusion_engine/sdxl.py``: ``StableDiffusionXL`` (``is_sdxl``).

Two engines, both ``hidden_states[-2]`` (minimal clip skip 2) without final norm; G returns the
pooled output through ``text_projection``; both expect embeddings of shape L + G width.
Conds: ``crossattn`` = cat(L, G) on the feature axis (B, 77k, dim_l + dim_g), ``vector`` = G pooled,
then ``Timestep`` embeddings of height, width, crop top, crop left, target height, target width
(``size_dim`` each; Forge: 256). An all-empty negative prompt zeroes L, G and pooled (not the sizes)."""

from __future__ import annotations

import math

import torch
from modules.shared import opts

from backend import memory_management
from backend.args import dynamic_args
from backend.diffusion_engine.base import SDXL, ForgeDiffusionEngine
from backend.patcher.clip import CLIP
from backend.patcher.unet import UnetPatcher
from backend.patcher.vae import VAE
from backend.text_processing.classic_engine import ClassicTextProcessingEngine


def timestep_embedding(timesteps, dim, max_period=10000):
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32) / half)
    args = timesteps[:, None].float() * freqs[None]
    embedding = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    if dim % 2:
        embedding = torch.cat([embedding, torch.zeros_like(embedding[:, :1])], dim=-1)
    return embedding


class Timestep(torch.nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.dim = dim

    def forward(self, t):
        return timestep_embedding(t, self.dim)


class StableDiffusionXL(ForgeDiffusionEngine):
    matched_guesses = [SDXL]

    def __init__(self, estimated_config, huggingface_components, size_dim=256):
        super().__init__(estimated_config, huggingface_components)
        clip = CLIP(
            model_dict={
                "clip_l": huggingface_components["text_encoder"],
                "clip_g": huggingface_components["text_encoder_2"],
            },
            tokenizer_dict={
                "clip_l": huggingface_components["tokenizer"],
                "clip_g": huggingface_components["tokenizer_2"],
            },
        )
        vae = VAE(model=huggingface_components.get("vae"), latent_channels=4)
        unet = UnetPatcher.from_model(model=huggingface_components.get("unet"), config=estimated_config)
        widths = (
            clip.cond_stage_model.clip_l.transformer.config.hidden_size
            + clip.cond_stage_model.clip_g.transformer.config.hidden_size
        )  # Forge: 2048
        common = dict(
            embedding_dir=dynamic_args["embedding_dir"],
            embedding_expected_shape=widths,
            emphasis_name=dynamic_args["emphasis_name"],
            minimal_clip_skip=2,
            clip_skip=2,
            final_layer_norm=False,
        )
        self.text_processing_engine_l = ClassicTextProcessingEngine(
            text_encoder=clip.cond_stage_model.clip_l,
            tokenizer=clip.tokenizer.clip_l,
            embedding_key="clip_l",
            text_projection=False,
            return_pooled=False,
            **common,
        )
        self.text_processing_engine_g = ClassicTextProcessingEngine(
            text_encoder=clip.cond_stage_model.clip_g,
            tokenizer=clip.tokenizer.clip_g,
            embedding_key="clip_g",
            text_projection=True,
            return_pooled=True,
            **common,
        )
        self.embedder = Timestep(size_dim)
        self._standin_finish(unet, clip, vae)
        self.is_sdxl = True

    def set_clip_skip(self, clip_skip):
        self.text_processing_engine_l.clip_skip = clip_skip
        self.text_processing_engine_g.clip_skip = clip_skip

    @torch.inference_mode()
    def get_learned_conditioning(self, prompt: list[str]):
        memory_management.load_model_gpu(self.forge_objects.clip.patcher)
        cond_l = self.text_processing_engine_l(prompt)
        cond_g, clip_pooled = self.text_processing_engine_g(prompt)
        width = getattr(prompt, "width", 1024) or 1024
        height = getattr(prompt, "height", 1024) or 1024
        is_negative_prompt = getattr(prompt, "is_negative_prompt", False)
        sizes = [height, width, opts.sdxl_crop_top, opts.sdxl_crop_left, height, width]
        flat = torch.cat([self.embedder(torch.Tensor([v])) for v in sizes]).flatten()
        flat = flat.unsqueeze(0).repeat(clip_pooled.shape[0], 1).to(clip_pooled)
        if is_negative_prompt and all(x == "" for x in prompt):
            clip_pooled = torch.zeros_like(clip_pooled)
            cond_l = torch.zeros_like(cond_l)
            cond_g = torch.zeros_like(cond_g)
        return dict(crossattn=torch.cat([cond_l, cond_g], dim=2), vector=torch.cat([clip_pooled, flat], dim=1))

    @torch.inference_mode()
    def get_prompt_lengths_on_ui(self, prompt):
        _, token_count = self.text_processing_engine_l.process_texts([prompt])
        return token_count, self.text_processing_engine_l.get_target_prompt_token_count(token_count)
