"""SDXL's text encoders in ComfyUI: CLIP-L (penultimate layer, no final norm) and CLIP-G (penultimate, no final
norm, padding id 0), rows side by side, cut to the shorter; the pooled vector is G's."""

import torch

from comfy import sd1_clip

CLIP_G_CONFIG = {**sd1_clip.CLIP_L_CONFIG, "hidden_size": 48, "intermediate_size": 192, "hidden_act": "gelu"}


class SDXLClipG(sd1_clip.SDClipModel):
    def __init__(
        self,
        device="cpu",
        max_length=77,
        freeze=True,
        layer="penultimate",
        layer_idx=None,
        dtype=None,
        model_options={},
    ):  # noqa: E501
        if layer == "penultimate":
            layer, layer_idx = "hidden", -2
        super().__init__(
            device=device,
            layer=layer,
            layer_idx=layer_idx,
            textmodel_json_config=CLIP_G_CONFIG,
            dtype=dtype,
            special_tokens={"start": 49406, "end": 49407, "pad": 0},
            layer_norm_hidden_state=False,
            return_projected_pooled=True,
            model_options=model_options,
        )


class SDXLClipGTokenizer(sd1_clip.SDTokenizer):
    def __init__(self, tokenizer_path=None, embedding_directory=None, tokenizer_data={}):
        super().__init__(
            tokenizer_path,
            pad_with_end=False,
            embedding_directory=embedding_directory,
            embedding_size=CLIP_G_CONFIG["hidden_size"],
            embedding_key="clip_g",
            tokenizer_data=tokenizer_data,
        )


class SDXLTokenizer:
    def __init__(self, embedding_directory=None, tokenizer_data={}):
        self.clip_l = sd1_clip.SDTokenizer(
            embedding_directory=embedding_directory,
            embedding_size=sd1_clip.CLIP_L_CONFIG["hidden_size"],
            tokenizer_data=tokenizer_data,
        )
        self.clip_g = SDXLClipGTokenizer(embedding_directory=embedding_directory, tokenizer_data=tokenizer_data)

    def tokenize_with_weights(self, text, return_word_ids=False, **kwargs):
        return {
            "g": self.clip_g.tokenize_with_weights(text, return_word_ids, **kwargs),
            "l": self.clip_l.tokenize_with_weights(text, return_word_ids, **kwargs),
        }


class SDXLClipModel(torch.nn.Module):
    def __init__(self, device="cpu", dtype=None, model_options={}):
        super().__init__()
        self.clip_l = sd1_clip.SDClipModel(
            layer="hidden", layer_idx=-2, device=device, dtype=dtype, layer_norm_hidden_state=False
        )
        self.clip_g = SDXLClipG(device=device, dtype=dtype)
        self.dtypes = {dtype}

    def set_clip_options(self, options):
        self.clip_l.set_clip_options(options)
        self.clip_g.set_clip_options(options)

    def reset_clip_options(self):
        self.clip_g.reset_clip_options()
        self.clip_l.reset_clip_options()

    def encode_token_weights(self, token_weight_pairs):
        g_rows, g_pooled = self.clip_g.encode_token_weights(token_weight_pairs["g"])
        l_rows, _ = self.clip_l.encode_token_weights(token_weight_pairs["l"])
        rows = min(l_rows.shape[1], g_rows.shape[1])
        return torch.cat([l_rows[:, :rows], g_rows[:, :rows]], dim=-1), g_pooled
