"""CLIP text encoder adapters: `ClipEncoder` (SD 1.x / 2.x) and `SdxlEncoder` (SDXL's two encoders).

Conventions (as the WebUI and diffusers use them):
- SD 1.x / 2.x: the last layer after the final layer norm; with clip skip k, hidden state `-k` (k=1 is the
  last layer) and then the final layer norm.
- SDXL: the penultimate layer of both encoders, no final norm, concatenated (768 + 1280); the pooled
  vector is the second encoder's projected EOS vector of the first chunk.

Both run CLIP's layers themselves rather than calling the model's `forward`, for two reasons: isolated
items are packed into one sequence with a block-causal mask and restarting positions (an item's rows in a
causal encoder depend only on BOS and its own tokens, so this is exact and costs one short forward call
for all items), and the EOS/padding rows can be re-derived with item states swapped in at every layer.
The layer loop works with transformers 4.30 (the WebUI's) and 5.x.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence

import torch

from flowcore.encoders.base import Encoding, IsolatedItem
from flowcore.layout import ROWS_PER_CHUNK, TOKENS_PER_CHUNK, PromptLayout, layout_prompt

PACK_LIMIT = 256  # tokens per packed sequence of isolated items; longer packs are split


def _causal_mask(seq_len: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """Additive causal mask of shape `(1, 1, seq, seq)`: 0 where attention is allowed, -inf-like elsewhere."""
    blocked = torch.ones(seq_len, seq_len, dtype=torch.bool, device=device).triu(1)
    return torch.zeros(seq_len, seq_len, dtype=dtype, device=device).masked_fill(blocked, torch.finfo(dtype).min)[
        None, None
    ]


def _block_causal_mask(lengths: Sequence[int], dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """Additive mask `(1, 1, seq, seq)` that is causal inside each block and blocks attention across blocks."""
    total = sum(lengths)
    block = torch.repeat_interleave(torch.arange(len(lengths), device=device), torch.tensor(lengths, device=device))
    allowed = (block[:, None] == block[None, :]) & torch.ones(total, total, dtype=torch.bool, device=device).tril()
    mask = torch.zeros(total, total, dtype=dtype, device=device).masked_fill(~allowed, torch.finfo(dtype).min)
    return mask[None, None]


class ClipTower:
    """One CLIP text transformer, run layer by layer.

    `layer` indexes the hidden states `(embeddings, layer 1, ..., layer N)` the way Python indexes a list
    (-1 is the last layer); `final_norm` says whether the final layer norm is applied to it.
    """

    def __init__(self, tokenizer, text_model, layer: int = -1, final_norm: bool = True):
        self.tokenizer = tokenizer
        self.model = text_model
        core = text_model
        while not hasattr(core, "embeddings") and hasattr(core, "text_model"):
            core = core.text_model  # transformers 4.x nests a CLIPTextTransformer; 5.x does not
        self.core = core
        self.layers = core.encoder.layers
        self.layer = layer
        self.final_norm = final_norm
        self.projection = getattr(text_model, "text_projection", None)
        self.bos_id = tokenizer.bos_token_id
        self.eos_id = tokenizer.eos_token_id
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else self.eos_id
        self._legacy_layer_call = "causal_attention_mask" in inspect.signature(self.layers[0].forward).parameters

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    def chunk_ids(self, layout: PromptLayout) -> torch.Tensor:
        """Token ids `(chunks, 77)`: BOS, up to 75 tokens, EOS, then padding."""
        rows = []
        for chunk in layout.chunks:
            ids = [self.bos_id, *[t.id for t in chunk], self.eos_id]
            rows.append(ids + [self.pad_id] * (ROWS_PER_CHUNK - len(ids)))
        return torch.tensor(rows, device=self.device)

    @torch.no_grad()
    def hidden_states(
        self,
        input_ids: torch.Tensor,
        position_ids: torch.Tensor,
        mask: torch.Tensor,
        replace: Sequence[tuple[int, int, torch.Tensor]] = (),
    ) -> list[torch.Tensor]:
        """Hidden states `(batch, seq, hidden)` after the embeddings and after each layer.

        `replace` holds `(batch index, position, states)` with `states` of shape `(layers + 1, hidden)`:
        after the embeddings and after every layer, that position's state is overwritten.
        """
        # CLIPTextEmbeddings.forward refuses sequences over 77 even with restarting positions, so the two
        # embeddings it sums are looked up directly (packed sequences may be longer than one chunk).
        embeddings = self.core.embeddings
        hidden = embeddings.token_embedding(input_ids) + embeddings.position_embedding(position_ids)
        states = [self._replace(hidden, 0, replace)]
        for depth, layer in enumerate(self.layers, start=1):
            if self._legacy_layer_call:
                out = layer(states[-1], mask, causal_attention_mask=None)
            else:
                out = layer(states[-1], mask)
            hidden = out[0] if isinstance(out, tuple) else out
            states.append(self._replace(hidden, depth, replace))
        return states

    @staticmethod
    def _replace(hidden: torch.Tensor, depth: int, replace: Sequence[tuple[int, int, torch.Tensor]]) -> torch.Tensor:
        if not replace:
            return hidden
        hidden = hidden.clone()
        for batch, position, states in replace:
            hidden[batch, position] = states[depth].to(hidden.dtype)
        return hidden

    def output(self, states: list[torch.Tensor]) -> torch.Tensor:
        """The conditioning rows: the chosen layer, with the final norm where the convention asks for it."""
        chosen = states[self.layer]
        return self.core.final_layer_norm(chosen) if self.final_norm else chosen

    def pooled(self, states: list[torch.Tensor], input_ids: torch.Tensor) -> torch.Tensor:
        """The (projected, where the model has a projection) final-norm vector at the first EOS: `(batch, dim)`."""
        last = self.core.final_layer_norm(states[-1])
        eos_position = (input_ids == self.eos_id).int().argmax(dim=-1)
        vectors = last[torch.arange(last.shape[0], device=last.device), eos_position]
        return self.projection(vectors) if self.projection is not None else vectors

    def run_chunks(self, input_ids: torch.Tensor, replace=()) -> list[torch.Tensor]:
        """Hidden states for a batch of 77-token chunks under the ordinary causal mask."""
        seq_len = input_ids.shape[1]
        positions = torch.arange(seq_len, device=input_ids.device)[None].expand_as(input_ids)
        return self.hidden_states(input_ids, positions, _causal_mask(seq_len, self.dtype, input_ids.device), replace)

    @torch.no_grad()
    def run_packed(
        self, items: Sequence[list[int]], starts: Sequence[int] | None = None
    ) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Encode several token sequences alone, packed into few forward calls.

        Each item becomes `[BOS, tokens...]` and a block-causal mask keeps the items apart. Positions
        restart per item: BOS at 0 and the tokens at 1, 2, ... or, where `starts` gives an item's first
        position, at start, start + 1, ... (the positions it has in the prompt, so that only the missing
        context distinguishes it from its contextual copy). Returns, per item,
        `(rows (tokens, dim), layers (layers + 1, tokens, hidden))`.
        """
        starts = list(starts) if starts is not None else [1] * len(items)
        results: list[tuple[torch.Tensor, torch.Tensor]] = []
        pack: list[tuple[list[int], int]] = []
        for ids, start in [*zip(items, starts), (None, 0)]:
            if ids is not None and sum(len(p) + 1 for p, _ in pack) + len(ids) + 1 <= PACK_LIMIT:
                pack.append((ids[:TOKENS_PER_CHUNK], start))
                continue
            if pack:
                results += self._run_pack(pack)
            pack = [(ids[:TOKENS_PER_CHUNK], start)] if ids is not None else []
        return results

    def _run_pack(self, pack: list[tuple[list[int], int]]) -> list[tuple[torch.Tensor, torch.Tensor]]:
        lengths = [len(ids) + 1 for ids, _ in pack]
        device = self.device
        input_ids = torch.tensor([[t for ids, _ in pack for t in (self.bos_id, *ids)]], device=device)
        positions = [p for ids, start in pack for p in (0, *range(start, start + len(ids)))]
        positions = torch.tensor([positions], device=device)
        states = self.hidden_states(input_ids, positions, _block_causal_mask(lengths, self.dtype, device))
        rows = self.output(states)[0]  # (seq, dim)
        stacked = torch.stack(states)[:, 0]  # (layers + 1, seq, hidden)
        out, first = [], 0
        for n in lengths:
            out.append((rows[first + 1 : first + n], stacked[:, first + 1 : first + n]))
            first += n
        return out


class _ClipTowers:
    """Shared machinery of `ClipEncoder` and `SdxlEncoder`: one or more towers whose outputs are concatenated."""

    causal = True
    towers: list[ClipTower]
    pooled_tower: ClipTower | None = None

    def layout(self, text: str) -> PromptLayout:
        return layout_prompt(self.towers[0].tokenizer, text)

    @torch.no_grad()
    def _encode(self, layout: PromptLayout, replace_by_tower: Sequence[Sequence] | None = None) -> Encoding:
        outputs, pooled = [], None
        for index, tower in enumerate(self.towers):
            input_ids = tower.chunk_ids(layout)
            replace = replace_by_tower[index] if replace_by_tower else ()
            states = tower.run_chunks(input_ids, replace)
            outputs.append(tower.output(states).reshape(-1, states[0].shape[-1]))
            if tower is self.pooled_tower:
                pooled = tower.pooled(states, input_ids)[0]  # the first chunk's, as the WebUI does
        return Encoding(rows=torch.cat(outputs, dim=-1), pooled=pooled)

    def encode(self, layout: PromptLayout) -> Encoding:
        return self._encode(layout)

    def empty(self) -> Encoding:
        return self.encode(self.layout(""))

    supports_positions = True

    @torch.no_grad()
    def encode_isolated(self, texts: Sequence[str], starts: Sequence[int] | None = None) -> list[IsolatedItem]:
        tokenizer = self.towers[0].tokenizer
        token_ids = [tokenizer(text, add_special_tokens=False)["input_ids"][:TOKENS_PER_CHUNK] for text in texts]
        per_tower = [tower.run_packed(token_ids, starts) for tower in self.towers]
        items = []
        for index, text in enumerate(texts):
            results = [tower_results[index] for tower_results in per_tower]
            rows = torch.cat([r for r, _ in results], dim=-1)
            items.append(IsolatedItem(text, token_ids[index], rows, tuple(layers for _, layers in results)))
        return items

    def rederive(self, layout: PromptLayout, replaced: Sequence[tuple[list[int], IsolatedItem]]) -> Encoding:
        replace_by_tower = []
        for tower_index in range(len(self.towers)):
            replace = []
            for rows, item in replaced:
                layers = item.layers[tower_index]
                for offset, row in enumerate(rows):
                    replace.append((row // ROWS_PER_CHUNK, row % ROWS_PER_CHUNK, layers[:, offset]))
            replace_by_tower.append(replace)
        return self._encode(layout, replace_by_tower)


class ClipEncoder(_ClipTowers):
    """SD 1.x / 2.x text encoder: `clip_skip=1` is the last layer, 2 the penultimate; final norm applied."""

    def __init__(self, tokenizer, text_model, clip_skip: int = 1):
        n_layers = len(ClipTower(tokenizer, text_model).layers)
        if not 1 <= clip_skip <= n_layers:
            raise ValueError(f"`clip_skip` must be between 1 and {n_layers} but is {clip_skip}.")
        self.clip_skip = clip_skip
        self.towers = [ClipTower(tokenizer, text_model, layer=-clip_skip, final_norm=True)]
        self.pooled_tower = self.towers[0]


class SdxlEncoder(_ClipTowers):
    """SDXL's pair of encoders: penultimate layers of both, no final norm, concatenated; pooled from the second."""

    def __init__(self, tokenizer_1, text_model_1, tokenizer_2, text_model_2):
        self.towers = [
            ClipTower(tokenizer_1, text_model_1, layer=-2, final_norm=False),
            ClipTower(tokenizer_2, text_model_2, layer=-2, final_norm=False),
        ]
        self.pooled_tower = self.towers[1]
