"""ComfyUI's language-model text encoders (ComfyUI 0.3.64) as parts of a conditioning that `flowcore` patches.

- Lumina 2: `LuminaModel` (key "gemma2_2b"), Gemma 2 2B. The tokenizer reads its start token, the system
  prompt and ` <Prompt Start> ` (added by ComfyUI's `CLIPTextEncodeLumina2`; here by the node's `system_prompt`),
  then the prompt. Rows: every token, layer -2 without the final norm. Weights as for CLIP (toward the empty
  prompt's rows).
- Qwen-Image: `QwenImageTEModel` ("qwen25_7b"), Qwen 2.5 VL 7B. The tokenizer puts the prompt in its chat
  template. Rows: from the prompt's first token on (the template before it is encoded, then dropped), the
  template's closing tokens after it; the last layer after the final norm. Weights: ComfyUI reads `(word:1.2)`
  as text (only `\\(` escapes resolve), so do we.
- HiDream: `HiDreamTEModel` ("llama"), Llama 3.1 8B next to T5-XXL and two CLIPs. The tokenizer reads its start
  token, the prompt, padding to 128. `conditioning_llama3` holds every layer's output stacked,
  `(1, 32, tokens, 4096)`. Weights: ComfyUI's own quirk, kept: token j's weight moves entry j of the stack (the
  embeddings counted as entry 0, which HiDream then drops) of the whole prompt toward the empty prompt's.

An item alone is encoded inside the same template (`flowcore.encoders.templated.PromptTemplate`): the template's
tokens before the prompt, then the item's tokens at the positions they have in the prompt (scoring) or right
after the template (patching, as the family's own node encodes the item as the whole prompt). The language model
is causal, so the template after the item cannot change its rows. Items alone go through ComfyUI's own model
(`transformer.model`, ComfyUI's `Llama2_`), packed into one sequence: the template once, each item after it at
its own position ids, under a mask that lets every item see the template and its own tokens only.

HiDream: each item's rows are patched in every stacked layer; the item is scored on the last entry (the final
norm's output, which HiDream's blocks read 17 of their 48 times); T5's rows are a part of their own
(`parts.T5Part`); the CLIPs give the pooled vector only and stay untouched.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from collections.abc import Callable, Sequence

import torch

from flowcore.encoders.base import Encoding, IsolatedItem, ItemRequest, weights_fingerprint
from flowcore.encoders.layout import PromptLayout, Token
from flowcore.encoders.templated import PromptTemplate, prompt_tokens
from flowcore.errors import MappingError, OptionsError
from flowcore.hosts.token_placement import PlacedLine, token_spans

from .layout import Fragment, fragments, key_layout, plain_text

PACKED_TOKENS = 512  # item tokens per packed forward call (the template comes on top)
STACK_CACHE_SIZE = 64  # items alone in every layer kept (HiDream: 32 x tokens x 4096 floats each)
HIDREAM_SCORE_LAYER = -1  # the stacked entry scored: the final norm's output
SKIP_TEMPLATE = ("<|im_start|>", "<|start_header_id|>")  # Qwen-Image's tokenizer uses such a prompt as it is
BYTE_PIECE = re.compile(r"<0x([0-9A-Fa-f]{2})>")


def piece_spans(tokenizer, text: str) -> list[Token]:
    """`text`'s tokens (no start or end token) with their character spans, for tokenizers without offsets:
    ComfyUI's `SPieceTokenizer` (SentencePiece pieces, `▁` a space, `<0xNN>` a byte, the dummy prefix's space
    not in the text) and transformers' slow byte-level BPEs (`Qwen2Tokenizer`)."""
    processor = getattr(tokenizer, "tokenizer", None)
    if hasattr(processor, "id_to_piece"):
        ids = list(tokenizer(text)["input_ids"])
        ids = ids[1:] if getattr(tokenizer, "add_bos", False) and ids else ids
        ids = ids[:-1] if getattr(tokenizer, "add_eos", False) and ids else ids
        unknown = processor.unk_id() if hasattr(processor, "unk_id") else None
        pieces: list[bytes | None] = []
        for index in ids:
            piece = processor.id_to_piece(int(index))
            byte = BYTE_PIECE.fullmatch(piece)
            if int(index) == unknown or piece in ("<unk>", "<UNK>"):
                pieces.append(None)  # some text the vocabulary lacks: up to where the next token is found
            else:
                pieces.append(bytes([int(byte.group(1), 16)]) if byte else piece.replace("▁", " ").encode())
    elif hasattr(tokenizer, "byte_decoder"):
        ids = list(tokenizer(text, add_special_tokens=False)["input_ids"])
        added = set(getattr(tokenizer, "added_tokens_encoder", {}))
        pieces = [
            piece.encode() if piece in added else bytes(tokenizer.byte_decoder[c] for c in piece)
            for piece in tokenizer.convert_ids_to_tokens(ids)
        ]
    else:
        raise MappingError(f"cannot find where the tokens of {type(tokenizer).__name__} sit in the text")
    return _aligned(text, ids, pieces)


def _aligned(text: str, ids: Sequence[int], pieces: Sequence[bytes | None]) -> list[Token]:
    """Each token's span in `text` from its bytes, in order (a leading space that is not in the text is
    SentencePiece's dummy prefix; an unknown token, None, covers the text up to where the next one is found)."""
    data = text.encode()
    char_at = [index for index, char in enumerate(text) for _ in char.encode()] + [len(text)]
    tokens, cursor = [], 0
    for number, (token_id, piece) in enumerate(zip(ids, pieces)):
        if piece is None:  # one character where more unknown tokens follow, else up to the next token
            if number + 1 < len(pieces) and pieces[number + 1] is None:
                found = cursor + len(text[char_at[cursor]].encode()) if cursor < len(data) else cursor
            else:
                following = next((p for p in pieces[number + 1 :] if p), None)
                found = len(data) if following is None else data.find(following.lstrip(b" ") or following, cursor + 1)
            if found < 0:
                raise MappingError(f"cannot place an unknown token in {text!r}")
            piece = data[cursor:found]
        if not data.startswith(piece, cursor):
            if not (piece.startswith(b" ") and data.startswith(piece[1:], cursor)):
                raise MappingError(f"cannot place the token {piece!r} in {text!r}")
            piece = piece[1:]
        start, cursor = cursor, cursor + len(piece)
        tokens.append(
            Token(int(token_id), char_at[start], char_at[cursor - 1] + 1 if cursor > start else char_at[start])
        )
    if cursor != len(data):
        raise MappingError(f"the tokens of {text!r} do not cover it")
    return tokens


def _unescaped(text: str) -> str:
    """A prompt as ComfyUI reads it with weights off: only the escapes `\\(` and `\\)` resolve."""
    return text.replace("\\(", "(").replace("\\)", ")")


class LlmPart:
    """A ComfyUI language model (an `SDClipModel` over ComfyUI's `Llama2_`) as a `flowcore.encoders.TextEncoder`
    for prompts inside a template: `before` and `after` are the texts around the prompt in what the tokenizer
    reads; `drop_prefix`: the conditioning has no rows before the prompt (Qwen-Image); `weighted`: ComfyUI
    parses `(word:1.2)` (not Qwen-Image)."""

    causal = True
    supports_positions = True
    leading = 1
    columns: list[slice]

    def __init__(
        self,
        clip,
        key: str,
        model,
        name: str,
        before: str = "",
        after: str = "",
        drop_prefix: bool = False,
        weighted: bool = True,
        template_in_tokenizer: bool = False,
    ):
        from .parts import VectorTable

        self.clip, self.key, self.model, self.name = clip, key, model, name
        self.keys, self.models = [key], [model]
        self.before, self.after = before, after
        self.drop_prefix, self.weighted = drop_prefix, weighted
        self.template_in_tokenizer = template_in_tokenizer
        self.table = VectorTable()
        self.leading = 1 if model.special_tokens.get("start") is not None else 0
        self.columns = [slice(0, self.width)]
        self._empty_rows: dict[int, torch.Tensor] = {}
        self._template: PromptTemplate | None = None

    # --- what the tokenizer read, and where the prompt's tokens sit in it ---

    def context(self):
        self.clip.load_model()

    def tokenizer_text(self, line: str) -> str:
        """What the node hands `clip.tokenize` for `line`: the text before it where the node adds it (Lumina 2's
        system prompt); a template the tokenizer adds itself (Qwen-Image) is not added here."""
        return line if self.template_in_tokenizer else self.before + line + self.after

    def plain(self, line: str) -> str:
        """The text flowcore segments: `line` without its weight syntax, or (weights off) its escapes resolved."""
        from .parts import comfy_fragments

        return plain_text(comfy_fragments(line)) if self.weighted else _unescaped(line)

    def _fragments(self, text: str) -> list[Fragment]:
        from .parts import comfy_fragments

        return comfy_fragments(text) if self.weighted else fragments(text, lambda t: [(_unescaped(t), 1.0)])

    def tokens_of(self, key: str) -> Callable:
        from .parts import key_tokenizer

        tokenizer = key_tokenizer(self.clip.tokenizer, key).tokenizer
        if getattr(tokenizer, "is_fast", False):
            return lambda text: token_spans(tokenizer, text)
        return lambda text: piece_spans(tokenizer, text)

    def _full_layout(self, line: str, chunks) -> tuple[PlacedLine, list[Token], int, int]:
        """`before + line + after` laid out as ComfyUI tokenized it; the prompt's tokens (spans in `line`'s plain
        text), the rows before the prompt's first token, and the rows up to the end of the template after it."""
        if not self.weighted and line.startswith(SKIP_TEMPLATE):
            raise MappingError("a prompt that brings its own chat template")
        if len(chunks) != 1:
            raise MappingError(f"{len(chunks)} token chunks for one prompt")
        pieces = self._fragments(self.before + line + self.after)
        laid = key_layout(pieces, chunks, self.tokens_of(self.key), self.leading)
        text = laid.layout.text
        start = len(self.plain(self.before))
        end = len(text) - len(self.plain(self.after))
        try:
            before, mine, after = prompt_tokens(laid.layout.chunks[0] if laid.layout.chunks else (), text, start, end)
        except ValueError as error:
            raise MappingError(str(error)) from error
        return laid, mine, self.leading + before, self.leading + before + len(mine) + after

    def line_layout(self, line: str, tokens: dict) -> PlacedLine:
        """`line` (a prompt, markers removed) laid out in the conditioning's rows, from ComfyUI's tokens of
        `tokenizer_text(line)` (`clip.tokenize(..., return_word_ids=True)`)."""
        chunks = tokens[self.key]
        laid, mine, before_rows, template_end = self._full_layout(line, chunks)
        ids = [entry[0] for entry in chunks[0]]
        around = ids[:before_rows] + ids[before_rows + len(mine) : template_end]
        if any(torch.is_tensor(t) or not isinstance(t, int) for t in around):
            raise MappingError("an embedding in the template")
        dropped = before_rows if self.drop_prefix else 0
        template = PromptTemplate(tuple(ids[:before_rows]), tuple(ids[before_rows + len(mine) : template_end]), dropped)
        reference = self.reference_template()
        if template.prefix != reference.prefix or template.first_row != reference.first_row:
            raise MappingError("the template is tokenized differently around this prompt (a weight at its very start?)")
        if mine and template.suffix != reference.suffix:
            raise MappingError("the template after the prompt is tokenized differently around this prompt")
        vectors = [t for t in ids if torch.is_tensor(t)]
        if vectors:
            known = {-(k + 1): self.table.vectors_id([vector]) for k, vector in enumerate(laid.vectors)}
            mine = [t if t.id >= 0 else Token(known[t.id], t.start, t.end) for t in mine]
        try:
            chunk_format = template.chunk_format(len(mine), padding=len(chunks[0]) - template_end)
            prompt = PromptLayout(self.plain(line), (tuple(mine),), chunk_format)
        except OptionsError as error:  # an empty prompt leaves no row for a token
            raise MappingError(str(error)) from error
        if chunk_format.rows != len(chunks[0]) - dropped:
            raise MappingError("the prompt's rows do not add up")
        return PlacedLine(prompt, laid.weights[dropped:], laid.vectors)

    def reference_template(self) -> PromptTemplate:
        """The template around a one-word prompt: what every prompt's template must be (items alone are encoded
        in it)."""
        if self._template is None:
            line = "a"
            chunks = self.clip.tokenize(self.tokenizer_text(line), return_word_ids=True)[self.key]
            _, mine, before_rows, template_end = self._full_layout(line, chunks)
            ids = [int(entry[0]) for entry in chunks[0]]
            dropped = before_rows if self.drop_prefix else 0
            self._template = PromptTemplate(
                tuple(ids[:before_rows]), tuple(ids[before_rows + len(mine) : template_end]), dropped
            )
        return self._template

    def layout(self, text: str) -> PromptLayout:
        """Plain text (no weight syntax) laid out as ComfyUI lays it out."""
        line = text.replace("(", "\\(").replace(")", "\\)")
        return self.line_layout(line, self.clip.tokenize(self.tokenizer_text(line), return_word_ids=True)).layout

    # --- the model ---

    @property
    def width(self) -> int:
        return int(self.model.transformer.get_input_embeddings().weight.shape[-1])

    @property
    def device(self) -> torch.device:
        return self.model.transformer.get_input_embeddings().weight.device

    def _layer(self):
        """ComfyUI's `intermediate_output` for the model's layer option, and whether rows are the last layer."""
        if self.model.layer == "all":
            return "all", False
        if self.model.layer == "hidden":
            return int(self.model.layer_idx), False
        return None, True

    def identity(self) -> str:
        settings = [
            (type(self).__name__, self.key, type(self.model).__name__, self.model.layer, self.model.layer_idx),
            self.reference_template(),
        ]
        return weights_fingerprint(self.model.transformer, settings=settings)

    def _embed(self, ids: Sequence[int]) -> torch.Tensor:
        """Token embeddings `(1, len(ids), width)` in float32, `embedding:name` vectors where ids are negative."""
        tensor = torch.tensor([[max(int(i), 0) for i in ids]], device=self.device)
        embedded = self.model.transformer.get_input_embeddings()(tensor, out_dtype=torch.float32).float()
        for position, token in enumerate(ids):
            if token < 0:
                embedded[0, position] = self.table.vector(int(token), 0).reshape(-1).to(embedded)
        return embedded

    def _forward(self, ids: Sequence[int], positions: Sequence[int], mask: torch.Tensor | None) -> torch.Tensor:
        """ComfyUI's own model over one sequence: `(tokens, width)`, or `(entries, tokens, width)` for every
        layer; `mask` `(tokens, tokens)` of 0/1 (1: may attend), on top of the causal mask."""
        self.context()
        wanted, last = self._layer()
        with torch.no_grad():
            x, intermediate = self.model.transformer.model(
                None,
                attention_mask=None if mask is None else mask[None].to(self.device),
                embeds=self._embed(ids),
                intermediate_output=wanted,
                final_layer_norm_intermediate=self.model.layer_norm_hidden_state,
                dtype=torch.float32,
                position_ids=torch.tensor([list(positions)], device=self.device),
            )
        return (x if last else intermediate)[0].float()

    def _packed(self, sequences: Sequence[tuple[list[int], list[int]]]) -> list[torch.Tensor]:
        """Each `(ids, positions)` of `PromptTemplate.sequence` (the template's prefix, then the item) encoded
        alone, several to a forward call: the prefix once, the items after it, each seeing the prefix and itself.
        Returns the items' rows (the prefix's left out)."""
        prefix = len(self.reference_template().prefix)
        results: list[torch.Tensor] = []
        group: list[tuple[list[int], list[int]]] = []

        def run() -> None:
            ids = list(group[0][0][:prefix]) + [i for seq, _ in group for i in seq[prefix:]]
            positions = list(group[0][1][:prefix]) + [p for _, places in group for p in places[prefix:]]
            blocks = torch.tensor([-1] * prefix + [n for n, (seq, _) in enumerate(group) for _ in seq[prefix:]])
            mask = (blocks[None, :] == -1) | (blocks[:, None] == blocks[None, :])
            out = self._forward(ids, positions, mask.long())
            first = prefix
            for seq, _ in group:
                results.append(out[..., first : first + len(seq) - prefix, :])
                first += len(seq) - prefix
            group.clear()

        for sequence in sequences:
            if group and sum(len(s) - prefix for s, _ in group) + len(sequence[0]) - prefix > PACKED_TOKENS:
                run()
            group.append(sequence)
        if group:
            run()
        return results

    def encode_isolated(self, requests: Sequence[ItemRequest]) -> list[IsolatedItem]:
        template = self.reference_template()
        found = self._packed([template.sequence(list(r.token_ids), r.start) for r in requests])
        return [IsolatedItem(r.text, list(r.token_ids), rows) for r, rows in zip(requests, found)]

    def _sequence_rows(self, layout: PromptLayout) -> torch.Tensor:
        """The whole templated prompt, padded as ComfyUI pads it, through ComfyUI's own model call."""
        template = self.reference_template()
        ids = template.whole([t.id for t in layout.chunks[0]] if layout.chunks else [])
        ids += [self.model.special_tokens["pad"]] * (layout.format.rows + template.first_row - len(ids))
        tokens = [i if i >= 0 else self.table.vector(i, 0) for i in ids]
        self.context()
        with torch.no_grad():
            return self.model.encode([tokens])[0][0].float()

    def encode(self, layout: PromptLayout) -> Encoding:
        return Encoding(self._sequence_rows(layout)[self.reference_template().first_row :])

    def empty(self) -> Encoding:
        return self.encode(self.layout(""))

    def rederive(self, layout: PromptLayout, replaced) -> Encoding:
        raise NotImplementedError("the template's rows after the prompt (and padding) are left as encoded")

    def empty_rows(self, length: int) -> torch.Tensor:
        """The rows ComfyUI moves weighted tokens toward: its empty prompt of `length` tokens through the model."""
        if length not in self._empty_rows:
            from comfy import sd1_clip

            self.context()
            tokens = sd1_clip.gen_empty_tokens(self.model.special_tokens, length)
            with torch.no_grad():
                self._empty_rows[length] = self.model.encode([tokens])[0][0].float()
        return self._empty_rows[length]

    def alone_positions(self, count: int) -> tuple[int, list[int]]:
        """An item of `count` tokens encoded as the whole prompt: the sequence's length (padding included, as
        ComfyUI's weighting sees it) and the item's rows in it."""
        template = self.reference_template()
        tokenizer = self.clip.tokenizer
        from .parts import key_tokenizer

        minimum = getattr(key_tokenizer(tokenizer, self.key), "min_length", None) or 0
        length = max(len(template.prefix) + count + len(template.suffix), minimum)
        return length, list(range(len(template.prefix), len(template.prefix) + count))


class LlamaStackPart(LlmPart):
    """HiDream's Llama 3 (`conditioning_llama3`: every layer stacked): scored on one stacked entry
    (`score_layer`), patched in all of them (see the module docstring)."""

    extra_key = "conditioning_llama3"
    score_layer = HIDREAM_SCORE_LAYER

    _stacks: OrderedDict[tuple, torch.Tensor] = OrderedDict()  # (weights, ids, start) -> stack, across runs

    def __init__(self, clip, key: str, model, name: str = "Llama 3"):
        super().__init__(clip, key, model, name)
        self._identity: str | None = None

    def _stack_key(self, token_ids: Sequence[int], start: int) -> tuple:
        if self._identity is None:
            self._identity = self.identity()
        return (self._identity, tuple(token_ids), start)

    def _stacked(self, out: torch.Tensor) -> torch.Tensor:
        """ComfyUI's stack without its first entry (the embeddings), as HiDream drops it."""
        if out.ndim != 3:
            raise MappingError(f"HiDream's Llama gives {out.ndim} dimensions, not every layer")
        return out[1:]

    def encode_isolated(self, requests: Sequence[ItemRequest]) -> list[IsolatedItem]:
        template = self.reference_template()
        found = self._packed([template.sequence(list(r.token_ids), r.start) for r in requests])
        items = []
        for request, out in zip(requests, found):
            stack = self._stacked(out)
            key = self._stack_key(request.token_ids, request.start)
            self._stacks[key] = stack
            self._stacks.move_to_end(key)
            while len(self._stacks) > STACK_CACHE_SIZE:
                self._stacks.popitem(last=False)
            items.append(IsolatedItem(request.text, list(request.token_ids), stack[self.score_layer], (stack,)))
        return items

    def stack_alone(self, token_ids: Sequence[int], start: int) -> torch.Tensor:
        """The item alone in every stacked entry `(entries, tokens, width)` (cached)."""
        key = self._stack_key(token_ids, start)
        if key not in self._stacks:
            self.encode_isolated([ItemRequest("", tuple(token_ids), start)])
        return self._stacks[key]

    def encode_stack(self, layout: PromptLayout) -> torch.Tensor:
        return self._stacked(self._sequence_rows(layout))

    def encode(self, layout: PromptLayout) -> Encoding:
        return Encoding(self.encode_stack(layout)[self.score_layer])

    def empty_stack(self, length: int) -> torch.Tensor:
        return self._stacked(self.empty_rows(length))

    @staticmethod
    def entry_weights(weights: torch.Tensor, entries: int) -> torch.Tensor:
        """The weight ComfyUI gives each stacked entry: token j's weight moves entry j of ComfyUI's stack (whose
        entry 0, the embeddings, HiDream drops), so kept entry m takes token m + 1's weight."""
        found = torch.ones(entries)
        count = min(entries, weights.shape[0] - 1)
        found[:count] = weights[1 : count + 1]
        return found


def _is_llm(model) -> bool:
    """Whether `model` is ComfyUI's `SDClipModel` over one of its language models (`Llama2_`)."""
    from comfy.text_encoders import llama

    return model is not None and isinstance(getattr(model, "transformer", None), llama.BaseLlama)


def system_prompt_prefix(clip, system_prompt: str | None) -> str:
    """What the node puts before the prompt: for Lumina 2, `CLIPTextEncodeLumina2`'s system prompt of that name
    and ` <Prompt Start> ` (its text read from ComfyUI's own node); nothing for other families or for "none"."""
    try:
        from comfy.text_encoders import lumina2
    except ImportError:  # a ComfyUI without Lumina 2
        return ""
    if not system_prompt or system_prompt == "none" or not isinstance(clip.cond_stage_model, lumina2.LuminaModel):
        return ""
    from comfy_extras.nodes_lumina2 import CLIPTextEncodeLumina2

    return f"{CLIPTextEncodeLumina2.SYSTEM_PROMPT[system_prompt]} <Prompt Start> "


def parts_for(clip, prefix: str = "") -> list | None:
    """The parts of a language-model family's conditioning (see the module docstring), or None where `clip` is
    none of them."""
    try:
        from comfy.text_encoders import hidream, lumina2, qwen_image
    except ImportError:  # a ComfyUI without them
        return None
    model = clip.cond_stage_model
    if isinstance(model, hidream.HiDreamTEModel):
        from .parts import FirstChunkT5Part, is_t5

        found: list = []
        if model.t5xxl is not None:
            if not is_t5(model.t5xxl):
                raise MappingError("a HiDream text encoder whose T5 is not ComfyUI's T5")
            found.append(FirstChunkT5Part(clip, "t5xxl", model.t5xxl))
        if model.llama is not None:
            if not _is_llm(model.llama) or model.llama.layer != "all":
                raise MappingError("a HiDream text encoder whose Llama is not ComfyUI's, every layer")
            found.append(LlamaStackPart(clip, "llama", model.llama))
        if not found:
            raise MappingError("a HiDream text encoder with neither T5 nor Llama: nothing to patch")
        return found
    if isinstance(model, qwen_image.QwenImageTEModel):
        inner = getattr(model, model.clip, None)
        if not _is_llm(inner):
            raise MappingError("a Qwen-Image text encoder whose model is not ComfyUI's Qwen 2.5")
        before, _, after = clip.tokenizer.llama_template.partition("{}")
        return [
            LlmPart(
                clip,
                model.clip_name,
                inner,
                "Qwen 2.5 VL",
                before,
                after,
                drop_prefix=True,
                weighted=False,
                template_in_tokenizer=True,
            )
        ]
    if isinstance(model, lumina2.LuminaModel):
        inner = getattr(model, model.clip, None)
        if not _is_llm(inner):
            raise MappingError("a Lumina 2 text encoder whose model is not ComfyUI's Gemma")
        return [LlmPart(clip, model.clip_name, inner, "Gemma", before=prefix)]
    return None
