"""PixArt and Chroma in ComfyUI (`CLIPType.PIXART` / `CLIPType.CHROMA`): T5-XXL alone in an `SD1ClipModel` under the
key "t5xxl"; the tokenizer appends the end token and pads nothing (minimum length 1); the empty prompt that weights
move toward is padding only (no end token); there is no pooled vector."""

from comfy import sd1_clip
from comfy.text_encoders import sd3_clip


class T5XXLModel(sd3_clip.T5XXLModel):
    def gen_empty_tokens(self, special_tokens, *args, **kwargs):
        special_tokens = {name: token for name, token in special_tokens.items() if name != "end"}
        return sd1_clip.gen_empty_tokens(special_tokens, *args, **kwargs)


class PixArtT5XXL(sd1_clip.SD1ClipModel):
    def __init__(self, device="cpu", dtype=None, model_options={}):
        super().__init__(device=device, dtype=dtype, name="t5xxl", clip_model=T5XXLModel, model_options=model_options)


class T5XXLTokenizer(sd3_clip.T5XXLTokenizer):
    def __init__(self, embedding_directory=None, tokenizer_data={}):
        super().__init__(embedding_directory=embedding_directory, tokenizer_data=tokenizer_data, min_length=1)


class PixArtTokenizer(sd1_clip.SD1Tokenizer):
    def __init__(self, embedding_directory=None, tokenizer_data={}):
        super().__init__(
            embedding_directory=embedding_directory,
            tokenizer_data=tokenizer_data,
            clip_name="t5xxl",
            tokenizer=T5XXLTokenizer,
        )


def pixart_te(dtype_t5=None, t5xxl_scaled_fp8=None):
    class PixArtTEModel_(PixArtT5XXL):  # noqa: N801 - ComfyUI's name
        def __init__(self, device="cpu", dtype=None, model_options={}):
            super().__init__(device=device, dtype=dtype_t5 if dtype is None else dtype, model_options=model_options)

    return PixArtTEModel_
