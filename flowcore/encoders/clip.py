"""CLIP text encoder adapters: `ClipEncoder` (SD 1.x / 2.x) and `SdxlEncoder` (SDXL's two encoders), built
on `Tower` (one causal transformer run over packed blocks) and `TowerEncoder` (towers side by side), which
host glues reuse to drive a host's own text transformers.

Conventions (as the WebUI and diffusers use them):
- SD 1.x / 2.x: the last layer after the final layer norm; with clip skip k, hidden state `-k` (k=1 is the
  last layer) and then the final layer norm.
- SDXL: the penultimate layer of both encoders, no final norm, concatenated (768 + 1280); the pooled
  vector is the second encoder's projected EOS vector of the first chunk.

Both run CLIP's layers themselves rather than calling the model's `forward`, for two reasons. Items
encoded alone share one forward call with the prompt's chunks: each is a block `[BOS, tokens...]` with
its own positions under a block-causal mask (the BOS, the same in every block, is computed once per call and
seen by every block), which is exact in a causal encoder (an item's rows depend only on BOS and its own
tokens) and reads the weights once. And the EOS/padding rows can be re-derived
with item states swapped in at every layer. The layer loop works with transformers 4.30 (the WebUI's)
and 5.x.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from flowcore.encoders.base import Encoding, IsolatedItem, ItemRequest, weights_fingerprint
from flowcore.encoders.layout import CLIP_CHUNKS, PromptLayout, layout_prompt
from flowcore.errors import OptionsError

SEQUENCE_LIMIT = 8 * CLIP_CHUNKS.rows  # tokens per forward call; more blocks than this are split over calls
# (on a CPU, a calibration's packed prompts run ~15% faster in calls of 8 chunks than of 4: fewer, larger calls)


def _block_causal_mask(lengths: Sequence[int], dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """Additive mask `(1, 1, seq, seq)` that is causal inside each block and blocks attention across blocks."""
    total = sum(lengths)
    block = torch.repeat_interleave(torch.arange(len(lengths), device=device), torch.tensor(lengths, device=device))
    allowed = (block[:, None] == block[None, :]) & torch.ones(total, total, dtype=torch.bool, device=device).tril()
    mask = torch.zeros(total, total, dtype=dtype, device=device).masked_fill(~allowed, torch.finfo(dtype).min)
    return mask[None, None]


@dataclass
class Block:
    """A token sequence encoded on its own: its ids and their position ids (which may skip)."""

    ids: list[int]
    positions: list[int]


@dataclass
class BlockOutput:
    """A block's output rows `(tokens, dim)` and hidden states at every layer `(layers + 1, tokens, hidden)`."""

    rows: torch.Tensor
    layers: torch.Tensor


class Tower:
    """One causal text transformer, run layer by layer over blocks packed into one sequence.

    `layer` indexes the hidden states `(embeddings, layer 1, ..., layer N)` the way Python indexes a list
    (-1 is the last layer); `final_norm` says whether the final layer norm is applied to it. Blocks (the
    prompt's 77-token chunks, items alone) share a forward call under a block-causal mask, so each block
    is computed as if alone while the weights are read once: on a CPU a forward call of a few tokens
    costs a third of a 77-token one, so fewer calls is what keeps flowcore cheap.

    Subclasses say how their transformer embeds tokens and positions, runs a layer and applies its final
    norm: `ClipTower` for transformers' CLIP; a host glue adds its own (the WebUI's OpenCLIP).
    """

    def __init__(
        self, model: torch.nn.Module, layers, layer: int, final_norm: bool, bos_id: int, eos_id: int, pad_id: int
    ):
        self.model = model
        self.layers = layers
        self.layer = layer
        self.final_norm = final_norm
        self.bos_id, self.eos_id, self.pad_id = bos_id, eos_id, pad_id

    def token_embeddings(self, input_ids: torch.Tensor) -> torch.Tensor:
        """`(1, seq, hidden)` for ids `(1, seq)`."""
        raise NotImplementedError

    def position_embeddings(self, position_ids: torch.Tensor) -> torch.Tensor:
        """`(1, seq, hidden)` for position ids `(1, seq)`, which may skip and restart."""
        raise NotImplementedError

    def run_layer(self, layer: torch.nn.Module, hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """One transformer layer over `(1, seq, hidden)` under the mask from `attention_mask`."""
        raise NotImplementedError

    def final_layer_norm(self, hidden: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    @property
    def width(self) -> int:
        """The width of the rows this tower outputs."""
        raise NotImplementedError

    def attention_mask(self, lengths: Sequence[int]) -> torch.Tensor:
        """The block-causal additive mask `(1, 1, seq, seq)` of packed blocks of these lengths."""
        return _block_causal_mask(lengths, self.dtype, self.device)

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
            rows.append(ids + [self.pad_id] * (layout.format.rows - len(ids)))
        return torch.tensor(rows, device=self.device)

    def chunk_blocks(self, layout: PromptLayout) -> list[Block]:
        """One block per 77-token chunk, positions 0..76."""
        return [Block(ids, list(range(layout.format.rows))) for ids in self.chunk_ids(layout).tolist()]

    def item_block(self, ids: list[int], start: int = 1) -> Block:
        """`[BOS, tokens...]` with BOS at position 0 and the tokens from position `start` on."""
        return Block([self.bos_id, *ids], [0, *range(start, start + len(ids))])

    @torch.no_grad()
    def hidden_states(
        self,
        input_ids: torch.Tensor,
        position_ids: torch.Tensor,
        mask: torch.Tensor,
        replace: Sequence[tuple[int, torch.Tensor]] = (),
    ) -> list[torch.Tensor]:
        """Hidden states `(1, seq, hidden)` after the embeddings and after each layer.

        `replace` holds `(position, states)` with `states` of shape `(layers + 1, hidden)`: after the
        embeddings and after every layer, that position's state is overwritten.
        """
        hidden = self.token_embeddings(input_ids) + self.position_embeddings(position_ids)
        states = [self._replace(hidden, 0, replace)]
        for depth, layer in enumerate(self.layers, start=1):
            states.append(self._replace(self.run_layer(layer, states[-1], mask), depth, replace))
        return states

    @staticmethod
    def _replace(hidden: torch.Tensor, depth: int, replace: Sequence[tuple[int, torch.Tensor]]) -> torch.Tensor:
        if not replace:
            return hidden
        hidden = hidden.clone()
        for position, states in replace:
            hidden[0, position] = states[depth].to(hidden.dtype)
        return hidden

    def output(self, states: list[torch.Tensor]) -> torch.Tensor:
        """The conditioning rows: the chosen layer, with the final norm where the convention asks for it."""
        chosen = states[self.layer]
        return self.final_layer_norm(chosen) if self.final_norm else chosen

    @torch.no_grad()
    def run_blocks(
        self, blocks: Sequence[Block], replace: Sequence[tuple[int, int, torch.Tensor]] = ()
    ) -> list[BlockOutput]:
        """Encode each block as if alone, packing blocks into as few forward calls as `SEQUENCE_LIMIT` allows.

        Every block starts with the start token at position 0, whose rows depend on nothing else: a call holds it
        once, first, and every block's tokens attend to it (column 0 of the additive mask is opened), so each
        block is computed as if alone from one start token. `replace` holds `(block index, index in block, states
        (layers + 1, hidden))` to swap in at every layer (never at the start token).
        """
        groups: list[list[int]] = [[]]
        for index, block in enumerate(blocks):
            if groups[-1] and sum(len(blocks[i].ids) for i in groups[-1]) + len(block.ids) > SEQUENCE_LIMIT:
                groups.append([])
            groups[-1].append(index)
        outputs: dict[int, BlockOutput] = {}
        device = self.device
        for group in groups:
            if not group:
                continue
            # 1. Pack the blocks, the start token once: block n > 0 goes in without its first token.
            shared = all(blocks[i].ids[0] == self.bos_id and blocks[i].positions[0] == 0 for i in group)
            dropped = [0] + [int(shared)] * (len(group) - 1)  # tokens left out at the start of each block
            lengths = [len(blocks[i].ids) - drop for i, drop in zip(group, dropped)]
            starts = [sum(lengths[:n]) for n in range(len(group))]
            ids = torch.tensor([[t for i, drop in zip(group, dropped) for t in blocks[i].ids[drop:]]], device=device)
            places = [p for i, drop in zip(group, dropped) for p in blocks[i].positions[drop:]]
            positions = torch.tensor([places], device=device)
            first = {b: start - drop for b, start, drop in zip(group, starts, dropped)}  # where index 0 would be
            swaps = [(first[b] + offset, states) for b, offset, states in replace if b in first]
            mask = self.attention_mask(lengths)
            if shared:
                mask[..., 0] = 0  # every row also sees the start token
            # 2. One forward call; each block's rows, its start token's in front.
            states = self.hidden_states(ids, positions, mask, swaps)
            rows = self.output(states)[0]  # (seq, dim)
            stacked = torch.stack(states)[:, 0]  # (layers + 1, seq, hidden)
            for index, start, length, drop in zip(group, starts, lengths, dropped):
                block_rows, block_layers = rows[start : start + length], stacked[:, start : start + length]
                if drop:
                    block_rows, block_layers = (
                        torch.cat([rows[:1], block_rows]),
                        torch.cat([stacked[:, :1], block_layers], 1),
                    )
                outputs[index] = BlockOutput(block_rows, block_layers)
        return [outputs[index] for index in range(len(blocks))]


class ClipTower(Tower):
    """A transformers CLIP text model (`CLIPTextModel`, `CLIPTextModelWithProjection`) as a `Tower`."""

    def __init__(self, tokenizer, text_model, layer: int = -1, final_norm: bool = True):
        core = text_model
        while not hasattr(core, "embeddings") and hasattr(core, "text_model"):
            core = core.text_model  # transformers 4.x nests a CLIPTextTransformer; 5.x does not
        pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        super().__init__(
            text_model, core.encoder.layers, layer, final_norm, tokenizer.bos_token_id, tokenizer.eos_token_id, pad_id
        )
        self.tokenizer = tokenizer
        self.core = core
        self.projection = getattr(text_model, "text_projection", None)
        self._legacy_layer_call = "causal_attention_mask" in inspect.signature(self.layers[0].forward).parameters

    def token_embeddings(self, input_ids: torch.Tensor) -> torch.Tensor:
        # CLIPTextEmbeddings.forward refuses sequences over 77 even with restarting positions, so its two
        # embeddings are looked up directly.
        return self.core.embeddings.token_embedding(input_ids)

    def position_embeddings(self, position_ids: torch.Tensor) -> torch.Tensor:
        return self.core.embeddings.position_embedding(position_ids)

    def run_layer(self, layer: torch.nn.Module, hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        out = layer(hidden, mask, causal_attention_mask=None) if self._legacy_layer_call else layer(hidden, mask)
        return out[0] if isinstance(out, tuple) else out  # transformers 4.x returns tuples

    def final_layer_norm(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.core.final_layer_norm(hidden)

    @property
    def width(self) -> int:
        return int(self.core.embeddings.position_embedding.embedding_dim)

    def pooled(self, last_hidden: torch.Tensor) -> torch.Tensor:
        """The pooled vector from an EOS token's last hidden state `(hidden,)`: final norm, then the
        projection where the model has one."""
        vector = self.final_layer_norm(last_hidden)
        return self.projection(vector) if self.projection is not None else vector


class TowerEncoder:
    """A `TextEncoder` over one or more `Tower`s whose outputs are concatenated (SDXL: CLIP-L then CLIP-G):
    the machinery of `ClipEncoder` and `SdxlEncoder`, and of host glues that drive a host's own towers.
    Subclasses set `towers` (and `pooled_tower` where the model has a pooled vector)."""

    causal = True
    supports_positions = True
    towers: list[Tower]
    pooled_tower: Tower | None = None

    def layout(self, text: str, segments: list[list[tuple[int, int]]] | None = None) -> PromptLayout:
        """`text` in chunks; `segments`: the spans to tokenize one by one (see `layout_prompt`)."""
        return layout_prompt(self.towers[0].tokenizer, text, CLIP_CHUNKS, segments)

    def identity(self) -> str:
        settings = [(type(self).__name__, tower.layer, tower.final_norm) for tower in self.towers]
        return weights_fingerprint(*(tower.model for tower in self.towers), settings=settings)

    @torch.no_grad()
    def encode_many(
        self,
        layout: PromptLayout | None,
        requests: Sequence[ItemRequest] = (),
        replaced: Sequence[tuple[list[int], IsolatedItem]] = (),
    ) -> tuple[Encoding | None, list[IsolatedItem]]:
        """Encode a prompt's chunks and several items alone (each at its `start`) in one pass per tower.

        `replaced` swaps isolated items' hidden states into the prompt's rows at every layer (see `rederive`).
        """
        token_ids = [list(request.token_ids)[: CLIP_CHUNKS.tokens] for request in requests]
        n_chunks = len(layout.chunks) if layout is not None else 0
        prompt_rows, pooled, item_rows, item_layers = [], None, [], []
        for tower_index, tower in enumerate(self.towers):
            blocks = tower.chunk_blocks(layout) if layout is not None else []
            blocks += [tower.item_block(ids, request.start) for ids, request in zip(token_ids, requests)]
            swaps = [
                (layout.chunk_of(row), layout.position(row), item.layers[tower_index][:, offset])
                for rows, item in replaced
                for offset, row in enumerate(rows)
            ]
            outputs = tower.run_blocks(blocks, swaps)
            if layout is not None:
                prompt_rows.append(torch.cat([out.rows for out in outputs[:n_chunks]]))
                if tower is self.pooled_tower:  # the first chunk's EOS, as the WebUI does
                    pooled = tower.pooled(outputs[0].layers[-1, len(layout.chunks[0]) + 1])
            item_rows.append([out.rows[1:] for out in outputs[n_chunks:]])
            item_layers.append([out.layers[:, 1:] for out in outputs[n_chunks:]])
        encoding = Encoding(torch.cat(prompt_rows, dim=-1), pooled) if layout is not None else None
        items = [
            IsolatedItem(
                request.text,
                token_ids[index],
                torch.cat([rows[index] for rows in item_rows], dim=-1),
                tuple(layers[index] for layers in item_layers),
            )
            for index, request in enumerate(requests)
        ]
        return encoding, items

    def encode(self, layout: PromptLayout) -> Encoding:
        return self.encode_many(layout)[0]

    def empty(self) -> Encoding:
        return self.encode(self.layout(""))

    def encode_isolated(self, requests: Sequence[ItemRequest]) -> list[IsolatedItem]:
        return self.encode_many(None, requests)[1]

    def rederive(self, layout: PromptLayout, replaced: Sequence[tuple[list[int], IsolatedItem]]) -> Encoding:
        return self.encode_many(layout, (), replaced)[0]


class ClipEncoder(TowerEncoder):
    """SD 1.x / 2.x text encoder: `clip_skip=1` is the last layer, 2 the penultimate; final norm applied."""

    def __init__(self, tokenizer, text_model, clip_skip: int = 1):
        n_layers = len(ClipTower(tokenizer, text_model).layers)
        if not 1 <= clip_skip <= n_layers:
            raise OptionsError(f"`clip_skip` must be between 1 and {n_layers} but is {clip_skip}.")
        self.clip_skip = clip_skip
        self.towers = [ClipTower(tokenizer, text_model, layer=-clip_skip, final_norm=True)]
        self.pooled_tower = self.towers[0]


class SdxlEncoder(TowerEncoder):
    """SDXL's pair of encoders: penultimate layers of both, no final norm, concatenated; pooled from the second."""

    def __init__(self, tokenizer_1, text_model_1, tokenizer_2, text_model_2):
        self.towers = [
            ClipTower(tokenizer_1, text_model_1, layer=-2, final_norm=False),
            ClipTower(tokenizer_2, text_model_2, layer=-2, final_norm=False),
        ]
        self.pooled_tower = self.towers[1]
