"""ComfyUI's language models (`comfy.text_encoders.llama`): Llama 3, Qwen 2.5 VL's language model and Gemma 2, as
they behave, tiny. The real vocabulary sizes are kept (the families' special token ids are real ids).

Behaviour mirrored: token embeddings taken as `embeds`; Gemma multiplies them by sqrt(width) first; rotary
positions from `position_ids` (default 0..n-1), grouped-query attention, RMS norms (Gemma: weight + 1, four per
block); the attention mask is `attention_mask` reshaped to `(batch, 1, -1, seq)`, broadcast over the queries
(a `(batch, seq, seq)` mask passes as it is), 0 -> -inf, plus the causal mask; the output is the last layer
after the final norm and, as asked by `intermediate_output`, one layer's output (negative from the end, without
the final norm unless `final_layer_norm_intermediate`) or "all": the input of every layer and then the final
norm's output, stacked on dimension 1.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from comfy.ldm.modules.attention import optimized_attention_for_device


@dataclass
class Llama2Config:
    vocab_size: int = 128320
    hidden_size: int = 32
    intermediate_size: int = 64
    num_hidden_layers: int = 3
    num_attention_heads: int = 4
    num_key_value_heads: int = 2
    rms_norm_eps: float = 1e-5
    rope_theta: float = 500000.0
    transformer_type: str = "llama"
    head_dim: int = 8
    rms_norm_add: bool = False
    mlp_activation: str = "silu"
    qkv_bias: bool = False


@dataclass
class Qwen25_7BVLI_Config(Llama2Config):  # noqa: N801 - ComfyUI's name
    vocab_size: int = 152064
    rms_norm_eps: float = 1e-6
    rope_theta: float = 1000000.0
    qkv_bias: bool = True


@dataclass
class Gemma2_2B_Config(Llama2Config):  # noqa: N801 - ComfyUI's name
    vocab_size: int = 256000
    rms_norm_eps: float = 1e-6
    rope_theta: float = 10000.0
    transformer_type: str = "gemma2"
    rms_norm_add: bool = True
    mlp_activation: str = "gelu_pytorch_tanh"


class RMSNorm(torch.nn.Module):
    def __init__(self, width, eps, add=False):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.ones(width))
        self.eps, self.add = eps, add

    def forward(self, x):
        scale = self.weight + 1.0 if self.add else self.weight
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * scale.to(x)


def _rotary(head_dim, position_ids, theta):
    """cos and sin `(batch, 1, seq, head_dim)` for `position_ids` `(batch, seq)`."""
    inverse = 1.0 / theta ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim)
    angles = position_ids.float()[..., None] * inverse
    angles = torch.cat([angles, angles], dim=-1)
    return angles.cos()[:, None], angles.sin()[:, None]


def _rotate(x, cos, sin):
    half = x.shape[-1] // 2
    turned = torch.cat([-x[..., half:], x[..., :half]], dim=-1)
    return x * cos + turned * sin


class Attention(torch.nn.Module):
    def __init__(self, config, ops):
        super().__init__()
        self.heads, self.kv_heads, self.head_dim = (
            config.num_attention_heads,
            config.num_key_value_heads,
            config.head_dim,
        )
        inner, kv = self.heads * self.head_dim, self.kv_heads * self.head_dim
        self.q_proj = ops.Linear(config.hidden_size, inner, bias=config.qkv_bias)
        self.k_proj = ops.Linear(config.hidden_size, kv, bias=config.qkv_bias)
        self.v_proj = ops.Linear(config.hidden_size, kv, bias=config.qkv_bias)
        self.o_proj = ops.Linear(inner, config.hidden_size, bias=False)

    def forward(self, x, mask, rotary, attention):
        batch, seq, _ = x.shape
        q = self.q_proj(x).view(batch, seq, self.heads, self.head_dim).transpose(1, 2)
        k = self.k_proj(x).view(batch, seq, self.kv_heads, self.head_dim).transpose(1, 2)
        v = self.v_proj(x).view(batch, seq, self.kv_heads, self.head_dim).transpose(1, 2)
        q, k = _rotate(q, *rotary), _rotate(k, *rotary)
        repeat = self.heads // self.kv_heads
        k, v = k.repeat_interleave(repeat, dim=1), v.repeat_interleave(repeat, dim=1)
        merge = lambda t: t.transpose(1, 2).reshape(batch, seq, -1)  # noqa: E731
        return self.o_proj(attention(merge(q), merge(k), merge(v), self.heads, mask=mask))


class MLP(torch.nn.Module):
    def __init__(self, config, ops):
        super().__init__()
        self.gate_proj = ops.Linear(config.hidden_size, config.intermediate_size, bias=False)
        self.up_proj = ops.Linear(config.hidden_size, config.intermediate_size, bias=False)
        self.down_proj = ops.Linear(config.intermediate_size, config.hidden_size, bias=False)
        self.gelu = config.mlp_activation != "silu"

    def forward(self, x):
        gate = self.gate_proj(x)
        gate = torch.nn.functional.gelu(gate, approximate="tanh") if self.gelu else torch.nn.functional.silu(gate)
        return self.down_proj(gate * self.up_proj(x))


class TransformerBlock(torch.nn.Module):
    def __init__(self, config, ops):
        super().__init__()
        self.gemma = config.transformer_type == "gemma2"
        width, eps, add = config.hidden_size, config.rms_norm_eps, config.rms_norm_add
        self.self_attn = Attention(config, ops)
        self.mlp = MLP(config, ops)
        self.input_layernorm = RMSNorm(width, eps, add)
        self.post_attention_layernorm = RMSNorm(width, eps, add)
        if self.gemma:
            self.pre_feedforward_layernorm = RMSNorm(width, eps, add)
            self.post_feedforward_layernorm = RMSNorm(width, eps, add)

    def forward(self, x, mask, rotary, attention):
        attended = self.self_attn(self.input_layernorm(x), mask, rotary, attention)
        if self.gemma:
            x = x + self.post_attention_layernorm(attended)
            return x + self.post_feedforward_layernorm(self.mlp(self.pre_feedforward_layernorm(x)))
        x = x + attended
        return x + self.mlp(self.post_attention_layernorm(x))


class Llama2_(torch.nn.Module):  # noqa: N801 - ComfyUI's name
    def __init__(self, config, device=None, dtype=None, ops=None):
        super().__init__()
        self.config = config
        self.embed_tokens = ops.Embedding(config.vocab_size, config.hidden_size)
        self.normalize_in = config.transformer_type == "gemma2"
        self.layers = torch.nn.ModuleList([TransformerBlock(config, ops) for _ in range(config.num_hidden_layers)])
        self.norm = RMSNorm(config.hidden_size, config.rms_norm_eps, config.rms_norm_add)

    def forward(
        self,
        x,
        attention_mask=None,
        embeds=None,
        num_tokens=None,
        intermediate_output=None,
        final_layer_norm_intermediate=True,
        dtype=None,
        position_ids=None,
        embeds_info=(),
    ):
        x = embeds if embeds is not None else self.embed_tokens(x, out_dtype=dtype)
        if self.normalize_in:
            x = x * self.config.hidden_size**0.5
        batch, seq = x.shape[:2]
        if position_ids is None:
            position_ids = torch.arange(seq, device=x.device)[None]
        rotary = _rotary(self.config.head_dim, position_ids, self.config.rope_theta)
        causal = torch.full((seq, seq), float("-inf"), dtype=x.dtype, device=x.device).triu(1)
        mask = causal
        if attention_mask is not None:
            keep = attention_mask.to(x.dtype).reshape(attention_mask.shape[0], 1, -1, seq).expand(-1, 1, seq, seq)
            mask = torch.zeros_like(keep).masked_fill(keep == 0, float("-inf")) + causal
        attention = optimized_attention_for_device(x.device, mask=True, small_input=True)
        stack = [] if intermediate_output == "all" else None
        wanted = None
        if isinstance(intermediate_output, int):
            wanted = intermediate_output % len(self.layers) if intermediate_output < 0 else intermediate_output
        intermediate = None
        for index, layer in enumerate(self.layers):
            if stack is not None:
                stack.append(x[:, None])
            x = layer(x, mask, rotary, attention)
            if index == wanted:
                intermediate = x.clone()
        x = self.norm(x)
        if stack is not None:
            intermediate = torch.cat([*stack, x[:, None]], dim=1)
        if intermediate is not None and final_layer_norm_intermediate:
            intermediate = self.norm(intermediate)
        return x, intermediate


class BaseLlama:
    def get_input_embeddings(self):
        return self.model.embed_tokens

    def forward(self, input_ids, *args, **kwargs):
        return self.model(input_ids, *args, **kwargs)


def _model_class(config_class):
    class Model(BaseLlama, torch.nn.Module):
        def __init__(self, config_dict, dtype, device, operations):
            super().__init__()
            config = config_class(**config_dict)
            self.num_layers = config.num_hidden_layers
            self.model = Llama2_(config, device=device, dtype=dtype, ops=operations)
            self.dtype = dtype

    return Model


Llama2 = _model_class(Llama2Config)
Qwen25_7BVLI = _model_class(Qwen25_7BVLI_Config)
Gemma2_2B = _model_class(Gemma2_2B_Config)
Llama2.__name__, Qwen25_7BVLI.__name__, Gemma2_2B.__name__ = "Llama2", "Qwen25_7BVLI", "Gemma2_2B"
