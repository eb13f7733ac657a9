"""`GenericEncoder`: any transformers text encoder (T5, BERT, a causal decoder) in the same chunk layout.

Bidirectional encoders (T5, BERT) let every token see the whole chunk, so an item can be pulled by items
on either side; the isolated item is encoded as its own sequence with the tokenizer's special tokens.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from flowcore.encoders.base import Encoding, IsolatedItem
from flowcore.layout import ROWS_PER_CHUNK, TOKENS_PER_CHUNK, PromptLayout, layout_prompt


class GenericEncoder:
    """Wrap a transformers tokenizer and model; rows come from `layer` of the hidden states (default: last).

    Chunks are `[start token] tokens [end token] padding` (77 rows), using the tokenizer's BOS or CLS as
    the start token where it has one (T5 has none: its chunks start with the first token) and EOS or SEP
    as the end token. Padding rows are masked out of attention.
    """

    def __init__(self, tokenizer, model, causal: bool, layer: int = -1):
        import inspect

        self.tokenizer = tokenizer
        self.model = model
        self.causal = causal
        self.layer = layer
        self.start_id = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.cls_token_id
        self.end_id = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else tokenizer.sep_token_id
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else self.end_id
        if self.end_id is None:
            raise ValueError("`tokenizer` has neither an EOS nor a SEP token; GenericEncoder needs one to end chunks.")
        self.leading = 0 if self.start_id is None else 1
        # Encoder-decoder models (T5ForConditionalGeneration) are run through their encoder half only.
        encoder = model.get_encoder() if getattr(model.config, "is_encoder_decoder", False) else model
        self.encoder_module = encoder
        # Models with absolute positions (BERT) take position ids; relative ones (T5) need none.
        self.supports_positions = "position_ids" in inspect.signature(encoder.forward).parameters

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def layout(self, text: str) -> PromptLayout:
        return layout_prompt(self.tokenizer, text, leading=self.leading)

    def _frame(self, ids: list[int]) -> list[int]:
        return ([self.start_id] if self.leading else []) + ids + [self.end_id]

    @torch.no_grad()
    def _run(self, sequences: list[list[int]], length: int, starts: Sequence[int] | None = None) -> torch.Tensor:
        """Encode framed sequences padded to `length`: `(batch, length, dim)`.

        With `starts`, the tokens after the start token of sequence i take positions starts[i], ...
        """
        ids = torch.full((len(sequences), length), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(sequences), length), dtype=torch.long)
        positions = torch.arange(length).repeat(len(sequences), 1)
        for index, sequence in enumerate(sequences):
            ids[index, : len(sequence)] = torch.tensor(sequence)
            mask[index, : len(sequence)] = 1
            if starts is not None:
                first = starts[index] - self.leading
                positions[index, self.leading :] = torch.arange(first, first + length - self.leading)
        inputs = {"input_ids": ids.to(self.device), "attention_mask": mask.to(self.device)}
        if starts is not None and self.supports_positions:
            inputs["position_ids"] = positions.clamp(max=ROWS_PER_CHUNK - 1).to(self.device)
        out = self.encoder_module(**inputs, output_hidden_states=True)
        return out.hidden_states[self.layer]

    def encode(self, layout: PromptLayout) -> Encoding:
        sequences = [self._frame([t.id for t in chunk]) for chunk in layout.chunks]
        rows = self._run(sequences, ROWS_PER_CHUNK)
        return Encoding(rows=rows.reshape(-1, rows.shape[-1]))

    def empty(self) -> Encoding:
        return self.encode(self.layout(""))

    def encode_isolated(self, texts: Sequence[str], starts: Sequence[int] | None = None) -> list[IsolatedItem]:
        token_ids = [self.tokenizer(t, add_special_tokens=False)["input_ids"][:TOKENS_PER_CHUNK] for t in texts]
        if not texts:
            return []
        sequences = [self._frame(ids) for ids in token_ids]
        states = self._run(sequences, max(len(s) for s in sequences), starts)
        return [
            IsolatedItem(text, ids, states[index, self.leading : self.leading + len(ids)])
            for index, (text, ids) in enumerate(zip(texts, token_ids))
        ]

    def rederive(self, layout: PromptLayout, replaced) -> Encoding:
        raise NotImplementedError("GenericEncoder cannot re-derive EOS/padding rows; they are left as encoded.")
