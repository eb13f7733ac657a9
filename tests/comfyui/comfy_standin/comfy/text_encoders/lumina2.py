"""Lumina 2 in ComfyUI: Gemma 2 2B, key "gemma2_2b"; the tokenizer starts with Gemma's start token 2, has no end
token and no padding (weights parsed as for CLIP); rows are the second-to-last layer's output without the final
norm, under an attention mask (padding id 0). The system prompt is added by `CLIPTextEncodeLumina2`
(`comfy_extras.nodes_lumina2`), not here."""

import comfy.text_encoders.llama
from comfy import sd1_clip


class Gemma2BTokenizer(sd1_clip.SDTokenizer):
    def __init__(self, embedding_directory=None, tokenizer_data={}):
        super().__init__(
            None,
            pad_with_end=False,
            embedding_size=32,
            embedding_key="gemma2_2b",
            tokenizer_class="gemma",
            has_end_token=False,
            pad_to_max_length=False,
            max_length=99999999,
            min_length=1,
            tokenizer_args={"add_bos": True, "add_eos": False},
            tokenizer_data=tokenizer_data,
        )


class LuminaTokenizer(sd1_clip.SD1Tokenizer):
    def __init__(self, embedding_directory=None, tokenizer_data={}):
        super().__init__(
            embedding_directory=embedding_directory,
            tokenizer_data=tokenizer_data,
            name="gemma2_2b",
            tokenizer=Gemma2BTokenizer,
        )


class Gemma2_2BModel(sd1_clip.SDClipModel):  # noqa: N801 - ComfyUI's name
    def __init__(self, device="cpu", layer="hidden", layer_idx=-2, dtype=None, attention_mask=True, model_options={}):
        super().__init__(
            device=device,
            layer=layer,
            layer_idx=layer_idx,
            textmodel_json_config={},
            dtype=dtype,
            special_tokens={"start": 2, "pad": 0},
            layer_norm_hidden_state=False,
            model_class=comfy.text_encoders.llama.Gemma2_2B,
            enable_attention_masks=attention_mask,
            return_attention_masks=attention_mask,
            model_options=model_options,
        )


class LuminaModel(sd1_clip.SD1ClipModel):
    def __init__(self, device="cpu", dtype=None, model_options={}, name="gemma2_2b", clip_model=Gemma2_2BModel):
        super().__init__(device=device, dtype=dtype, name=name, clip_model=clip_model, model_options=model_options)


def te(dtype_llama=None, llama_scaled_fp8=None, model_type="gemma2_2b"):
    class LuminaTEModel_(LuminaModel):  # noqa: N801 - ComfyUI's name
        def __init__(self, device="cpu", dtype=None, model_options={}):
            super().__init__(device=device, dtype=dtype, name=model_type, model_options=model_options)

    return LuminaTEModel_
