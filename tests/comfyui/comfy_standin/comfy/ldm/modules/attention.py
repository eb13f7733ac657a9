"""Attention as ComfyUI's text encoders call it: `(q, k, v, heads, mask)`, `(batch, seq, heads * dim)` in and
out, an additive mask of 2, 3 or 4 dimensions."""

import torch


def attention(q, k, v, heads, mask=None, **kwargs):
    batch, seq, inner = q.shape
    dim = inner // heads
    q, k, v = (t.reshape(batch, -1, heads, dim).transpose(1, 2) for t in (q, k, v))
    if mask is not None:
        while mask.ndim < 4:
            mask = mask.unsqueeze(0)
    out = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    return out.transpose(1, 2).reshape(batch, -1, inner)


def optimized_attention_for_device(device, mask=False, small_input=False):
    return attention
