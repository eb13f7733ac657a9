"""Stand-in for ``backend/nn/base.py``: name -> module / object containers."""

from __future__ import annotations

import torch


class ModuleDict(torch.nn.Module):
    """Each entry is a registered submodule (``joint.clip_l``), so parameter names start with its key."""

    def __init__(self, module_dict):
        super().__init__()
        for name, module in module_dict.items():
            self.add_module(name, module)


class ObjectDict:
    """Plain attributes: ``tokenizers.clip_l``."""

    def __init__(self, module_dict):
        for name, value in module_dict.items():
            setattr(self, name, value)
