"""ComfyUI's casting layers: weights kept in their dtype, cast to the input's dtype (or `out_dtype`) when used."""

import torch


def cast_to(weight, dtype=None, device=None, non_blocking=False, copy=False):
    return weight.to(device=device if device is not None else weight.device, dtype=dtype or weight.dtype)


class manual_cast:  # noqa: N801 - ComfyUI's name
    class Linear(torch.nn.Linear):
        def forward(self, x):
            bias = None if self.bias is None else self.bias.to(x)
            return torch.nn.functional.linear(x, self.weight.to(x), bias)

    class LayerNorm(torch.nn.LayerNorm):
        def forward(self, x):
            weight = None if self.weight is None else self.weight.to(x)
            bias = None if self.bias is None else self.bias.to(x)
            return torch.nn.functional.layer_norm(x, self.normalized_shape, weight, bias, self.eps)

    class Embedding(torch.nn.Embedding):
        def forward(self, ids, out_dtype=None):
            out = torch.nn.functional.embedding(ids, self.weight)
            return out.to(out_dtype) if out_dtype is not None else out
