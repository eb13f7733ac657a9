"""SD 2.x in ComfyUI: one CLIP-H (key "h"), penultimate layer with the final norm, padding id 0."""

from comfy import sd1_clip

CLIP_H_CONFIG = {**sd1_clip.CLIP_L_CONFIG, "hidden_size": 40, "intermediate_size": 160, "hidden_act": "gelu"}


class SD2ClipHModel(sd1_clip.SDClipModel):
    def __init__(
        self,
        arch="ViT-H-14",
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
            textmodel_json_config=CLIP_H_CONFIG,
            dtype=dtype,
            special_tokens={"start": 49406, "end": 49407, "pad": 0},
            return_projected_pooled=True,
            model_options=model_options,
        )


class SD2ClipHTokenizer(sd1_clip.SDTokenizer):
    def __init__(self, tokenizer_path=None, embedding_directory=None, tokenizer_data={}):
        super().__init__(
            tokenizer_path,
            pad_with_end=False,
            embedding_directory=embedding_directory,
            embedding_size=CLIP_H_CONFIG["hidden_size"],
            embedding_key="clip_h",
            tokenizer_data=tokenizer_data,
        )


class SD2Tokenizer(sd1_clip.SD1Tokenizer):
    def __init__(self, embedding_directory=None, tokenizer_data={}):
        super().__init__(
            embedding_directory=embedding_directory,
            tokenizer_data=tokenizer_data,
            clip_name="h",
            tokenizer=SD2ClipHTokenizer,
        )  # noqa: E501


class SD2ClipModel(sd1_clip.SD1ClipModel):
    def __init__(self, device="cpu", dtype=None, model_options={}, **kwargs):
        super().__init__(
            device=device, dtype=dtype, model_options=model_options, clip_name="h", clip_model=SD2ClipHModel, **kwargs
        )  # noqa: E501
