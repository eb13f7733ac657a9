"""Stand-in for the merging part of ``backend/patcher/lora.py``.

``LoraLoader`` (one per model, shared by every clone of its patcher) merges the patches of the patcher
being loaded: when the set of LoRA identifiers differs from the merged one it puts back the original
weights (``backup``), then for each patched key computes the merged weight in float32 and REPLACES the
parameter with a new ``torch.nn.Parameter`` (``utils.set_attr_raw``), as Forge does (code holding the
old tensor object keeps the old values). Patch values: ``(diff,)`` / ``("diff", (diff,))`` (weight +=
strength * diff) and ``("lora", (up, down, alpha, None, None))`` (weight += strength * alpha / rank *
up @ down, alpha None -> 1); ``strength_model`` scales the weight first. Online LoRA, offsets,
functions, LoCon mids, DoRA and quantized weights are not imitated."""

from __future__ import annotations

import torch

from backend import utils


def merge_lora_to_weight(patches, weight, key="online_lora", computation_dtype=torch.float32):
    dtype = weight.dtype
    weight = weight.detach().to(dtype=computation_dtype, copy=True)
    for strength, value, strength_model, _offset, _function in patches:
        if strength_model != 1.0:
            weight *= strength_model
        kind, args = ("diff", value) if len(value) == 1 else (value[0], value[1])
        if kind == "diff":
            if strength != 0.0:
                weight += strength * args[0].to(weight)
        elif kind == "lora":
            up, down, alpha = args[0].to(weight), args[1].to(weight), args[2]
            scale = 1.0 if alpha is None else alpha / down.shape[0]
            weight += (strength * scale) * (up.flatten(1) @ down.flatten(1)).reshape(weight.shape)
        else:
            raise ValueError(f"patch type {kind!r} is not imitated by the stand-in ({key})")
    return weight.to(dtype=dtype)


class LoraLoader:
    def __init__(self, model):
        self.model = model
        self.backup: dict = {}
        self.online_backup: list = []
        self.loaded_hash = str([])

    @torch.inference_mode()
    def refresh(self, lora_patches, offload_device=None, force_refresh=False):
        offload_device = torch.device("cpu") if offload_device is None else offload_device
        hashes = str(list(lora_patches.keys()))
        if hashes == self.loaded_hash and not force_refresh:
            return
        merged: dict = {}
        for (_filename, _strength, _strength_model, online_mode), patches in lora_patches.items():
            for key, entries in patches.items():
                merged.setdefault((key, online_mode), []).extend(entries)
        # back to the original weights
        for key, weight in self.backup.items():
            if not isinstance(weight, torch.nn.Parameter):
                weight = torch.nn.Parameter(weight, requires_grad=False)
            utils.set_attr_raw(self.model, key, weight)
        self.backup = {}
        # merge
        for (key, _online_mode), entries in merged.items():
            try:
                _parent, _name, weight = utils.get_attr_with_parent(self.model, key)
                assert isinstance(weight, torch.nn.Parameter)
            except Exception as error:
                raise ValueError(f"Wrong LoRA Key: {key}") from error
            if key not in self.backup:
                self.backup[key] = weight.to(device=offload_device)
            new_weight = merge_lora_to_weight(entries, weight, key, computation_dtype=torch.float32)
            utils.set_attr_raw(self.model, key, torch.nn.Parameter(new_weight, requires_grad=False))
        self.loaded_hash = hashes
