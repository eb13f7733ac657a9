"""Stand-in for ``backend/patcher/unet.py``: ``UnetPatcher`` over a placeholder model (no UNet/DiT in
the stand-in: ``model.diffusion_model`` is an empty module, ``model.predictor`` a namespace)."""

from __future__ import annotations

import types

import torch

from backend import memory_management
from backend.patcher.base import ModelPatcher


class StandinKModel(torch.nn.Module):
    def __init__(self, config=None, k_predictor=None):
        super().__init__()
        self.diffusion_model = torch.nn.Module()
        self.config = config
        self.predictor = k_predictor or types.SimpleNamespace(sigmas=torch.linspace(14.6, 0.03, 1000))
        self.storage_dtype = torch.float32


class UnetPatcher(ModelPatcher):
    @classmethod
    def from_model(cls, model=None, diffusers_scheduler=None, config=None, k_predictor=None):
        k_model = StandinKModel(config, k_predictor)
        return cls(k_model, load_device=memory_management.get_torch_device(), offload_device=memory_management.cpu)

    def clone(self):
        n = UnetPatcher(self.model, self.load_device, self.offload_device, self.size, self.current_device)
        n.lora_patches = self.lora_patches.copy()
        n.object_patches = self.object_patches.copy()
        n.model_options = {k: (v.copy() if isinstance(v, dict) else v) for k, v in self.model_options.items()}
        return n
