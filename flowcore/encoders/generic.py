"""`GenericEncoder`: any transformers text encoder (T5, BERT, a causal LLM) in its own chunk layout.

Bidirectional encoders (T5, BERT) let every token see the whole chunk, so an item can be pulled by items on
either side; causal ones (GPT-2, Llama, SmolLM, Qwen, Gemma) only by items before it. Items are encoded alone
from the token ids they have in the prompt, so every tokenizer family maps one to one: a byte-level BPE's
leading-space token (`" bats"`, not `"bats"`), a SentencePiece word-start marker, WordPiece continuations.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence

import torch
import transformers
from packaging.version import Version

from flowcore.encoders.base import Encoding, IsolatedItem, ItemRequest, weights_fingerprint
from flowcore.encoders.layout import ChunkFormat, PromptLayout, layout_prompt
from flowcore.errors import OptionsError

# transformers < 4.45 (the AUTOMATIC1111 WebUI ships 4.30) cuts the rotary tables of Llama-style models to the
# sequence's length before indexing them with the position ids: every position id must be below the length.
POSITIONS_WITHIN_LENGTH = Version(transformers.__version__).release < (4, 45)


def _first_id(tokenizer, *names: str) -> int | None:
    for name in names:
        value = getattr(tokenizer, name, None)
        if value is not None:
            return value
    return None


class GenericEncoder:
    """Wrap a transformers tokenizer and model; rows come from `layer` of the hidden states (default: the last).

    Each chunk is `[start token] tokens [end token] padding`, `chunk_length` rows in all:
    - the start token is the tokenizer's BOS or CLS where it has one (T5 has none: chunks start with the
      first token);
    - the end token is its EOS or SEP, unless `end_token=False` (causal LLMs used as text encoders end a
      prompt with no special token);
    - padding is masked out of attention unless `attend_padding=True` (Flux and SD3 run T5 without a mask).
    A token's row within its chunk is its position id, and an item encoded alone "at its own positions" takes
    exactly those position ids (start token at 0), where the model takes position ids at all (T5 does not).

    For causal LLMs, `GenericEncoder.for_causal_lm` takes an `AutoModelForCausalLM` (or its base model).
    """

    def __init__(
        self,
        tokenizer,
        model,
        causal: bool,
        layer: int = -1,
        chunk_length: int = 77,
        end_token: bool = True,
        attend_padding: bool = False,
    ):
        self.tokenizer = tokenizer
        self.model = model
        self.causal = causal
        self.layer = layer
        self.attend_padding = attend_padding
        self.start_id = _first_id(tokenizer, "bos_token_id", "cls_token_id")
        self.end_id = _first_id(tokenizer, "eos_token_id", "sep_token_id") if end_token else None
        if end_token and self.end_id is None:
            raise OptionsError(
                "`tokenizer` has neither an EOS nor a SEP token to end chunks with; pass `end_token=False`."
            )
        self.pad_id = _first_id(tokenizer, "pad_token_id", "eos_token_id", "sep_token_id", "unk_token_id") or 0
        leading = 0 if self.start_id is None else 1
        trailing = 0 if self.end_id is None else 1
        max_positions = getattr(model.config, "max_position_embeddings", None)
        self.max_positions = max_positions or chunk_length
        if chunk_length - leading - trailing < 1 or (max_positions and chunk_length > max_positions):
            raise OptionsError(
                f"`chunk_length` must leave room for a token and fit the model's {max_positions} positions "
                f"but is {chunk_length}."
            )
        self.format = ChunkFormat(tokens=chunk_length - leading - trailing, leading=leading, rows=chunk_length)
        # Encoder-decoder models (T5ForConditionalGeneration) are run through their encoder half only.
        encoder = model.get_encoder() if getattr(model.config, "is_encoder_decoder", False) else model
        self.encoder_module = encoder
        # Models with absolute or rotary positions (BERT, GPT-2, Llama) take position ids; T5's relative
        # attention bias needs none.
        self.supports_positions = "position_ids" in inspect.signature(encoder.forward).parameters

    @classmethod
    def for_causal_lm(cls, tokenizer, model, layer: int = -1, chunk_length: int = 256) -> GenericEncoder:
        """A causal LLM as a text encoder, as LLM-conditioned text-to-image models use one: `model` is an
        `AutoModelForCausalLM` (its language-model head is not used) or its base model; rows are the hidden
        states at `layer` (-1: the last, after the final norm); chunks are `[BOS] tokens padding` of
        `chunk_length` rows, padding masked, no end token."""
        base = getattr(model, "base_model", model)
        return cls(tokenizer, base, causal=True, layer=layer, chunk_length=chunk_length, end_token=False)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def identity(self) -> str:
        settings = (type(self).__name__, self.layer, self.format, self.causal, self.attend_padding, self.end_id)
        return weights_fingerprint(self.encoder_module, settings=settings)

    def layout(self, text: str, segments: list[list[tuple[int, int]]] | None = None) -> PromptLayout:
        """`text` in chunks; `segments`: the spans to tokenize one by one (see `layout_prompt`)."""
        return layout_prompt(self.tokenizer, text, self.format, segments)

    def frame(self, ids: Sequence[int], start: int) -> tuple[list[int], list[int]]:
        """`[start token] ids [end token]` with their position ids: the start token at 0, `ids` from `start`."""
        head = [self.start_id] if self.start_id is not None else []
        tail = [self.end_id] if self.end_id is not None else []
        positions = list(range(len(head))) + list(range(start, start + len(ids) + len(tail)))
        return [*head, *ids, *tail], positions

    @torch.no_grad()
    def _run(self, sequences: list[tuple[list[int], list[int]]], length: int) -> torch.Tensor:
        """Encode `(ids, positions)` sequences, right-padded to `length`: `(batch, length, dim)`."""
        ids = torch.full((len(sequences), length), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(sequences), length), dtype=torch.long)
        positions = torch.zeros((len(sequences), length), dtype=torch.long)
        for index, (sequence, places) in enumerate(sequences):
            ids[index, : len(sequence)] = torch.tensor(sequence)
            mask[index, : len(sequence) if not self.attend_padding else length] = 1
            after = places[-1] + 1 if places else 0
            last = (min(self.max_positions, length) if POSITIONS_WITHIN_LENGTH else self.max_positions) - 1
            padding = [min(p, last) for p in range(after, after + length - len(places))]
            positions[index] = torch.tensor([*places, *padding])  # padding rows are masked (or, unmasked, T5's)
        inputs = {"input_ids": ids.to(self.device), "attention_mask": mask.to(self.device)}
        if self.supports_positions:
            inputs["position_ids"] = positions.to(self.device)
        out = self.encoder_module(**inputs, output_hidden_states=True)
        return out.hidden_states[self.layer]

    def encode(self, layout: PromptLayout) -> Encoding:
        sequences = [self.frame([t.id for t in chunk], layout.leading) for chunk in layout.chunks]
        rows = self._run(sequences, layout.format.rows)  # (chunks, rows, dim)
        return Encoding(rows=rows.reshape(-1, rows.shape[-1]))

    def empty(self) -> Encoding:
        return self.encode(self.layout(""))

    def encode_isolated(self, requests: Sequence[ItemRequest]) -> list[IsolatedItem]:
        if not requests:
            return []
        leading = self.format.leading
        token_ids = [list(request.token_ids)[: self.format.tokens] for request in requests]
        starts = [request.start if self.supports_positions else leading for request in requests]
        sequences = [self.frame(ids, start) for ids, start in zip(token_ids, starts)]
        length = max(len(ids) for ids, _ in sequences)
        if self.supports_positions and POSITIONS_WITHIN_LENGTH and not self.attend_padding:  # masked padding
            length = max(length, *(places[-1] + 1 for _, places in sequences))
        states = self._run(sequences, length)
        return [
            IsolatedItem(request.text, ids, states[index, leading : leading + len(ids)])
            for index, (request, ids) in enumerate(zip(requests, token_ids))
        ]

    def rederive(self, layout: PromptLayout, replaced) -> Encoding:
        raise NotImplementedError("GenericEncoder cannot re-derive end-token/padding rows; they are left as encoded.")
