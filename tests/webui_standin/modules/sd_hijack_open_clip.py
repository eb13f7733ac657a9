"""Stand-in for ``modules/sd_hijack_open_clip.py``: the WebUI wrappers of OpenCLIP text encoders.

SD2's ``FrozenOpenCLIPEmbedderWithCustomWords`` (output of the wrapped ldm encoder as is: its layer,
penultimate + ``ln_final``; clip skip ignored) and SDXL's ``FrozenOpenCLIPEmbedder2WithCustomWords``
(``wrapped.layer``, penultimate without ``ln_final``, plus the pooled output). Both: start/end ids
49406/49407, padding id 0 after the first end id, comma token 267.

``tokenizer`` mimics ``open_clip.tokenizer._tokenizer`` (``encoder`` dict, ``encode(text)`` without
start/end ids) on top of the stand-in's HF CLIP BPE tokenizer (same vocabulary; the real one cleans
text with ftfy/html unescape, which only matters for unusual characters)."""

from __future__ import annotations

import torch

from modules import devices, sd_hijack_clip
from modules.shared import opts


class _SimpleTokenizer:
    def __init__(self):
        self._hf = None
        self._encoder = None

    def bind(self, hf_tokenizer):
        if hf_tokenizer is not None and hf_tokenizer is not self._hf:
            self._hf = hf_tokenizer
            self._encoder = None

    @property
    def encoder(self) -> dict:
        """BPE entry -> id; the special tokens are named ``<start_of_text>``/``<end_of_text>`` as in open_clip."""
        if self._encoder is None:
            renamed = {"<|startoftext|>": "<start_of_text>", "<|endoftext|>": "<end_of_text>"}
            self._encoder = {renamed.get(k, k): v for k, v in self._require().get_vocab().items()}
        return self._encoder

    @property
    def decoder(self) -> dict:
        return {v: k for k, v in self.encoder.items()}

    def encode(self, text):
        return list(self._require()(text, add_special_tokens=False)["input_ids"])

    def _require(self):
        if self._hf is None:
            raise RuntimeError("no OpenCLIP model has been built yet (the stand-in tokenizer is bound then)")
        return self._hf


tokenizer = _SimpleTokenizer()


class FrozenOpenCLIPEmbedderWithCustomWords(sd_hijack_clip.FrozenCLIPEmbedderWithCustomWordsBase):
    def __init__(self, wrapped, hijack):
        super().__init__(wrapped, hijack)
        tokenizer.bind(getattr(wrapped, "tokenizer", None))
        self.comma_token = tokenizer.encoder[",</w>"]
        self.id_start = tokenizer.encoder["<start_of_text>"]
        self.id_end = tokenizer.encoder["<end_of_text>"]
        self.id_pad = 0

    def tokenize(self, texts):
        assert not opts.use_old_emphasis_implementation, "Old emphasis implementation not supported for Open Clip"
        return [tokenizer.encode(text) for text in texts]

    def encode_with_transformers(self, tokens):
        return self.wrapped.encode_with_transformer(tokens)

    def encode_embedding_init_text(self, init_text, nvpt):
        ids = torch.asarray([tokenizer.encode(init_text)], device=devices.device, dtype=torch.int)
        return self.wrapped.model.token_embedding.wrapped(ids).squeeze(0)


class FrozenOpenCLIPEmbedder2WithCustomWords(FrozenOpenCLIPEmbedderWithCustomWords):
    """Returns ``(z, pooled)`` from ``encode_with_transformers`` (the WebUI sets ``z.pooled``
    instead; ``process_tokens`` handles both)."""

    def encode_with_transformers(self, tokens):
        d = self.wrapped.encode_with_transformer(tokens)
        return d[self.wrapped.layer], d.get("pooled")
