"""ComfyUI's Llama 3 tokenizer and model wrapper (`comfy.text_encoders.hunyuan_video`), which HiDream uses: start
token 128000, no end token, padding to `min_length` with `pad_token`, weights parsed; the model reads hidden
layer -3 by default, no final norm on it, under an attention mask."""

import comfy.text_encoders.llama
from comfy import sd1_clip


class LLAMA3Tokenizer(sd1_clip.SDTokenizer):
    def __init__(self, embedding_directory=None, tokenizer_data={}, min_length=256, pad_token=128258):
        super().__init__(
            None,
            embedding_directory=embedding_directory,
            pad_with_end=False,
            embedding_size=32,
            embedding_key="llama",
            tokenizer_class="llama3",
            has_start_token=True,
            has_end_token=False,
            pad_to_max_length=False,
            max_length=99999999,
            pad_token=pad_token,
            min_length=min_length,
            tokenizer_data=tokenizer_data,
        )


class LLAMAModel(sd1_clip.SDClipModel):
    def __init__(
        self,
        device="cpu",
        layer="hidden",
        layer_idx=-3,
        dtype=None,
        attention_mask=True,
        model_options={},
        special_tokens={"start": 128000, "pad": 128258},
    ):
        super().__init__(
            device=device,
            layer=layer,
            layer_idx=layer_idx,
            textmodel_json_config={},
            dtype=dtype,
            special_tokens=special_tokens,
            layer_norm_hidden_state=False,
            model_class=comfy.text_encoders.llama.Llama2,
            enable_attention_masks=attention_mask,
            return_attention_masks=attention_mask,
            model_options=model_options,
        )
