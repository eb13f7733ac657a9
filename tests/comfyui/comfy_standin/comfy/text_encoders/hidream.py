"""HiDream in ComfyUI: CLIP-L and CLIP-G give the pooled vector only (side by side); the conditioning's rows are
T5-XXL's first chunk (128 tokens, under an attention mask); Llama 3 (every layer: each layer's input and the
final norm's output, weights parsed, padding 128009 to at least 128 tokens) goes to `conditioning_llama3` with
its first entry (the embeddings) dropped: `(1, layers, tokens, width)`. A missing model gives zeros."""

import torch

from comfy import model_management, sd1_clip, sdxl_clip
from comfy.text_encoders import hunyuan_video, sd3_clip


class HiDreamTokenizer:
    def __init__(self, embedding_directory=None, tokenizer_data={}):
        self.clip_l = sd1_clip.SDTokenizer(
            embedding_directory=embedding_directory,
            embedding_size=sd1_clip.CLIP_L_CONFIG["hidden_size"],
            tokenizer_data=tokenizer_data,
        )
        self.clip_g = sdxl_clip.SDXLClipGTokenizer(
            embedding_directory=embedding_directory, tokenizer_data=tokenizer_data
        )
        self.t5xxl = sd3_clip.T5XXLTokenizer(
            embedding_directory=embedding_directory, min_length=128, max_length=128, tokenizer_data=tokenizer_data
        )
        self.llama = hunyuan_video.LLAMA3Tokenizer(
            embedding_directory=embedding_directory, min_length=128, pad_token=128009, tokenizer_data=tokenizer_data
        )

    def tokenize_with_weights(self, text, return_word_ids=False, **kwargs):
        return {
            "g": self.clip_g.tokenize_with_weights(text, return_word_ids, **kwargs),
            "l": self.clip_l.tokenize_with_weights(text, return_word_ids, **kwargs),
            "t5xxl": self.t5xxl.tokenize_with_weights(text, return_word_ids, **kwargs)[:1],
            "llama": self.llama.tokenize_with_weights(text, return_word_ids, **kwargs),
        }


class HiDreamTEModel(torch.nn.Module):
    def __init__(self, clip_l=True, clip_g=True, t5=True, llama=True, device="cpu", dtype=None, model_options={}):
        super().__init__()
        self.clip_l = sd1_clip.SDClipModel(device=device, dtype=dtype, return_projected_pooled=True) if clip_l else None
        self.clip_g = sdxl_clip.SDXLClipG(device=device, dtype=dtype) if clip_g else None
        self.t5xxl = sd3_clip.T5XXLModel(device=device, dtype=dtype, attention_mask=True) if t5 else None
        self.llama = (
            hunyuan_video.LLAMAModel(
                device=device, dtype=dtype, layer="all", layer_idx=None, special_tokens={"start": 128000, "pad": 128009}
            )
            if llama
            else None
        )
        self.dtypes = {dtype}

    def _models(self):
        return [m for m in (self.clip_l, self.clip_g, self.t5xxl, self.llama) if m is not None]

    def set_clip_options(self, options):
        for model in self._models():
            model.set_clip_options(options)

    def reset_clip_options(self):
        for model in self._models():
            model.reset_clip_options()

    def encode_token_weights(self, token_weight_pairs):
        device = model_management.intermediate_device()
        width = sd3_clip.T5_CONFIG["d_model"]
        l_pooled = torch.zeros(1, sd1_clip.CLIP_L_CONFIG["hidden_size"], device=device)
        g_pooled = torch.zeros(1, sdxl_clip.CLIP_G_CONFIG["hidden_size"], device=device)
        if self.clip_l is not None:
            l_pooled = self.clip_l.encode_token_weights(token_weight_pairs["l"])[1]
        if self.clip_g is not None:
            g_pooled = self.clip_g.encode_token_weights(token_weight_pairs["g"])[1]
        t5 = torch.zeros(1, 128, width, device=device)
        if self.t5xxl is not None:
            t5 = self.t5xxl.encode_token_weights(token_weight_pairs["t5xxl"])[0]
        llama = torch.zeros(1, 3, 1, width, device=device)
        if self.llama is not None:
            llama = self.llama.encode_token_weights(token_weight_pairs["llama"])[0][:, 1:]
        return t5, torch.cat([l_pooled, g_pooled], dim=-1), {"conditioning_llama3": llama}


def hidream_clip(clip_l=True, clip_g=True, t5=True, llama=True, **kwargs):
    class HiDreamTEModel_(HiDreamTEModel):  # noqa: N801 - ComfyUI's name
        def __init__(self, device="cpu", dtype=None, model_options={}):
            super().__init__(clip_l, clip_g, t5, llama, device, dtype, model_options)

    return HiDreamTEModel_
