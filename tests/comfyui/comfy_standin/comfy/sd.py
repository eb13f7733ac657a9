"""ComfyUI's `CLIP` object: a tokenizer, a text-encoder model, a patcher (weight patches) and a clip-skip layer."""

import comfy.model_patcher
from comfy import model_management


class CLIP:
    def __init__(self, target=None, embedding_directory=None, no_init=False, tokenizer_data={}, model_options={}):
        if no_init:
            return
        self.cond_stage_model = target.clip(device="cpu", dtype=None, model_options=model_options)
        self.tokenizer = target.tokenizer(embedding_directory=embedding_directory, tokenizer_data=tokenizer_data)
        self.patcher = comfy.model_patcher.ModelPatcher(self.cond_stage_model)
        self.layer_idx = None
        self.use_clip_schedule = False
        self.apply_hooks_to_conds = None
        self.tokenizer_options = {}

    def clone(self):
        other = CLIP(no_init=True)
        other.patcher = self.patcher.clone()
        other.cond_stage_model = self.cond_stage_model
        other.tokenizer = self.tokenizer
        other.layer_idx = self.layer_idx
        other.tokenizer_options = dict(self.tokenizer_options)
        other.use_clip_schedule = self.use_clip_schedule
        other.apply_hooks_to_conds = self.apply_hooks_to_conds
        return other

    def add_patches(self, patches, strength_patch=1.0, strength_model=1.0):
        return self.patcher.add_patches(patches, strength_patch, strength_model)

    def set_tokenizer_option(self, name, value):
        self.tokenizer_options[name] = value

    def clip_layer(self, layer_idx):
        self.layer_idx = layer_idx

    def tokenize(self, text, return_word_ids=False, **kwargs):
        options = {**self.tokenizer_options, **kwargs.get("tokenizer_options", {})}
        if options:
            kwargs["tokenizer_options"] = options
        return self.tokenizer.tokenize_with_weights(text, return_word_ids, **kwargs)

    def encode_from_tokens_scheduled(self, tokens, unprojected=False, add_dict={}, show_pbar=True):
        found = self.encode_from_tokens(tokens, return_pooled="unprojected" if unprojected else True, return_dict=True)
        cond = found.pop("cond")
        found.update(add_dict)
        return [[cond, found]]

    def encode_from_tokens(self, tokens, return_pooled=False, return_dict=False):
        self.cond_stage_model.reset_clip_options()
        if self.layer_idx is not None:
            self.cond_stage_model.set_clip_options({"layer": self.layer_idx})
        if return_pooled == "unprojected":
            self.cond_stage_model.set_clip_options({"projected_pooled": False})
        self.load_model()
        out = self.cond_stage_model.encode_token_weights(tokens)
        cond, pooled = out[:2]
        if return_dict:
            found = {"cond": cond, "pooled_output": pooled}
            if len(out) > 2:
                found.update(out[2])
            return found
        return (cond, pooled) if return_pooled else cond

    def encode(self, text):
        return self.encode_from_tokens(self.tokenize(text))

    def load_model(self):
        model_management.load_model_gpu(self.patcher)
        return self.patcher
