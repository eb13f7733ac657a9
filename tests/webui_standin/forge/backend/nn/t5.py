"""Stand-in for ``backend/nn/t5.py``: ``IntegratedT5.transformer`` is a ``T5`` module whose forward
takes ``input_ids`` and returns the encoder's last hidden state ``(B, L, d_model)`` (no attention mask:
padding is attended to, as in Forge). Here ``T5`` wraps a transformers ``T5EncoderModel``: ``shared``
(the token embedding, read by ``forward``) and ``encoder`` (``block``, ``final_layer_norm``) are its own."""

from __future__ import annotations

import torch


class T5(torch.nn.Module):
    def __init__(self, hf_encoder_model):
        super().__init__()
        self.config = hf_encoder_model.config
        self.num_layers = hf_encoder_model.config.num_layers
        self.shared = hf_encoder_model.shared
        self.encoder = hf_encoder_model.encoder

    def forward(self, input_ids, *args, **kwargs):
        x = torch.nan_to_num(self.shared(input_ids))
        return self.encoder(inputs_embeds=x).last_hidden_state


class IntegratedT5(torch.nn.Module):
    def __init__(self, hf_encoder_model):
        super().__init__()
        self.transformer = T5(hf_encoder_model)
        self.logit_scale = torch.nn.Parameter(torch.tensor(4.6055))
