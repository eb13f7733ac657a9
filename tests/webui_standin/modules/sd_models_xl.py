"""Stand-in for ``modules/sd_models_xl.py`` plus the parts of sgm's ``GeneralConditioner`` the
WebUI relies on: an SDXL-style model with ``conditioner.embedders`` =
[CLIP-L (hijacked), OpenCLIP-G (hijacked), original size, crop, target size].

``get_learned_conditioning(batch)`` returns ``{"crossattn": (B, 77k, dim_l + dim_g),
"vector": (B, pooled_g + 3 * 2 * size_dim)}`` -- pooled first, then the size embeddings, as in
SDXL (there 1280 + 3 * 512 = 2816). An all-empty negative prompt gives all-zero conds."""

from __future__ import annotations

import contextlib
import math

import torch

from modules import devices, prompt_parser, sd_hijack, sd_hijack_clip, shared
from modules.sd_models import CheckpointInfo, FrozenCLIPEmbedder, set_family_flags


class FrozenOpenCLIPEmbedder2(torch.nn.Module):
    """OpenCLIP-G stand-in over ``transformers.CLIPTextModelWithProjection``.

    ``encode_with_transformer(tokens)`` -> ``{"penultimate", "last", "pooled"}``; ``pooled`` is the
    projected final-norm output at the first EOS (the largest id, like open_clip's argmax)."""

    def __init__(self, tokenizer, model, layer="penultimate"):
        super().__init__()
        self.tokenizer = tokenizer
        self.model = model
        self.layer = layer
        self.input_key = "txt"
        self.return_pooled = True
        self.is_trainable = False
        self.ucg_rate = 0.0

    def encode_with_transformer(self, tokens):
        out = self.model(input_ids=tokens, output_hidden_states=True)
        last = out.last_hidden_state
        eos = tokens.argmax(dim=-1)
        pooled = self.model.text_projection(last[torch.arange(last.shape[0]), eos])
        return {"penultimate": out.hidden_states[-2], "last": last, "pooled": pooled}


def timestep_embedding(values, dim, max_period=10000):
    """Sinusoidal embedding of each value: cos half then sin half (as sgm does)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32) / half)
    args = values[:, None].float() * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


class ConcatTimestepEmbedderND(torch.nn.Module):
    """(B, n) numbers -> (B, n * outdim)."""

    def __init__(self, outdim, input_key):
        super().__init__()
        self.outdim = outdim
        self.input_key = input_key
        self.ucg_rate = 0.0
        self.is_trainable = False
        self.legacy_ucg_val = None

    def forward(self, x):
        b, n = x.shape
        emb = timestep_embedding(x.reshape(-1), self.outdim)
        return emb.reshape(b, n * self.outdim)


class GeneralConditioner(torch.nn.Module):
    """sgm's conditioner: outputs of rank 2 go to "vector" (cat on dim 1), rank 3 to "crossattn"
    (cat on dim 2), in embedder order; embedders whose input_key is in ``force_zero_embeddings``
    give zeros."""

    OUTPUT_DIM2KEYS = {2: "vector", 3: "crossattn", 4: "concat", 5: "concat"}
    KEY2CATDIM = {"vector": 1, "crossattn": 2, "concat": 1}

    def __init__(self, embedders):
        super().__init__()
        self.embedders = torch.nn.ModuleList(embedders)
        self.wrapped = torch.nn.Module()

    def forward(self, batch, force_zero_embeddings=None):
        force_zero_embeddings = force_zero_embeddings or []
        output: dict = {}
        for embedder in self.embedders:
            emb_out = embedder(batch[embedder.input_key])
            if not isinstance(emb_out, (list, tuple)):
                emb_out = [emb_out]
            for emb in emb_out:
                key = self.OUTPUT_DIM2KEYS[emb.dim()]
                if embedder.input_key in force_zero_embeddings:
                    emb = torch.zeros_like(emb)
                if key in output:
                    output[key] = torch.cat((output[key], emb), self.KEY2CATDIM[key])
                else:
                    output[key] = emb
        return output

    # the WebUI adds these so the conditioner can stand in for an SD1 cond_stage_model
    def tokenize(self, texts):
        for embedder in self.embedders:
            if hasattr(embedder, "tokenize"):
                return embedder.tokenize(texts)
        raise AssertionError("no tokenizer available")

    def process_texts(self, texts):
        for embedder in self.embedders:
            if hasattr(embedder, "process_texts"):
                return embedder.process_texts(texts)
        return None

    def get_target_prompt_token_count(self, token_count):
        for embedder in self.embedders:
            if hasattr(embedder, "get_target_prompt_token_count"):
                return embedder.get_target_prompt_token_count(token_count)
        return None


class StandinSDXLModel(torch.nn.Module):
    """``cond_stage_model`` is the conditioner itself (two text encoders), as after the hijack."""

    def __init__(self, tokenizer, clip_l, clip_g, size_dim=8, name="standin-sdxl"):
        super().__init__()
        hijack = sd_hijack.model_hijack
        embedder_l = sd_hijack_clip.FrozenCLIPEmbedderForSDXLWithCustomWords(
            FrozenCLIPEmbedder(tokenizer, clip_l, layer="hidden", layer_idx=-2), hijack
        )
        embedder_g = sd_hijack_clip.FrozenOpenCLIPEmbedder2WithCustomWords(
            FrozenOpenCLIPEmbedder2(tokenizer, clip_g), hijack
        )
        self.conditioner = GeneralConditioner(
            [
                embedder_l,
                embedder_g,
                ConcatTimestepEmbedderND(size_dim, "original_size_as_tuple"),
                ConcatTimestepEmbedderND(size_dim, "crop_coords_top_left"),
                ConcatTimestepEmbedderND(size_dim, "target_size_as_tuple"),
            ]
        )
        self.cond_stage_model = self.conditioner
        self.cond_stage_key = "txt"
        self.sd_checkpoint_info = CheckpointInfo(name=name, title=name, short_title=name, name_for_extra=name)
        self.sd_model_hash = self.sd_checkpoint_info.hash
        self.latent_channels = 4
        self.parameterization = "eps"
        set_family_flags(self, "sdxl")
        self.is_sdxl_inpaint = False

    def get_learned_conditioning(self, batch: prompt_parser.SdConditioning | list[str]):
        for embedder in self.conditioner.embedders:
            embedder.ucg_rate = 0.0
        width = getattr(batch, "width", 1024) or 1024
        height = getattr(batch, "height", 1024) or 1024
        is_negative_prompt = getattr(batch, "is_negative_prompt", False)
        opts = shared.opts
        aesthetic_score = (
            opts.sdxl_refiner_low_aesthetic_score if is_negative_prompt else opts.sdxl_refiner_high_aesthetic_score
        )
        args = dict(device=devices.device, dtype=devices.dtype)
        conds = {
            "txt": batch,
            "original_size_as_tuple": torch.tensor([height, width], **args).repeat(len(batch), 1),
            "crop_coords_top_left": torch.tensor([opts.sdxl_crop_top, opts.sdxl_crop_left], **args).repeat(
                len(batch), 1
            ),
            "target_size_as_tuple": torch.tensor([height, width], **args).repeat(len(batch), 1),
            "aesthetic_score": torch.tensor([aesthetic_score], **args).repeat(len(batch), 1),
        }
        force_zero = is_negative_prompt and all(x == "" for x in batch)
        return self.conditioner(conds, force_zero_embeddings=["txt"] if force_zero else [])

    @contextlib.contextmanager
    def ema_scope(self, context=None):
        yield
