"""Stand-in for ``modules/sd_hijack.py``: the ``model_hijack`` object (no textual inversion)."""

from __future__ import annotations


class _EmbeddingDatabase:
    """No embeddings are loaded: ``find_embedding_at_position`` always answers ``(None, None)``."""

    def __init__(self):
        self.word_embeddings = {}

    def find_embedding_at_position(self, tokens, offset):
        return None, None


class StableDiffusionModelHijack:
    def __init__(self):
        self.fixes = None
        self.layers = None
        self.circular_enabled = False
        self.clip = None
        self.optimization_method = None
        self.embedding_db = _EmbeddingDatabase()
        self.extra_generation_params = {}
        self.comments = []

    def hijack(self, m):
        """Point ``clip`` at the model's text encoder (``cond_stage_model``)."""
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
