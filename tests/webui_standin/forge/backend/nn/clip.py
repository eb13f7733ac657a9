"""Stand-in for ``backend/nn/clip.py``: ``IntegratedCLIP`` -- ``transformer`` is a transformers
``CLIPTextModel`` (Forge builds every CLIP, also SDXL's G and SD3's L/G, as ``CLIPTextModel``) with a
``text_projection`` Linear (hidden -> hidden, no bias) added when asked, and ``logit_scale``.

Forge runs transformers 4.x, where the modules sit under ``transformer.text_model``; transformers 5
dropped that level, so on 5.x ``transformer.text_model`` is an unregistered alias of the model itself
(Forge's attribute paths work, parameter names have no ``text_model.``)."""

from __future__ import annotations

import torch


def add_text_model_alias(transformer):
    if not hasattr(transformer, "text_model"):
        object.__setattr__(transformer, "text_model", transformer)
    return transformer


class IntegratedCLIP(torch.nn.Module):
    def __init__(self, cls, config, add_text_projection=False, transformer=None):
        """``transformer``: a ready model (the stand-in passes a seeded one) instead of ``cls(config)``."""
        super().__init__()
        self.transformer = add_text_model_alias(transformer if transformer is not None else cls(config))
        self.logit_scale = torch.nn.Parameter(torch.tensor(4.6055))
        if add_text_projection:
            width = config.hidden_size
            self.transformer.text_projection = torch.nn.Linear(width, width, bias=False)
