"""Flux in ComfyUI: the conditioning rows are T5-XXL's (padded to at least 256 tokens); CLIP-L (last layer)
gives the pooled vector only."""

import torch

from comfy import sd1_clip
from comfy.text_encoders import sd3_clip


class T5XXLTokenizer(sd3_clip.T5XXLTokenizer):
    def __init__(self, embedding_directory=None, tokenizer_data={}):
        super().__init__(embedding_directory=embedding_directory, tokenizer_data=tokenizer_data, min_length=256)


class FluxTokenizer:
    def __init__(self, embedding_directory=None, tokenizer_data={}):
        self.clip_l = sd1_clip.SDTokenizer(
            embedding_directory=embedding_directory,
            embedding_size=sd1_clip.CLIP_L_CONFIG["hidden_size"],
            tokenizer_data=tokenizer_data,
        )
        self.t5xxl = T5XXLTokenizer(embedding_directory=embedding_directory, tokenizer_data=tokenizer_data)

    def tokenize_with_weights(self, text, return_word_ids=False, **kwargs):
        return {
            "l": self.clip_l.tokenize_with_weights(text, return_word_ids, **kwargs),
            "t5xxl": self.t5xxl.tokenize_with_weights(text, return_word_ids, **kwargs),
        }


class FluxClipModel(torch.nn.Module):
    def __init__(self, dtype_t5=None, device="cpu", dtype=None, model_options={}):
        super().__init__()
        self.clip_l = sd1_clip.SDClipModel(device=device, dtype=dtype, return_projected_pooled=False)
        self.t5xxl = sd3_clip.T5XXLModel(device=device, dtype=dtype_t5)
        self.dtypes = {dtype}

    def set_clip_options(self, options):
        self.clip_l.set_clip_options(options)
        self.t5xxl.set_clip_options(options)

    def reset_clip_options(self):
        self.clip_l.reset_clip_options()
        self.t5xxl.reset_clip_options()

    def encode_token_weights(self, token_weight_pairs):
        t5_rows, _ = self.t5xxl.encode_token_weights(token_weight_pairs["t5xxl"])
        _, l_pooled = self.clip_l.encode_token_weights(token_weight_pairs["l"])
        return t5_rows, l_pooled


def flux_clip(dtype_t5=None, t5xxl_scaled_fp8=None):
    class FluxClipModel_(FluxClipModel):  # noqa: N801 - ComfyUI's name
        def __init__(self, device="cpu", dtype=None, model_options={}):
            super().__init__(dtype_t5=dtype_t5, device=device, dtype=dtype, model_options=model_options)

    return FluxClipModel_
