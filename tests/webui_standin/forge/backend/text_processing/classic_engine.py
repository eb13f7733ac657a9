"""Stand-in for ``backend/text_processing/classic_engine.py``: Forge's CLIP prompt encoder.

Differences from the WebUI's ``FrozenCLIPEmbedderWithCustomWords`` that matter to callers:

- a plain object (not a ``torch.nn.Module``) built per text encoder: ``text_encoder`` (an
  ``IntegratedCLIP``; ``text_encoder.transformer`` is the transformers CLIPTextModel), ``tokenizer``,
  ``embeddings`` (its own ``EmbeddingDatabase``), ``embedding_key`` ("clip_l" / "clip_g"),
  ``clip_skip`` / ``minimal_clip_skip``, ``final_layer_norm``, ``return_pooled``, ``text_projection``,
  ``id_start`` / ``id_end`` / ``id_pad`` (the tokenizer's bos / eos / pad), ``chunk_length`` 75, ``emphasis``;
- ``encode_with_transformers``: ``hidden_states[-max(clip_skip, minimal_clip_skip)]``, then the final
  layer norm if ``final_layer_norm``; with ``return_pooled`` the CLIPTextModel's ``pooler_output``
  (final-normed EOS row), through ``transformer.text_projection`` only if ``text_projection`` AND
  ``embedding_key != "clip_l"``, attached to the tensor as ``z.pooled``;
- the comma backtrack is always 20 (Forge ignores ``opts.comma_padding_backtrack``);
- ``__call__`` re-reads ``opts.emphasis`` (``tokenize_line`` uses the engine's current ``emphasis``) and
  writes "TI" (names of the embeddings used, appended across calls) and "Emphasis" (when not "Original"
  and a text has ``(`` or ``[``) to the MODULE global ``last_extra_generation_params`` -- processing
  copies it into ``sd_model.extra_generation_params`` after each cond computation and resets it;
- the token embedding of ``text_encoder.transformer.text_model.embeddings`` is replaced by
  ``CLIPEmbeddingForTextualInversion`` when the engine is built."""

from __future__ import annotations

import math
from collections import namedtuple

import torch
from modules.shared import opts

from backend import memory_management
from backend.text_processing import emphasis, parsing
from backend.text_processing.textual_inversion import EmbeddingDatabase

PromptChunkFix = namedtuple("PromptChunkFix", ["offset", "embedding"])
last_extra_generation_params: dict = {}


class PromptChunk:
    def __init__(self):
        self.tokens = []
        self.multipliers = []
        self.fixes = []


class CLIPEmbeddingForTextualInversion(torch.nn.Module):
    """Wraps the token embedding: rows from ``offset + 1`` (after BOS) take the vectors of each fix of
    the chunk column in ``embeddings.fixes`` (read once, then cleared), truncated at the row's end."""

    def __init__(self, wrapped, embeddings, textual_inversion_key="clip_l"):
        super().__init__()
        self.wrapped = wrapped
        self.embeddings = embeddings
        self.textual_inversion_key = textual_inversion_key
        self.weight = self.wrapped.weight

    def forward(self, input_ids):
        batch_fixes = self.embeddings.fixes
        self.embeddings.fixes = None
        inputs_embeds = self.wrapped(input_ids)
        if not batch_fixes or max(len(f) for f in batch_fixes) == 0:
            return inputs_embeds
        rows = []
        for fixes, row in zip(batch_fixes, inputs_embeds):
            for offset, embedding in fixes:
                vec = embedding.vec
                vec = (vec[self.textual_inversion_key] if isinstance(vec, dict) else vec).to(inputs_embeds)
                count = min(row.shape[0] - offset - 1, vec.shape[0])
                row = torch.cat([row[: offset + 1], vec[:count], row[offset + 1 + count :]]).to(inputs_embeds.dtype)
            rows.append(row)
        return torch.stack(rows)


def _bracket_multipliers(vocab):
    """Forge computes (and never uses) a multiplier for every vocabulary entry with brackets."""
    mults = {}
    for text, ident in vocab.items():
        if not any(c in text for c in "()[]"):
            continue
        mult = 1.0
        for c in text:
            mult = mult / 1.1 if c in "[)" else mult * 1.1 if c in "](" else mult
        if mult != 1.0:
            mults[ident] = mult
    return mults


class ClassicTextProcessingEngine:
    def __init__(
        self,
        text_encoder,
        tokenizer,
        chunk_length=75,
        embedding_dir=None,
        embedding_key="clip_l",
        embedding_expected_shape=768,
        emphasis_name="Original",
        text_projection=False,
        minimal_clip_skip=1,
        clip_skip=1,
        return_pooled=False,
        final_layer_norm=True,
    ):
        super().__init__()
        self.embeddings = EmbeddingDatabase(tokenizer, embedding_expected_shape)
        if isinstance(embedding_dir, str):
            self.embeddings.add_embedding_dir(embedding_dir)
            self.embeddings.load_textual_inversion_embeddings()
        self.embedding_key = embedding_key
        self.text_encoder = text_encoder
        self.tokenizer = tokenizer
        self.emphasis = emphasis.get_current_option(opts.emphasis)()
        self.text_projection = text_projection
        self.minimal_clip_skip = minimal_clip_skip
        self.clip_skip = clip_skip
        self.return_pooled = return_pooled
        self.final_layer_norm = final_layer_norm
        self.chunk_length = chunk_length
        self.id_start = self.tokenizer.bos_token_id
        self.id_end = self.tokenizer.eos_token_id
        self.id_pad = self.tokenizer.pad_token_id
        model_embeddings = text_encoder.transformer.text_model.embeddings
        model_embeddings.token_embedding = CLIPEmbeddingForTextualInversion(
            model_embeddings.token_embedding, self.embeddings, textual_inversion_key=embedding_key
        )
        vocab = self.tokenizer.get_vocab()
        self.comma_token = vocab.get(",</w>", None)
        self.token_mults = _bracket_multipliers(vocab)

    def empty_chunk(self):
        chunk = PromptChunk()
        chunk.tokens = [self.id_start] + [self.id_end] * (self.chunk_length + 1)
        chunk.multipliers = [1.0] * (self.chunk_length + 2)
        return chunk

    def get_target_prompt_token_count(self, token_count):
        return math.ceil(max(token_count, 1) / self.chunk_length) * self.chunk_length

    def tokenize(self, texts):
        return self.tokenizer(texts, truncation=False, add_special_tokens=False)["input_ids"]

    def encode_with_transformers(self, tokens):
        device = memory_management.text_encoder_device()
        text_model = self.text_encoder.transformer.text_model
        text_model.embeddings.position_embedding.to(dtype=torch.float32)
        text_model.embeddings.token_embedding.to(dtype=torch.float32)
        outputs = self.text_encoder.transformer(tokens.to(device), output_hidden_states=True)
        z = outputs.hidden_states[-max(self.clip_skip, self.minimal_clip_skip)]
        if self.final_layer_norm:
            z = text_model.final_layer_norm(z)
        if self.return_pooled:
            pooled = outputs.pooler_output
            if self.text_projection and self.embedding_key != "clip_l":
                pooled = self.text_encoder.transformer.text_projection(pooled)
            z.pooled = pooled
        return z

    def tokenize_line(self, line):
        """``(chunks, token_count)``: 75 tokens + BOS/EOS per chunk, padded with ``id_end``; BREAK closes
        a chunk; a full chunk moves the text after its last comma (at most 20 tokens back) on."""
        parsed = parsing.parse_prompt_attention(line, self.emphasis.name)
        tokenized = self.tokenize([text for text, _ in parsed])
        chunks = []
        state = {"chunk": PromptChunk(), "count": 0, "comma": -1}
        backtrack = 20

        def next_chunk(is_last=False):
            chunk = state["chunk"]
            state["count"] += len(chunk.tokens) if is_last else self.chunk_length
            missing = self.chunk_length - len(chunk.tokens)
            if missing > 0:
                chunk.tokens += [self.id_end] * missing
                chunk.multipliers += [1.0] * missing
            chunk.tokens = [self.id_start, *chunk.tokens, self.id_end]
            chunk.multipliers = [1.0, *chunk.multipliers, 1.0]
            state["comma"] = -1
            chunks.append(chunk)
            state["chunk"] = PromptChunk()

        for tokens, (text, weight) in zip(tokenized, parsed):
            if text == "BREAK" and weight == -1:
                next_chunk()
                continue
            position = 0
            while position < len(tokens):
                token = tokens[position]
                chunk = state["chunk"]
                if token == self.comma_token:
                    state["comma"] = len(chunk.tokens)
                elif (
                    len(chunk.tokens) == self.chunk_length
                    and state["comma"] != -1
                    and len(chunk.tokens) - state["comma"] <= backtrack
                ):
                    cut = state["comma"] + 1
                    moved_tokens, moved_mults = chunk.tokens[cut:], chunk.multipliers[cut:]
                    chunk.tokens, chunk.multipliers = chunk.tokens[:cut], chunk.multipliers[:cut]
                    next_chunk()
                    state["chunk"].tokens, state["chunk"].multipliers = moved_tokens, moved_mults
                if len(state["chunk"].tokens) == self.chunk_length:
                    next_chunk()
                embedding, length = self.embeddings.find_embedding_at_position(tokens, position)
                if embedding is None:
                    state["chunk"].tokens.append(token)
                    state["chunk"].multipliers.append(weight)
                    position += 1
                    continue
                vectors = int(embedding.vectors)
                if len(state["chunk"].tokens) + vectors > self.chunk_length:
                    next_chunk()
                state["chunk"].fixes.append(PromptChunkFix(len(state["chunk"].tokens), embedding))
                state["chunk"].tokens += [0] * vectors
                state["chunk"].multipliers += [weight] * vectors
                position += length

        if state["chunk"].tokens or not chunks:
            next_chunk(is_last=True)
        return chunks, state["count"]

    def process_texts(self, texts):
        token_count = 0
        seen: dict = {}
        batch_chunks = []
        for line in texts:
            if line not in seen:
                seen[line], count = self.tokenize_line(line)
                token_count = max(token_count, count)
            batch_chunks.append(seen[line])
        return batch_chunks, token_count

    def __call__(self, texts):
        global last_extra_generation_params
        self.emphasis = emphasis.get_current_option(opts.emphasis)()
        batch_chunks, _ = self.process_texts(texts)
        used_embeddings = {}
        zs = []
        for index in range(max(len(chunks) for chunks in batch_chunks)):
            column = [chunks[index] if index < len(chunks) else self.empty_chunk() for chunks in batch_chunks]
            self.embeddings.fixes = [chunk.fixes for chunk in column]
            for fixes in self.embeddings.fixes:
                for _offset, embedding in fixes:
                    used_embeddings[embedding.name] = embedding
            zs.append(self.process_tokens([c.tokens for c in column], [c.multipliers for c in column]))

        if used_embeddings:
            names = ", ".join(name.replace(":", "").replace(",", "") for name in used_embeddings)
            if "TI" in last_extra_generation_params:
                last_extra_generation_params["TI"] += ", " + names
            else:
                last_extra_generation_params["TI"] = names
        if any(x for x in texts if "(" in x or "[" in x) and self.emphasis.name != "Original":
            last_extra_generation_params["Emphasis"] = self.emphasis.name

        if self.return_pooled:
            return torch.hstack(zs), zs[0].pooled
        return torch.hstack(zs)

    def process_tokens(self, remade_batch_tokens, batch_multipliers):
        """One chunk column -> z (B, 77, width) after emphasis; ``z.pooled`` kept when returned pooled.
        Where ``id_pad`` differs from ``id_end`` (CLIP-G: 0), everything after the first EOS is ``id_pad``."""
        tokens = torch.asarray(remade_batch_tokens)
        if self.id_end != self.id_pad:
            for row, ids in enumerate(remade_batch_tokens):
                tokens[row, ids.index(self.id_end) + 1 :] = self.id_pad
        z = self.encode_with_transformers(tokens)
        pooled = getattr(z, "pooled", None)
        self.emphasis.tokens = remade_batch_tokens
        self.emphasis.multipliers = torch.asarray(batch_multipliers).to(z)
        self.emphasis.z = z
        self.emphasis.after_transformers()
        z = self.emphasis.z
        if pooled is not None:
            z.pooled = pooled
        return z
