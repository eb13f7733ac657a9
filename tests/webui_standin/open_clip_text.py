"""Stand-in for the text half of an ``open_clip`` 2.20.0 ``CLIP`` model (what ldm's
``FrozenOpenCLIPEmbedder`` and sgm's ``FrozenOpenCLIPEmbedder2`` keep after ``del model.visual``).

Same attribute names, layouts and numerics as open_clip: ``token_embedding`` (nn.Embedding),
``positional_embedding`` (a Parameter ``(context_length, width)``), ``transformer.resblocks`` of
pre-LN ``ResidualAttentionBlock``s (``ln_1``, ``attn`` = ``torch.nn.MultiheadAttention`` in the
sequence-first LND layout, ``ls_1``, ``ln_2``, ``mlp`` = ``c_fc``/``gelu``/``c_proj``, ``ls_2``),
``ln_final``, ``text_projection`` (a Parameter ``(width, embed_dim)``) and the ``attn_mask`` buffer
(additive float ``(L, L)``, ``-inf`` above the diagonal). Not a copy of open_clip: written from its
behaviour so the stand-in needs no open_clip install."""

from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import nn


class LayerNorm(nn.LayerNorm):
    """open_clip's LayerNorm: ``F.layer_norm``, cast back to the input dtype (its own forward, so
    patches of ``torch.nn.LayerNorm.forward`` do not reach it, as in the WebUI)."""

    def forward(self, x: torch.Tensor):
        return F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps).to(x.dtype)


class ResidualAttentionBlock(nn.Module):
    """``x + attn(ln_1(x))`` then ``x + mlp(ln_2(x))``; ``x`` is ``(L, N, D)``."""

    def __init__(self, d_model: int, n_head: int, mlp_ratio: float = 4.0, act_layer=nn.GELU, norm_layer=LayerNorm):
        super().__init__()
        self.ln_1 = norm_layer(d_model)
        self.attn = nn.MultiheadAttention(d_model, n_head)
        self.ls_1 = nn.Identity()
        self.ln_2 = norm_layer(d_model)
        width = int(d_model * mlp_ratio)
        self.mlp = nn.Sequential(
            OrderedDict(
                [("c_fc", nn.Linear(d_model, width)), ("gelu", act_layer()), ("c_proj", nn.Linear(width, d_model))]
            )
        )
        self.ls_2 = nn.Identity()

    def attention(self, q_x, k_x=None, v_x=None, attn_mask=None):
        k_x = q_x if k_x is None else k_x
        v_x = q_x if v_x is None else v_x
        if attn_mask is not None:
            attn_mask = attn_mask.to(q_x.dtype)
        return self.attn(q_x, k_x, v_x, need_weights=False, attn_mask=attn_mask)[0]

    def forward(self, q_x, k_x=None, v_x=None, attn_mask=None):
        x = q_x + self.ls_1(self.attention(self.ln_1(q_x), attn_mask=attn_mask))
        return x + self.ls_2(self.mlp(self.ln_2(x)))


class Transformer(nn.Module):
    def __init__(self, width: int, layers: int, heads: int, mlp_ratio: float = 4.0, act_layer=nn.GELU):
        super().__init__()
        self.width = width
        self.layers = layers
        self.grad_checkpointing = False
        self.resblocks = nn.ModuleList(
            [ResidualAttentionBlock(width, heads, mlp_ratio, act_layer=act_layer) for _ in range(layers)]
        )

    def get_cast_dtype(self) -> torch.dtype:
        return self.resblocks[0].mlp.c_fc.weight.dtype

    def forward(self, x, attn_mask=None):
        for block in self.resblocks:
            x = block(x, attn_mask=attn_mask)
        return x


class CLIP(nn.Module):
    """The text tower of open_clip's ``CLIP`` (no ``visual``). ``encode_text`` as open_clip."""

    def __init__(self, embed_dim: int, width: int, layers: int, heads: int, context_length=77, vocab_size=49408,
                 mlp_ratio=4.0, act_layer=nn.GELU):  # fmt: skip
        super().__init__()
        self.transformer = Transformer(width, layers, heads, mlp_ratio, act_layer)
        self.context_length = context_length
        self.vocab_size = vocab_size
        self.token_embedding = nn.Embedding(vocab_size, width)
        self.positional_embedding = nn.Parameter(torch.empty(context_length, width))
        self.ln_final = LayerNorm(width)
        self.text_projection = nn.Parameter(torch.empty(width, embed_dim))
        self.register_buffer("attn_mask", self.build_attention_mask(), persistent=False)
        self.logit_scale = nn.Parameter(torch.ones([]) * 2.6592600918)  # log(1 / 0.07)
        self.init_parameters()

    def init_parameters(self):
        """open_clip's text-tower initialisation (normal with its stds; biases zero)."""
        nn.init.normal_(self.token_embedding.weight, std=0.02)
        nn.init.normal_(self.positional_embedding, std=0.01)
        width, layers = self.transformer.width, self.transformer.layers
        proj_std = (width**-0.5) * ((2 * layers) ** -0.5)
        attn_std = width**-0.5
        fc_std = (2 * width) ** -0.5
        for block in self.transformer.resblocks:
            nn.init.normal_(block.attn.in_proj_weight, std=attn_std)
            nn.init.normal_(block.attn.out_proj.weight, std=proj_std)
            nn.init.normal_(block.mlp.c_fc.weight, std=fc_std)
            nn.init.normal_(block.mlp.c_proj.weight, std=proj_std)
        nn.init.normal_(self.text_projection, std=width**-0.5)

    def build_attention_mask(self):
        return torch.full((self.context_length, self.context_length), float("-inf")).triu_(1)

    def encode_text(self, text, normalize: bool = False):
        x = self.token_embedding(text).to(self.transformer.get_cast_dtype())
        x = x + self.positional_embedding.to(x.dtype)
        x = self.transformer(x.permute(1, 0, 2), attn_mask=self.attn_mask).permute(1, 0, 2)
        x = self.ln_final(x)
        x = x[torch.arange(x.shape[0]), text.argmax(dim=-1)] @ self.text_projection
        return F.normalize(x, dim=-1) if normalize else x


def tokenize(tokenizer, texts, context_length=77, sot=49406, eot=49407) -> torch.Tensor:
    """``open_clip.tokenize``: ``[sot, ids..., eot]`` padded with 0 (truncated: last id is eot)."""
    if isinstance(texts, str):
        texts = [texts]
    result = torch.zeros(len(texts), context_length, dtype=torch.long)
    for row, text in enumerate(texts):
        ids = [sot, *tokenizer(text, add_special_tokens=False)["input_ids"], eot]
        if len(ids) > context_length:
            ids = ids[:context_length]
            ids[-1] = eot
        result[row, : len(ids)] = torch.tensor(ids)
    return result
