"""Stand-in for ``backend/patcher/vae.py``: only ``latent_channels`` (4: SD1/SDXL, 16: SD3/Flux)."""

from __future__ import annotations


class VAE:
    def __init__(self, model=None, latent_channels=4):
        self.first_stage_model = model
        self.latent_channels = latent_channels
