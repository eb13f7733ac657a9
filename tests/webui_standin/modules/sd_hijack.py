"""Stand-in for ``modules/sd_hijack.py``: the ``model_hijack`` object with its textual-inversion
``embedding_db``, and ``EmbeddingsWithFixes``, the wrapper the hijack puts around the token embedding
of every text encoder (SD1/SDXL CLIP-L: ``transformer.text_model.embeddings.token_embedding``;
OpenCLIP, SD2 and SDXL's G: ``model.token_embedding``). The stand-in models wrap theirs when built."""

from __future__ import annotations

import torch

from modules import devices


class EmbeddingsWithFixes(torch.nn.Module):
    """``wrapped`` is the original ``nn.Embedding``; ``embeddings`` the hijack whose ``fixes`` (one
    list of ``(offset, embedding)`` per batch row, set per chunk column by the prompt encoder) are
    read and cleared on every call. Each embedding's vectors replace the rows from ``offset + 1`` on
    (after BOS), cut off at the end of the row; a dict ``vec`` gives ``vec[textual_inversion_key]``."""

    def __init__(self, wrapped, embeddings, textual_inversion_key="clip_l"):
        super().__init__()
        self.wrapped = wrapped
        self.embeddings = embeddings
        self.textual_inversion_key = textual_inversion_key

    def forward(self, input_ids):
        batch_fixes = self.embeddings.fixes
        self.embeddings.fixes = None

        inputs_embeds = self.wrapped(input_ids)
        if not batch_fixes or not any(len(fixes) for fixes in batch_fixes):
            return inputs_embeds

        rows = []
        for fixes, row in zip(batch_fixes, inputs_embeds):
            for offset, embedding in fixes:
                vec = embedding.vec
                if isinstance(vec, dict):
                    vec = vec[self.textual_inversion_key]
                vec = devices.cond_cast_unet(vec)
                start = offset + 1
                count = min(row.shape[0] - start, vec.shape[0])
                row = torch.cat([row[:start], vec[:count].to(row.device), row[start + count :]]).to(inputs_embeds.dtype)
            rows.append(row)
        return torch.stack(rows)


class StableDiffusionModelHijack:
    def __init__(self):
        from modules.textual_inversion.textual_inversion import EmbeddingDatabase

        self.fixes = None
        self.layers = None
        self.circular_enabled = False
        self.clip = None
        self.optimization_method = None
        self.embedding_db = EmbeddingDatabase()
        self.extra_generation_params = {}
        self.comments = []

    def hijack(self, m):
        """Point ``clip`` at the model's text encoder (``cond_stage_model``); the stand-in models
        come with their encoders already wrapped."""
        self.clip = getattr(m, "cond_stage_model", None)

    def clear_comments(self):
        self.comments = []
        self.extra_generation_params = {}

    def apply_circular(self, enable):
        self.circular_enabled = enable

    def get_prompt_lengths(self, text):
        if self.clip is None:
            return "-", "-"
        _, token_count = self.clip.process_texts([text])
        return token_count, self.clip.get_target_prompt_token_count(token_count)


model_hijack = StableDiffusionModelHijack()
