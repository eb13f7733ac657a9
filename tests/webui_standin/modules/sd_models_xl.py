"""Stand-in for ``modules/sd_models_xl.py`` plus the parts of sgm's ``GeneralConditioner`` the
WebUI relies on: an SDXL-style model with ``conditioner.embedders`` =
[CLIP-L (HF CLIPTextModel, hijacked), OpenCLIP-G (open_clip text tower, hijacked), original size,
crop, target size].

``get_learned_conditioning(batch)`` returns ``{"crossattn": (B, 77k, dim_l + dim_g),
"vector": (B, pooled_g + 3 * 2 * size_dim)}`` -- pooled first, then the size embeddings, as in
SDXL (there 1280 + 3 * 512 = 2816). An all-empty negative prompt gives all-zero conds."""

from __future__ import annotations

import contextlib
import math

import torch

from modules import devices, prompt_parser, sd_hijack, sd_hijack_clip, sd_hijack_open_clip, shared
from modules.sd_models import CheckpointInfo, FrozenCLIPEmbedder, set_family_flags


class FrozenOpenCLIPEmbedder2(torch.nn.Module):
    """sgm's OpenCLIP-G encoder (``legacy=False``, ``always_return_pooled=True`` as SDXL's config):
    ``model`` is an open_clip text tower; ``encode_with_transformer(tokens)`` ->
    ``{"penultimate": input of the last block, "last": output of the last block (both without
    ln_final), "pooled": ln_final(last) at the argmax id @ text_projection}``.

    ``tokenizer`` is a stand-in extra (the real one calls ``open_clip.tokenize``)."""

    LAYERS = ["pooled", "last", "penultimate"]

    def __init__(self, model, tokenizer=None, layer="penultimate", always_return_pooled=True, legacy=False):
        super().__init__()
        assert layer in self.LAYERS
        self.model = model
        self.tokenizer = tokenizer
        self.device = "cpu"
        self.max_length = 77
        self.return_pooled = always_return_pooled
        self.layer = layer
        self.layer_idx = 0 if layer == "last" else 1
        self.legacy = legacy
        self.input_key = "txt"
        self.is_trainable = False
        self.ucg_rate = 0.0

    def forward(self, text):
        from open_clip_text import tokenize

        z = self.encode_with_transformer(tokenize(self.tokenizer, text))
        if not self.return_pooled and self.legacy:
            return z
        if self.return_pooled:
            return z[self.layer], z["pooled"]
        return z[self.layer]

    def encode_with_transformer(self, text):
        x = self.model.token_embedding(text)  # (N, L, D)
        x = x + self.model.positional_embedding
        x = x.permute(1, 0, 2)  # NLD -> LND
        x = self.text_transformer_forward(x, attn_mask=self.model.attn_mask)
        if self.legacy:
            return self.model.ln_final(x[self.layer])
        x["pooled"] = self.pool(self.model.ln_final(x["last"]), text)
        return x

    def pool(self, x, text):
        """The row of the largest id (the first end-of-text) of each sequence, projected."""
        return x[torch.arange(x.shape[0]), text.argmax(dim=-1)] @ self.model.text_projection

    def text_transformer_forward(self, x, attn_mask=None):
        outputs = {}
        blocks = self.model.transformer.resblocks
        for i, block in enumerate(blocks):
            if i == len(blocks) - 1:
                outputs["penultimate"] = x.permute(1, 0, 2)  # LND -> NLD
            x = block(x, attn_mask=attn_mask)
        outputs["last"] = x.permute(1, 0, 2)
        return outputs

    def encode(self, text):
        return self(text)


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

    def encode_embedding_init_text(self, init_text, nvpt):
        """Token embeddings of every text encoder side by side (CLIP-L | G): ``(tokens, 768 + 1280)``."""
        encoded = [
            embedder.encode_embedding_init_text(init_text, nvpt)
            for embedder in self.embedders
            if hasattr(embedder, "encode_embedding_init_text")
        ]
        return torch.cat(encoded, dim=1)

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
        """``clip_l``: HF ``CLIPTextModel``; ``clip_g``: an open_clip text tower (``open_clip_text.CLIP``)."""
        super().__init__()
        hijack = sd_hijack.model_hijack
        embeddings_l = sd_hijack_clip._text_model(clip_l).embeddings
        embeddings_l.token_embedding = sd_hijack.EmbeddingsWithFixes(embeddings_l.token_embedding, hijack)
        clip_g.token_embedding = sd_hijack.EmbeddingsWithFixes(clip_g.token_embedding, hijack, "clip_g")
        embedder_l = sd_hijack_clip.FrozenCLIPEmbedderForSDXLWithCustomWords(
            FrozenCLIPEmbedder(tokenizer, clip_l, layer="hidden", layer_idx=-2), hijack
        )
        embedder_g = sd_hijack_open_clip.FrozenOpenCLIPEmbedder2WithCustomWords(
            FrozenOpenCLIPEmbedder2(clip_g, tokenizer), hijack
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
