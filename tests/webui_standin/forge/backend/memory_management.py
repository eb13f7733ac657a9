"""Stand-in for ``backend/memory_management.py``: the model-loading bookkeeping, on the CPU.

``load_model_gpu(patcher)`` -> ``load_models_gpu([patcher])``: a patcher already in
``current_loaded_models`` (the same patcher object) only moves to the front; otherwise every loaded
clone of it (another patcher of the same ``model``) is unloaded, and the patcher is loaded, which
applies its LoRA patches to the model's weights (``patcher.refresh_loras()`` ->
``LoraLoader.refresh``: a no-op when the same LoRA set is already merged). Weights stay patched
after an unload: Forge restores them only at the next load of a clone with other patches.

Stand-in extra: ``load_calls`` records every patcher given to ``load_models_gpu`` (tests observe it)."""

from __future__ import annotations

import torch

cpu = torch.device("cpu")
current_loaded_models: list = []
load_calls: list = []
signal_empty_cache = False


def get_torch_device():
    return cpu


def text_encoder_device():
    return cpu


def text_encoder_offload_device():
    return cpu


def text_encoder_dtype(device=None):
    return torch.float32  # Forge: float16 unless told otherwise; the stand-in stays in float32


def unet_offload_device():
    return cpu


def vae_device():
    return cpu


def intermediate_device():
    return cpu


def is_device_cpu(device):
    return torch.device(device).type == "cpu"


def cast_to_device(tensor, device, dtype, copy=False):
    return tensor.to(device=device, dtype=dtype, copy=copy)


def soft_empty_cache(force=False):
    global signal_empty_cache
    signal_empty_cache = False


class LoadedModel:
    def __init__(self, model):
        self.model = model  # a ModelPatcher
        self.device = model.load_device
        self.model_accelerated = False
        self.real_model = None

    def model_load(self, model_gpu_memory_when_using_cpu_swap=-1):
        self.real_model = self.model.forge_patch_model(self.device)
        self.model.current_device = self.model.load_device
        self.model.refresh_loras()
        return self.real_model

    def model_unload(self, avoid_model_moving=False):
        if avoid_model_moving:
            self.model.forge_unpatch_model()
        else:
            self.model.forge_unpatch_model(self.model.offload_device)

    def __eq__(self, other):
        return self.model is other.model


def unload_model_clones(model):
    for i in reversed(range(len(current_loaded_models))):
        if model.is_clone(current_loaded_models[i].model):
            current_loaded_models.pop(i).model_unload(avoid_model_moving=True)


def load_models_gpu(models, memory_required=0, hard_memory_preservation=0):
    load_calls.extend(models)
    to_load = []
    for patcher in models:
        loaded = LoadedModel(patcher)
        if loaded in current_loaded_models:
            current_loaded_models.insert(0, current_loaded_models.pop(current_loaded_models.index(loaded)))
        else:
            to_load.append(loaded)
    for loaded in to_load:
        unload_model_clones(loaded.model)
    for loaded in to_load:
        loaded.model_load()
        current_loaded_models.insert(0, loaded)


def load_model_gpu(model):
    return load_models_gpu([model])


def unload_all_models():
    while current_loaded_models:
        current_loaded_models.pop().model_unload()


def standin_reset():
    """Forget every loaded model (``standin.reset``); weights keep whatever was merged into them."""
    current_loaded_models.clear()
    load_calls.clear()
