"""Which device a model runs on: `device="auto"`, "cpu", "cuda", "cuda:1", "mps", checked before any model loads."""

from __future__ import annotations

import re

from flowcore.errors import DeviceError

DEVICE_FORM = re.compile(r"auto|cpu|mps|cuda(:\d+)?")
DEVICE_CHOICES = "auto, cpu, cuda, cuda:N or mps"


def resolve_device(device: str, name: str = "device") -> str:
    """The torch device for `device` ("auto": CUDA where available, else the CPU), or `DeviceError` naming
    `name` where the value is not a device or this machine's PyTorch cannot use it."""
    if not isinstance(device, str) or not DEVICE_FORM.fullmatch(device):
        hint = " For an NVIDIA GPU use `cuda`." if str(device).lower().startswith(("gpu", "nvidia")) else ""
        raise DeviceError(f"`{name}` must be {DEVICE_CHOICES} but is {device!r}.{hint}")
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            if torch.version.cuda is None:
                how = (
                    f"or install a CUDA build of PyTorch: on Linux `python -m pip install --force-reinstall "
                    f"torch=={torch.__version__.split('+')[0]}` (the package index's Linux wheels are CUDA builds), "
                    "elsewhere the command at https://pytorch.org/get-started/locally/"
                )
                problem = "a CPU-only build"
            else:
                how, problem = "or check the GPU's driver", f"built for CUDA {torch.version.cuda} but sees no GPU"
            raise DeviceError(
                f"`{name}` is {device!r} but this PyTorch ({torch.__version__}) is {problem}. Use `{name}` cpu "
                f"(or auto), {how}."
            )
        index = int(device.partition(":")[2] or 0)
        if index >= torch.cuda.device_count():
            raise DeviceError(
                f"`{name}` is {device!r} but this machine has {torch.cuda.device_count()} CUDA device(s): "
                f"use cuda:0 to cuda:{torch.cuda.device_count() - 1}."
            )
    if device == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise DeviceError(f"`{name}` is 'mps' but Apple's Metal backend is not available here; use cpu or auto.")
    return device
