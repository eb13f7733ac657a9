"""Stand-in for ``backend/diffusion_engine/sd35.py``: ``StableDiffusion3`` (``is_sd3``).

L and G engines: last hidden state (clip skip 1), no final norm, pooled (G through ``text_projection``;
L not -- Forge projects only when ``embedding_key != "clip_l"``); T5 engine when ``opts.sd3_enable_t5``
(default False), else zeros (B, 256, T5 width). Conds: ``crossattn`` = cat([pad(cat(L, G) on features,
to the T5 width), T5], on the token axis) -> (B, 77k + 256, t5 width) (Forge pads to 4096);
``vector`` = cat(L pooled, G pooled). An all-empty negative prompt zeroes everything."""

from __future__ import annotations

import torch
from modules.shared import opts

from backend import memory_management
from backend.args import dynamic_args
from backend.diffusion_engine.base import SD3, ForgeDiffusionEngine
from backend.patcher.clip import CLIP
from backend.patcher.unet import UnetPatcher
from backend.patcher.vae import VAE
from backend.text_processing.classic_engine import ClassicTextProcessingEngine
from backend.text_processing.t5_engine import T5TextProcessingEngine


class StableDiffusion3(ForgeDiffusionEngine):
    matched_guesses = [SD3]

    def __init__(self, estimated_config, huggingface_components):
        super().__init__(estimated_config, huggingface_components)
        self.is_inpaint = False
        clip = CLIP(
            model_dict={
                "clip_l": huggingface_components["text_encoder"],
                "clip_g": huggingface_components["text_encoder_2"],
                "t5xxl": huggingface_components["text_encoder_3"],
            },
            tokenizer_dict={
                "clip_l": huggingface_components["tokenizer"],
                "clip_g": huggingface_components["tokenizer_2"],
                "t5xxl": huggingface_components["tokenizer_3"],
            },
        )
        vae = VAE(model=huggingface_components.get("vae"), latent_channels=16)
        unet = UnetPatcher.from_model(model=huggingface_components.get("transformer"), config=estimated_config)
        encoders = clip.cond_stage_model
        common = dict(
            embedding_dir=dynamic_args["embedding_dir"],
            emphasis_name=dynamic_args["emphasis_name"],
            text_projection=True,
            minimal_clip_skip=1,
            clip_skip=1,
            return_pooled=True,
            final_layer_norm=False,
        )
        self.text_processing_engine_l = ClassicTextProcessingEngine(
            text_encoder=encoders.clip_l,
            tokenizer=clip.tokenizer.clip_l,
            embedding_key="clip_l",
            embedding_expected_shape=encoders.clip_l.transformer.config.hidden_size,  # Forge: 768
            **common,
        )
        self.text_processing_engine_g = ClassicTextProcessingEngine(
            text_encoder=encoders.clip_g,
            tokenizer=clip.tokenizer.clip_g,
            embedding_key="clip_g",
            embedding_expected_shape=encoders.clip_g.transformer.config.hidden_size,  # Forge: 1280
            **common,
        )
        self.text_processing_engine_t5 = T5TextProcessingEngine(
            text_encoder=encoders.t5xxl, tokenizer=clip.tokenizer.t5xxl, emphasis_name=dynamic_args["emphasis_name"]
        )
        self.standin_t5_width = encoders.t5xxl.transformer.config.d_model  # Forge: 4096
        self._standin_finish(unet, clip, vae)
        self.is_sd3 = True

    def set_clip_skip(self, clip_skip):
        self.text_processing_engine_l.clip_skip = clip_skip
        self.text_processing_engine_g.clip_skip = clip_skip

    @torch.inference_mode()
    def get_learned_conditioning(self, prompt: list[str]):
        memory_management.load_model_gpu(self.forge_objects.clip.patcher)
        cond_g, g_pooled = self.text_processing_engine_g(prompt)
        cond_l, l_pooled = self.text_processing_engine_l(prompt)
        width = self.standin_t5_width
        if opts.sd3_enable_t5:
            cond_t5 = self.text_processing_engine_t5(prompt)
        else:
            cond_t5 = torch.zeros([len(prompt), 256, width]).to(cond_l.device)
        if getattr(prompt, "is_negative_prompt", False) and all(x == "" for x in prompt):
            l_pooled, g_pooled = torch.zeros_like(l_pooled), torch.zeros_like(g_pooled)
            cond_l, cond_g, cond_t5 = torch.zeros_like(cond_l), torch.zeros_like(cond_g), torch.zeros_like(cond_t5)
        cond_lg = torch.cat([cond_l, cond_g], dim=-1)
        cond_lg = torch.nn.functional.pad(cond_lg, (0, width - cond_lg.shape[-1]))
        return dict(crossattn=torch.cat([cond_lg, cond_t5], dim=-2), vector=torch.cat([l_pooled, g_pooled], dim=-1))

    @torch.inference_mode()
    def get_prompt_lengths_on_ui(self, prompt):
        token_count = len(self.text_processing_engine_t5.tokenize([prompt])[0])
        return token_count, max(255, token_count)
