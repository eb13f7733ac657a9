"""SD 3.5 in ComfyUI: CLIP-L and CLIP-G (both penultimate, no final norm) side by side, zero-padded to T5's
width, then T5-XXL's rows (no start token, end 1, padding 0 to at least 77 tokens). The pooled vector is L's
and G's pooled side by side. Any of the three may be missing."""

import torch

import comfy.text_encoders.t5
from comfy import model_management, sd1_clip, sdxl_clip

T5_CONFIG = {"vocab_size": 300, "d_model": 96, "d_kv": 16, "d_ff": 128, "num_layers": 2, "num_heads": 4}


class T5XXLModel(sd1_clip.SDClipModel):
    def __init__(self, device="cpu", layer="last", layer_idx=None, dtype=None, attention_mask=False, model_options={}):  # noqa: E501
        super().__init__(
            device=device,
            layer=layer,
            layer_idx=layer_idx,
            textmodel_json_config=T5_CONFIG,
            dtype=dtype,
            special_tokens={"end": 1, "pad": 0},
            model_class=comfy.text_encoders.t5.T5,
            enable_attention_masks=attention_mask,
            return_attention_masks=attention_mask,
            model_options=model_options,
        )


class T5XXLTokenizer(sd1_clip.SDTokenizer):
    def __init__(self, embedding_directory=None, tokenizer_data={}, min_length=77, max_length=99999999):
        super().__init__(
            None,
            embedding_directory=embedding_directory,
            pad_with_end=False,
            embedding_size=T5_CONFIG["d_model"],
            embedding_key="t5xxl",
            tokenizer_class="t5",
            has_start_token=False,
            pad_to_max_length=False,
            max_length=max_length,
            min_length=min_length,
            tokenizer_data=tokenizer_data,
        )


class SD3Tokenizer:
    def __init__(self, embedding_directory=None, tokenizer_data={}):
        self.clip_l = sd1_clip.SDTokenizer(
            embedding_directory=embedding_directory,
            embedding_size=sd1_clip.CLIP_L_CONFIG["hidden_size"],
            tokenizer_data=tokenizer_data,
        )
        self.clip_g = sdxl_clip.SDXLClipGTokenizer(
            embedding_directory=embedding_directory, tokenizer_data=tokenizer_data
        )
        self.t5xxl = T5XXLTokenizer(embedding_directory=embedding_directory, tokenizer_data=tokenizer_data)

    def tokenize_with_weights(self, text, return_word_ids=False, **kwargs):
        return {
            "g": self.clip_g.tokenize_with_weights(text, return_word_ids, **kwargs),
            "l": self.clip_l.tokenize_with_weights(text, return_word_ids, **kwargs),
            "t5xxl": self.t5xxl.tokenize_with_weights(text, return_word_ids, **kwargs),
        }


class SD3ClipModel(torch.nn.Module):
    def __init__(
        self,
        clip_l=True,
        clip_g=True,
        t5=True,
        dtype_t5=None,
        t5_attention_mask=False,
        device="cpu",
        dtype=None,
        model_options={},
    ):  # noqa: E501
        super().__init__()
        self.clip_l = (
            sd1_clip.SDClipModel(
                layer="hidden",
                layer_idx=-2,
                device=device,
                dtype=dtype,
                layer_norm_hidden_state=False,
                return_projected_pooled=False,
            )
            if clip_l
            else None
        )
        self.clip_g = sdxl_clip.SDXLClipG(device=device, dtype=dtype) if clip_g else None
        self.t5xxl = T5XXLModel(device=device, dtype=dtype_t5, attention_mask=t5_attention_mask) if t5 else None
        self.dtypes = {dtype}

    def _models(self):
        return [m for m in (self.clip_l, self.clip_g, self.t5xxl) if m is not None]

    def set_clip_options(self, options):
        for model in self._models():
            model.set_clip_options(options)

    def reset_clip_options(self):
        for model in self._models():
            model.reset_clip_options()

    def encode_token_weights(self, token_weight_pairs):
        width = T5_CONFIG["d_model"]
        device = model_management.intermediate_device()
        out, l_pooled, g_pooled = None, torch.zeros(1, 32, device=device), torch.zeros(1, 48, device=device)
        if self.clip_l is not None:
            out, l_pooled = self.clip_l.encode_token_weights(token_weight_pairs["l"])
        if self.clip_g is not None:
            g_rows, g_pooled = self.clip_g.encode_token_weights(token_weight_pairs["g"])
            if out is None:
                out = torch.nn.functional.pad(g_rows, (sd1_clip.CLIP_L_CONFIG["hidden_size"], 0))
            else:
                rows = min(out.shape[1], g_rows.shape[1])
                out = torch.cat([out[:, :rows], g_rows[:, :rows]], dim=-1)
        if out is not None:
            out = torch.nn.functional.pad(out, (0, width - out.shape[-1]))
        extra = {}
        if self.t5xxl is not None:
            t5 = self.t5xxl.encode_token_weights(token_weight_pairs["t5xxl"])
            out = t5[0] if out is None else torch.cat([out, t5[0]], dim=-2)
            if len(t5) > 2:
                extra["attention_mask"] = t5[2]["attention_mask"]
        return out, torch.cat([l_pooled, g_pooled], dim=-1), extra


def sd3_clip(clip_l=True, clip_g=True, t5=True, dtype_t5=None, t5xxl_scaled_fp8=None, t5_attention_mask=False):
    class SD3ClipModel_(SD3ClipModel):  # noqa: N801 - ComfyUI's name
        def __init__(self, device="cpu", dtype=None, model_options={}):
            super().__init__(clip_l, clip_g, t5, dtype_t5, t5_attention_mask, device, dtype, model_options)

    return SD3ClipModel_
