"""A model with weight patches (a LoRA's deltas): put on the weights in place when loaded, taken off after."""

import uuid

import torch


class ModelPatcher:
    def __init__(self, model, load_device=None, offload_device=None):
        self.model = model
        self.load_device = load_device
        self.offload_device = offload_device
        self.patches = {}  # parameter name -> [(strength, delta)]
        self.patches_uuid = uuid.uuid4()
        self.backup = {}
        self.forced_hooks = None

    def clone(self):
        other = ModelPatcher(self.model, self.load_device, self.offload_device)
        other.patches = {key: list(value) for key, value in self.patches.items()}
        other.patches_uuid = self.patches_uuid
        return other

    def add_patches(self, patches, strength_patch=1.0, strength_model=1.0):
        names = dict(self.model.named_parameters())
        added = []
        for key, delta in patches.items():
            if key in names:
                self.patches.setdefault(key, []).append((strength_patch, delta))
                added.append(key)
        self.patches_uuid = uuid.uuid4()
        return added

    @torch.no_grad()
    def patch_model(self):
        names = dict(self.model.named_parameters())
        for key, entries in self.patches.items():
            weight = names[key]
            self.backup[key] = weight.detach().clone()
            for strength, delta in entries:
                weight += strength * delta.to(weight)

    @torch.no_grad()
    def unpatch_model(self):
        names = dict(self.model.named_parameters())
        for key, original in self.backup.items():
            names[key].copy_(original)
        self.backup = {}
