"""Stand-in for ``modules/devices.py``: CPU, float32, so ``autocast()`` is a null context
(the WebUI also returns a null context when ``dtype`` is float32, e.g. with ``--no-half``)."""

from __future__ import annotations

import contextlib

import torch

cpu: torch.device = torch.device("cpu")
device: torch.device = cpu
device_interrogate = device_gfpgan = device_esrgan = device_codeformer = cpu
dtype: torch.dtype = torch.float32
dtype_vae: torch.dtype = torch.float32
dtype_unet: torch.dtype = torch.float32
dtype_inference: torch.dtype = torch.float32
unet_needs_upcast = False
fp8 = False
force_fp16 = False


def autocast(disable=False):
    if disable or dtype == torch.float32 or dtype_inference == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast("cpu", dtype=dtype)


def without_autocast(disable=False):
    return contextlib.nullcontext()


def torch_gc():
    pass


def torch_npu_set_device():
    pass


def cond_cast_unet(x):
    return x


def cond_cast_float(x):
    return x


def test_for_nans(x, where):
    pass
