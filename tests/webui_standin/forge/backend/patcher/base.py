"""Stand-in for ``backend/patcher/base.py``: ``ModelPatcher`` -- a model plus the patches to apply when
it is loaded (``lora_patches`` keyed ``(filename, strength_patch, strength_model, online_mode)``,
``object_patches``, ``model_options``). Clones share the model (and its ``lora_loader``)."""

from __future__ import annotations

import copy

from backend import utils
from backend.patcher.lora import LoraLoader


class ModelPatcher:
    def __init__(self, model, load_device, offload_device, size=0, current_device=None, **kwargs):
        self.size = size
        self.model = model
        self.lora_patches: dict = {}
        self.object_patches: dict = {}
        self.object_patches_backup: dict = {}
        self.model_options: dict = {"transformer_options": {}}
        self.load_device = load_device
        self.offload_device = offload_device
        if not hasattr(model, "lora_loader"):
            model.lora_loader = LoraLoader(model)
        self.lora_loader: LoraLoader = model.lora_loader
        self.current_device = self.offload_device if current_device is None else current_device

    def model_size(self):
        return self.size

    def clone(self):
        n = ModelPatcher(self.model, self.load_device, self.offload_device, self.size, self.current_device)
        n.lora_patches = self.lora_patches.copy()
        n.object_patches = self.object_patches.copy()
        n.model_options = copy.deepcopy(self.model_options)
        return n

    def is_clone(self, other):
        return hasattr(other, "model") and self.model is other.model

    def add_patches(self, *, filename, patches, strength_patch=1.0, strength_model=1.0, online_mode=False):
        """Keep the patches whose key names a parameter of the model; returns the accepted keys."""
        identifier = (filename, strength_patch, strength_model, online_mode)
        accepted = set()
        mine: dict = {}
        model_keys = set(standin_parameter_keys(self.model))
        for k, value in patches.items():
            key, offset, function = (
                (k, None, None) if isinstance(k, str) else (k[0], k[1], k[2] if len(k) > 2 else None)
            )
            if key in model_keys:
                accepted.add(k)
                mine.setdefault(key, []).append([strength_patch, value, strength_model, offset, function])
        self.lora_patches[identifier] = mine
        return accepted

    def has_online_lora(self):
        return any(online for (_f, _s, _m, online) in self.lora_patches)

    def refresh_loras(self):
        self.lora_loader.refresh(lora_patches=self.lora_patches, offload_device=self.offload_device)

    def add_object_patch(self, name, obj):
        self.object_patches[name] = obj

    def get_model_object(self, name):
        if name in self.object_patches:
            return self.object_patches[name]
        if name in self.object_patches_backup:
            return self.object_patches_backup[name]
        return utils.get_attr(self.model, name)

    def model_patches_to(self, device):
        pass

    def model_dtype(self):
        return next((p.dtype for p in self.model.parameters()), None)

    def forge_patch_model(self, target_device=None):
        for key, obj in self.object_patches.items():
            old = utils.get_attr(self.model, key)
            self.object_patches_backup.setdefault(key, old)
            utils.set_attr_raw(self.model, key, obj)
        if target_device is not None:
            self.current_device = target_device
        return self.model

    def forge_unpatch_model(self, target_device=None):
        if target_device is not None:
            self.current_device = target_device
        for key, old in self.object_patches_backup.items():
            utils.set_attr_raw(self.model, key, old)
        self.object_patches_backup = {}


def standin_parameter_keys(model):
    """Parameter names as Forge (transformers 4.x) spells them: ``...transformer.text_model.encoder...``
    also under transformers 5 (whose CLIPTextModel has no ``text_model`` level; the alias resolves it)."""
    for name, _ in model.named_parameters():
        yield _with_text_model(model, name)


def _with_text_model(model, name):
    parts = name.split(".")
    if "transformer" in parts:
        i = parts.index("transformer")
        owner = utils.get_attr(model, ".".join(parts[: i + 1]))
        aliased = getattr(owner, "text_model", None) is owner
        if aliased and parts[i + 1 : i + 2] in (["embeddings"], ["encoder"], ["final_layer_norm"]):
            parts.insert(i + 1, "text_model")
    return ".".join(parts)
