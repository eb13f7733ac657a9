"""Stand-in for ``backend/text_processing/t5_engine.py``: Forge's T5 prompt encoder (SD3.5, Flux).

``text_encoder`` is the ``T5`` module itself (``IntegratedT5.transformer``): ``text_encoder(input_ids=ids)``
-> ``(B, L, d_model)``. ``tokenize_line``: no start token and no 75-token limit; a chunk is the line's
tokens (BREAK closes one), then EOS (``id_end`` 1), then ``id_pad`` (0) up to ``min_length`` (256) --
longer chunks are not cut. ``token_count`` sums the chunk lengths with their EOS.

``__call__(texts)`` works per line (identical lines computed once): every chunk of a line is padded to
the line's longest chunk and encoded ALONE (batch of one) with the emphasis applied to that chunk;
the result is ``torch.stack`` of every chunk of every line -- so a line with k chunks gives k batch
entries, NOT k * 256 rows (Forge's behaviour: with BREAK the batch no longer matches the prompts;
SD3's ``cat`` with the CLIP part then fails, and Flux's per-prompt split picks rows by index)."""

from __future__ import annotations

from collections import namedtuple

import torch
from modules.shared import opts

from backend import memory_management
from backend.text_processing import emphasis, parsing
from backend.text_processing.classic_engine import _bracket_multipliers

PromptChunkFix = namedtuple("PromptChunkFix", ["offset", "embedding"])


class PromptChunk:
    def __init__(self):
        self.tokens = []
        self.multipliers = []


class T5TextProcessingEngine:
    def __init__(self, text_encoder, tokenizer, emphasis_name="Original", min_length=256):
        super().__init__()
        self.text_encoder = text_encoder.transformer
        self.tokenizer = tokenizer
        self.emphasis = emphasis.get_current_option(opts.emphasis)()
        self.min_length = min_length
        self.id_end = 1
        self.id_pad = 0
        vocab = self.tokenizer.get_vocab()
        self.comma_token = vocab.get(",</w>", None)
        self.token_mults = _bracket_multipliers(vocab)

    def tokenize(self, texts):
        return self.tokenizer(texts, truncation=False, add_special_tokens=False)["input_ids"]

    def encode_with_transformers(self, tokens):
        device = memory_management.text_encoder_device()
        self.text_encoder.shared.to(device=device, dtype=torch.float32)
        return self.text_encoder(input_ids=tokens.to(device))

    def tokenize_line(self, line):
        parsed = parsing.parse_prompt_attention(line, self.emphasis.name)
        tokenized = self.tokenize([text for text, _ in parsed])
        chunks = []
        state = {"chunk": PromptChunk(), "count": 0}

        def next_chunk():
            chunk = state["chunk"]
            chunk.tokens = [*chunk.tokens, self.id_end]
            chunk.multipliers = [*chunk.multipliers, 1.0]
            state["count"] += len(chunk.tokens)
            missing = self.min_length - len(chunk.tokens)
            if missing > 0:
                chunk.tokens += [self.id_pad] * missing
                chunk.multipliers += [1.0] * missing
            chunks.append(chunk)
            state["chunk"] = PromptChunk()

        for tokens, (text, weight) in zip(tokenized, parsed):
            if text == "BREAK" and weight == -1:
                next_chunk()
                continue
            state["chunk"].tokens += list(tokens)
            state["chunk"].multipliers += [weight] * len(tokens)

        if state["chunk"].tokens or not chunks:
            next_chunk()
        return chunks, state["count"]

    def __call__(self, texts):
        self.emphasis = emphasis.get_current_option(opts.emphasis)()
        zs = []
        done: dict = {}
        for line in texts:
            if line not in done:
                chunks, _ = self.tokenize_line(line)
                longest = max(len(chunk.tokens) for chunk in chunks)
                values = []
                for chunk in chunks:
                    missing = longest - len(chunk.tokens)
                    if missing > 0:
                        chunk.tokens += [self.id_pad] * missing
                        chunk.multipliers += [1.0] * missing
                    values.append(self.process_tokens([chunk.tokens], [chunk.multipliers])[0])
                done[line] = values
            zs.extend(done[line])
        return torch.stack(zs)

    def process_tokens(self, batch_tokens, batch_multipliers):
        z = self.encode_with_transformers(torch.asarray(batch_tokens))
        self.emphasis.tokens = batch_tokens
        self.emphasis.multipliers = torch.asarray(batch_multipliers).to(z)
        self.emphasis.z = z
        self.emphasis.after_transformers()
        return self.emphasis.z
