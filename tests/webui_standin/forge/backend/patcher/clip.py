"""Stand-in for ``backend/patcher/clip.py``: ``CLIP`` = ``cond_stage_model`` (a ``JointTextEncoder``
holding ``clip_l`` / ``clip_g`` / ``t5xxl``), ``tokenizer`` (an ``ObjectDict``) and ``patcher`` (a
``ModelPatcher`` over ``cond_stage_model``; ``clone()`` shares model and tokenizers)."""

from __future__ import annotations

from backend import memory_management
from backend.nn.base import ModuleDict, ObjectDict
from backend.patcher.base import ModelPatcher


class JointTextEncoder(ModuleDict):
    pass


class CLIP:
    def __init__(self, model_dict=None, tokenizer_dict=None, no_init=False):
        if no_init:
            return
        self.cond_stage_model = JointTextEncoder(model_dict or {})
        self.tokenizer = ObjectDict(tokenizer_dict or {})
        self.patcher = ModelPatcher(
            self.cond_stage_model,
            load_device=memory_management.text_encoder_device(),
            offload_device=memory_management.text_encoder_offload_device(),
        )

    def clone(self):
        n = CLIP(no_init=True)
        n.patcher = self.patcher.clone()
        n.cond_stage_model = self.cond_stage_model
        n.tokenizer = self.tokenizer
        return n

    def add_patches(self, *args, **kwargs):
        return self.patcher.add_patches(*args, **kwargs)
