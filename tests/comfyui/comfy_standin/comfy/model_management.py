"""Devices and loading: everything on the CPU; loading a patcher applies its weight patches (see model_patcher)."""

import torch

_loaded = {}  # id(model) -> the patcher whose patches are on its weights


def intermediate_device():
    return torch.device("cpu")


def text_encoder_device():
    return torch.device("cpu")


def load_model_gpu(patcher):
    current = _loaded.get(id(patcher.model))
    if current is not patcher:
        if current is not None:
            current.unpatch_model()
        patcher.patch_model()
        _loaded[id(patcher.model)] = patcher
    return patcher


def load_models_gpu(patchers, **kwargs):
    for patcher in patchers:
        load_model_gpu(patcher)
