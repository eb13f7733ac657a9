"""Stand-in for ``modules/sd_hijack_clip.py``: prompt -> 77-token chunks -> CLIP -> emphasis (the
OpenCLIP wrappers are in ``sd_hijack_open_clip.py``).

Chunking rules (``tokenize_line``) follow the WebUI: 75 tokens per chunk plus BOS and EOS,
``BREAK`` starts a new chunk, and when a chunk fills up the text after the last comma moves to the
next chunk if that comma is at most ``opts.comma_padding_backtrack`` tokens back."""

from __future__ import annotations

import math
from collections import namedtuple

import torch

from modules import devices, prompt_parser, sd_emphasis, sd_hijack
from modules.shared import opts


def _text_model(transformer):
    """``transformer.text_model`` (transformers 4.x, what the WebUI sees) or the model itself
    (transformers 5 dropped the ``text_model`` level)."""
    return getattr(transformer, "text_model", transformer)


class PromptChunk:
    """77 token ids (BOS, 75 prompt tokens or padding, EOS), one multiplier per token, and the
    textual-inversion fixes (``PromptChunkFix(offset, embedding)``: the embedding's vectors replace
    the token rows from ``offset + 1`` on, ``+ 1`` for BOS)."""

    def __init__(self):
        self.tokens = []
        self.multipliers = []
        self.fixes = []

    def __repr__(self):
        return f"PromptChunk(tokens=[{len(self.tokens)} ids], multipliers=..., fixes={self.fixes})"


PromptChunkFix = namedtuple("PromptChunkFix", ["offset", "embedding"])


class TextConditionalModel(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.hijack = sd_hijack.model_hijack
        self.chunk_length = 75
        self.is_trainable = False
        self.input_key = "txt"
        self.return_pooled = False
        self.comma_token = None
        self.id_start = None
        self.id_end = None
        self.id_pad = None

    def empty_chunk(self):
        chunk = PromptChunk()
        chunk.tokens = [self.id_start] + [self.id_end] * (self.chunk_length + 1)
        chunk.multipliers = [1.0] * (self.chunk_length + 2)
        return chunk

    def get_target_prompt_token_count(self, token_count):
        return math.ceil(max(token_count, 1) / self.chunk_length) * self.chunk_length

    def tokenize(self, texts):
        raise NotImplementedError

    def encode_with_transformers(self, tokens):
        raise NotImplementedError

    def tokenize_line(self, line):
        """``(chunks, token_count)`` for one prompt line (no AND, no scheduling left in it)."""
        parsed = prompt_parser.parse_prompt_attention(line) if opts.emphasis != "None" else [[line, 1.0]]

        tokenized = self.tokenize([text for text, _ in parsed])

        chunks: list[PromptChunk] = []
        state = {"chunk": PromptChunk(), "count": 0, "comma": -1}

        def close_chunk(is_last=False):
            chunk = state["chunk"]
            # the last chunk counts its real tokens, earlier ones count as full
            state["count"] += len(chunk.tokens) if is_last else self.chunk_length
            missing = self.chunk_length - len(chunk.tokens)
            if missing > 0:
                chunk.tokens += [self.id_end] * missing
                chunk.multipliers += [1.0] * missing
            chunk.tokens = [self.id_start, *chunk.tokens, self.id_end]
            chunk.multipliers = [1.0, *chunk.multipliers, 1.0]
            chunks.append(chunk)
            state["chunk"] = PromptChunk()
            state["comma"] = -1

        for tokens, (text, weight) in zip(tokenized, parsed):
            if text == "BREAK" and weight == -1:
                close_chunk()
                continue

            position = 0
            while position < len(tokens):
                token = tokens[position]
                chunk = state["chunk"]
                if token == self.comma_token:
                    state["comma"] = len(chunk.tokens)
                elif (
                    opts.comma_padding_backtrack != 0
                    and len(chunk.tokens) == self.chunk_length
                    and state["comma"] != -1
                    and len(chunk.tokens) - state["comma"] <= opts.comma_padding_backtrack
                ):
                    # move everything after the last comma into the next chunk
                    cut = state["comma"] + 1
                    moved_tokens, moved_mults = chunk.tokens[cut:], chunk.multipliers[cut:]
                    chunk.tokens, chunk.multipliers = chunk.tokens[:cut], chunk.multipliers[:cut]
                    close_chunk()
                    state["chunk"].tokens = moved_tokens
                    state["chunk"].multipliers = moved_mults

                if len(state["chunk"].tokens) == self.chunk_length:
                    close_chunk()

                embedding, embedding_length = self.hijack.embedding_db.find_embedding_at_position(tokens, position)
                if embedding is None:
                    state["chunk"].tokens.append(token)
                    state["chunk"].multipliers.append(weight)
                    position += 1
                    continue

                vector_count = int(embedding.vectors)
                if len(state["chunk"].tokens) + vector_count > self.chunk_length:
                    close_chunk()
                state["chunk"].fixes.append(PromptChunkFix(len(state["chunk"].tokens), embedding))
                state["chunk"].tokens += [0] * vector_count
                state["chunk"].multipliers += [weight] * vector_count
                position += embedding_length

        if state["chunk"].tokens or not chunks:
            close_chunk(is_last=True)

        return chunks, state["count"]

    def process_texts(self, texts):
        """``tokenize_line`` for every text (cached per call); also the largest token count."""
        token_count = 0
        seen: dict = {}
        batch_chunks = []
        for line in texts:
            if line not in seen:
                seen[line], count = self.tokenize_line(line)
                token_count = max(token_count, count)
            batch_chunks.append(seen[line])
        return batch_chunks, token_count

    def forward(self, texts):
        """(B, 77 * chunks, C); with ``return_pooled`` a tuple with the first chunk's pooled output.

        Chunk k of every text is encoded in one batched call; texts with fewer chunks get empty
        chunks (BOS + EOS padding) so the batch lines up."""
        batch_chunks, _ = self.process_texts(texts)
        chunk_count = max(len(chunks) for chunks in batch_chunks)

        zs = []
        pooled_first = None
        used_embeddings = {}
        for index in range(chunk_count):
            column = [chunks[index] if index < len(chunks) else self.empty_chunk() for chunks in batch_chunks]
            # read (and cleared) by sd_hijack.EmbeddingsWithFixes inside the transformer
            self.hijack.fixes = [chunk.fixes for chunk in column]
            for fixes in self.hijack.fixes:
                for _offset, embedding in fixes:
                    used_embeddings[embedding.name] = embedding
            z, pooled = self.process_tokens([c.tokens for c in column], [c.multipliers for c in column])
            if index == 0:
                pooled_first = pooled
            zs.append(z)

        if opts.textual_inversion_add_hashes_to_infotext and used_embeddings:
            hashes = [
                f"{name.replace(':', '').replace(',', '')}: {embedding.shorthash}"
                for name, embedding in used_embeddings.items()
                if embedding.shorthash
            ]
            if hashes:
                if self.hijack.extra_generation_params.get("TI hashes"):
                    hashes.append(self.hijack.extra_generation_params.get("TI hashes"))
                self.hijack.extra_generation_params["TI hashes"] = ", ".join(hashes)

        if any(x for x in texts if "(" in x or "[" in x) and opts.emphasis != "Original":
            self.hijack.extra_generation_params["Emphasis"] = opts.emphasis

        if self.return_pooled:
            return torch.hstack(zs), pooled_first
        return torch.hstack(zs)

    def process_tokens(self, remade_batch_tokens, batch_multipliers):
        """Encode one chunk column; returns ``(z, pooled_or_None)`` (the WebUI attaches pooled to
        ``z`` as an attribute instead)."""
        tokens = torch.asarray(remade_batch_tokens).to(devices.device)

        # encoders whose padding id differs from EOS (open_clip: 0) see padding after the first EOS
        if self.id_end != self.id_pad:
            for row, ids in enumerate(remade_batch_tokens):
                first_end = ids.index(self.id_end)
                tokens[row, first_end + 1 :] = self.id_pad

        z = self.encode_with_transformers(tokens)
        pooled = None
        if isinstance(z, tuple):
            z, pooled = z

        emphasis = sd_emphasis.get_current_option(opts.emphasis)()
        emphasis.tokens = remade_batch_tokens
        emphasis.multipliers = torch.asarray(batch_multipliers).to(devices.device)
        emphasis.z = z
        emphasis.after_transformers()
        return emphasis.z, pooled


class FrozenCLIPEmbedderWithCustomWordsBase(TextConditionalModel):
    def __init__(self, wrapped, hijack):
        super().__init__()
        self.hijack = hijack
        self.wrapped = wrapped
        self.is_trainable = getattr(wrapped, "is_trainable", False)
        self.input_key = getattr(wrapped, "input_key", "txt")
        self.return_pooled = getattr(wrapped, "return_pooled", False)
        self.legacy_ucg_val = None


class FrozenCLIPEmbedderWithCustomWords(FrozenCLIPEmbedderWithCustomWordsBase):
    """SD1 (and SDXL's CLIP-L): HF CLIPTokenizer + CLIPTextModel; pad id = EOS id."""

    def __init__(self, wrapped, hijack):
        super().__init__(wrapped, hijack)
        self.tokenizer = wrapped.tokenizer
        vocab = self.tokenizer.get_vocab()
        self.comma_token = vocab.get(",</w>", None)
        self.id_start = self.tokenizer.bos_token_id
        self.id_end = self.tokenizer.eos_token_id
        self.id_pad = self.id_end

    def tokenize(self, texts):
        return self.tokenizer(texts, truncation=False, add_special_tokens=False)["input_ids"]

    def encode_with_transformers(self, tokens):
        skip = opts.CLIP_stop_at_last_layers
        outputs = self.wrapped.transformer(input_ids=tokens, output_hidden_states=skip > 1)
        if skip > 1:
            # clip skip k: hidden_states[-k] (k=2: penultimate layer), then the final layer norm
            return _text_model(self.wrapped.transformer).final_layer_norm(outputs.hidden_states[-skip])
        return outputs.last_hidden_state

    def encode_embedding_init_text(self, init_text, nvpt):
        """The token embeddings (before the transformer) of ``init_text``: ``(tokens, dim)``."""
        token_embedding = _text_model(self.wrapped.transformer).embeddings.token_embedding
        ids = self.wrapped.tokenizer(init_text, return_tensors="pt", add_special_tokens=False)["input_ids"]
        return token_embedding.wrapped(ids.to(token_embedding.wrapped.weight.device)).squeeze(0)


class FrozenCLIPEmbedderForSDXLWithCustomWords(FrozenCLIPEmbedderWithCustomWords):
    """SDXL's CLIP-L: ``wrapped.layer == "hidden"`` -> hidden_states[layer_idx] (penultimate), no
    final norm; with ``opts.sdxl_clip_l_skip`` hidden_states[-CLIP_stop_at_last_layers]."""

    def encode_with_transformers(self, tokens):
        outputs = self.wrapped.transformer(input_ids=tokens, output_hidden_states=self.wrapped.layer == "hidden")
        if opts.sdxl_clip_l_skip is True:
            return outputs.hidden_states[-opts.CLIP_stop_at_last_layers]
        if self.wrapped.layer == "last":
            return outputs.last_hidden_state
        return outputs.hidden_states[self.wrapped.layer_idx]
