"""ComfyUI's CLIP text transformer: the layout of transformers' CLIPTextModel (same parameter names), float32
compute, layers that add into their input, a (seq, seq) causal mask and the whole position table added."""

import torch

from comfy import ops
from comfy.ldm.modules.attention import optimized_attention_for_device

ACTIVATIONS = {
    "quick_gelu": lambda x: x * torch.sigmoid(1.702 * x),
    "gelu": torch.nn.functional.gelu,
}


class CLIPAttention(torch.nn.Module):
    def __init__(self, width, heads, dtype, device, operations):
        super().__init__()
        self.heads = heads
        for name in ("q_proj", "k_proj", "v_proj", "out_proj"):
            setattr(self, name, operations.Linear(width, width, dtype=dtype, device=device))

    def forward(self, x, mask=None, optimized_attention=None):
        mixed = optimized_attention(self.q_proj(x), self.k_proj(x), self.v_proj(x), self.heads, mask)
        return self.out_proj(mixed)


class CLIPMLP(torch.nn.Module):
    def __init__(self, width, inner, activation, dtype, device, operations):
        super().__init__()
        self.fc1 = operations.Linear(width, inner, dtype=dtype, device=device)
        self.fc2 = operations.Linear(inner, width, dtype=dtype, device=device)
        self.activation = ACTIVATIONS[activation]

    def forward(self, x):
        return self.fc2(self.activation(self.fc1(x)))


class CLIPLayer(torch.nn.Module):
    def __init__(self, width, heads, inner, activation, dtype, device, operations):
        super().__init__()
        self.layer_norm1 = operations.LayerNorm(width, dtype=dtype, device=device)
        self.self_attn = CLIPAttention(width, heads, dtype, device, operations)
        self.layer_norm2 = operations.LayerNorm(width, dtype=dtype, device=device)
        self.mlp = CLIPMLP(width, inner, activation, dtype, device, operations)

    def forward(self, x, mask=None, optimized_attention=None):
        x += self.self_attn(self.layer_norm1(x), mask, optimized_attention)  # in place, as ComfyUI's
        x += self.mlp(self.layer_norm2(x))
        return x


class CLIPEncoder(torch.nn.Module):
    def __init__(self, layers, width, heads, inner, activation, dtype, device, operations):
        super().__init__()
        self.layers = torch.nn.ModuleList(
            [CLIPLayer(width, heads, inner, activation, dtype, device, operations) for _ in range(layers)]
        )

    def forward(self, x, mask=None, intermediate_output=None):
        attention = optimized_attention_for_device(x.device, mask=mask is not None, small_input=True)
        wanted = None if intermediate_output is None else intermediate_output % len(self.layers)
        intermediate = None
        for index, layer in enumerate(self.layers):
            x = layer(x, mask, attention)
            if index == wanted:
                intermediate = x.clone()
        return x, intermediate


class CLIPEmbeddings(torch.nn.Module):
    def __init__(self, width, vocab, positions, dtype, device, operations):
        super().__init__()
        self.token_embedding = operations.Embedding(vocab, width, dtype=dtype, device=device)
        self.position_embedding = operations.Embedding(positions, width, dtype=dtype, device=device)


class CLIPTextModel_(torch.nn.Module):  # noqa: N801 - ComfyUI's name
    def __init__(self, config, dtype, device, operations):
        super().__init__()
        width = config["hidden_size"]
        self.eos_token_id = config["eos_token_id"]
        self.embeddings = CLIPEmbeddings(
            width, config.get("vocab_size", 49408), config["max_position_embeddings"], dtype, device, operations
        )
        self.encoder = CLIPEncoder(
            config["num_hidden_layers"],
            width,
            config["num_attention_heads"],
            config["intermediate_size"],
            config["hidden_act"],
            dtype,
            device,
            operations,
        )
        self.final_layer_norm = operations.LayerNorm(width, dtype=dtype, device=device)

    def forward(
        self,
        input_tokens=None,
        attention_mask=None,
        embeds=None,
        num_tokens=None,
        intermediate_output=None,
        final_layer_norm_intermediate=True,
        dtype=torch.float32,
        embeds_info=(),
    ):
        if embeds is None:
            embeds = self.embeddings.token_embedding(input_tokens, out_dtype=dtype)
        x = embeds + ops.cast_to(self.embeddings.position_embedding.weight, dtype=dtype, device=embeds.device)
        seq = x.shape[1]
        big = torch.finfo(x.dtype).max
        mask = torch.full((seq, seq), -big, dtype=x.dtype, device=x.device).triu(1)
        if attention_mask is not None:
            padding = (1.0 - attention_mask.to(x.dtype))[:, None, None, :].expand(-1, 1, seq, seq)
            mask = padding.masked_fill(padding.bool(), -big) + mask
        x, intermediate = self.encoder(x, mask, intermediate_output)
        x = self.final_layer_norm(x)
        if intermediate is not None and final_layer_norm_intermediate:
            intermediate = self.final_layer_norm(intermediate)
        last = [n - 1 for n in num_tokens] if num_tokens is not None else [seq - 1] * x.shape[0]
        pooled = x[list(range(x.shape[0])), last]
        return x, intermediate, pooled


class CLIPTextModel(torch.nn.Module):
    def __init__(self, config, dtype, device, operations):
        super().__init__()
        self.num_layers = config["num_hidden_layers"]
        self.text_model = CLIPTextModel_(config, dtype, device, operations)
        width = config["hidden_size"]
        self.text_projection = operations.Linear(width, width, bias=False, dtype=dtype, device=device)
        self.dtype = dtype

    def get_input_embeddings(self):
        return self.text_model.embeddings.token_embedding

    def forward(self, *args, **kwargs):
        x, intermediate, pooled = self.text_model(*args, **kwargs)
        return x, intermediate, self.text_projection(pooled), pooled
