"""Qwen-Image in ComfyUI: Qwen 2.5 VL 7B's language model, key "qwen25_7b". The tokenizer puts the prompt in a
chat template (unless the text starts with `<|im_start|>` or `<|start_header_id|>`) and reads it with weights
off (`(word:1.2)` is text; `\\(` escapes still resolve); no start or end token, no padding. Rows: the last layer
after the final norm; `encode_token_weights` then drops the rows up to the second `<|im_start|>` (151644) and,
where `user` (872) and a line break (198) follow it, those too; the attention mask goes where nothing is masked."""

import numbers

import comfy.text_encoders.llama
from comfy import sd1_clip

TEMPLATE = (
    "<|im_start|>system\nDescribe the image by detailing the color, shape, size, texture, quantity, text, spatial "
    "relationships of the objects and background:<|im_end|>\n<|im_start|>user\n{}<|im_end|>\n<|im_start|>assistant\n"
)


class Qwen25_7BVLITokenizer(sd1_clip.SDTokenizer):  # noqa: N801 - ComfyUI's name
    def __init__(self, embedding_directory=None, tokenizer_data={}):
        super().__init__(
            None,
            pad_with_end=False,
            embedding_size=32,
            embedding_key="qwen25_7b",
            tokenizer_class="qwen25",
            has_start_token=False,
            has_end_token=False,
            pad_to_max_length=False,
            max_length=99999999,
            min_length=1,
            pad_token=151643,
            tokenizer_data=tokenizer_data,
        )


class QwenImageTokenizer(sd1_clip.SD1Tokenizer):
    def __init__(self, embedding_directory=None, tokenizer_data={}):
        super().__init__(
            embedding_directory=embedding_directory,
            tokenizer_data=tokenizer_data,
            name="qwen25_7b",
            tokenizer=Qwen25_7BVLITokenizer,
        )
        self.llama_template = TEMPLATE

    def tokenize_with_weights(self, text, return_word_ids=False, llama_template=None, images=[], **kwargs):
        if text.startswith("<|im_start|>") or text.startswith("<|start_header_id|>"):
            wrapped = text
        else:
            wrapped = (llama_template or self.llama_template).format(text)
        kwargs["disable_weights"] = True
        return super().tokenize_with_weights(wrapped, return_word_ids, **kwargs)


class Qwen25_7BVLIModel(sd1_clip.SDClipModel):  # noqa: N801 - ComfyUI's name
    def __init__(self, device="cpu", layer="last", layer_idx=None, dtype=None, attention_mask=True, model_options={}):
        super().__init__(
            device=device,
            layer=layer,
            layer_idx=layer_idx,
            textmodel_json_config={},
            dtype=dtype,
            special_tokens={"pad": 151643},
            layer_norm_hidden_state=False,
            model_class=comfy.text_encoders.llama.Qwen25_7BVLI,
            enable_attention_masks=attention_mask,
            return_attention_masks=attention_mask,
            model_options=model_options,
        )


class QwenImageTEModel(sd1_clip.SD1ClipModel):
    def __init__(self, device="cpu", dtype=None, model_options={}):
        super().__init__(
            device=device, dtype=dtype, name="qwen25_7b", clip_model=Qwen25_7BVLIModel, model_options=model_options
        )

    def encode_token_weights(self, token_weight_pairs, template_end=-1):
        out, pooled, extra = super().encode_token_weights(token_weight_pairs)
        tokens = [entry[0] for entry in token_weight_pairs["qwen25_7b"][0]]
        if template_end == -1:
            starts = [i for i, t in enumerate(tokens) if isinstance(t, numbers.Integral) and t == 151644][:2]
            template_end = starts[-1] if starts else -1
            if out.shape[1] > template_end + 3 and tokens[template_end + 1 : template_end + 3] == [872, 198]:
                template_end += 3
        out = out[:, template_end:]
        extra["attention_mask"] = extra["attention_mask"][:, template_end:]
        if bool(extra["attention_mask"].all()):
            extra.pop("attention_mask")
        return out, pooled, extra


def te(dtype_llama=None, llama_scaled_fp8=None):
    class QwenImageTEModel_(QwenImageTEModel):  # noqa: N801 - ComfyUI's name
        pass

    return QwenImageTEModel_
