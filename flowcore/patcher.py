"""`FlowPatcher`: from a prompt (and, optionally, the caller's own encoding of it) to a patched encoding.

The data flow is one way: prompt text -> lexical items (spaCy + markers) -> their rows (the tokenizer's
offsets, per chunk) -> isolated encodings (cached) -> leak scores -> a patch plan -> patched rows.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable
from typing import Any

import torch

from flowcore import analysis, interventions
from flowcore.encoders.base import Encoding, IsolatedItem, TextEncoder
from flowcore.errors import EncodingMismatchError
from flowcore.items import ISOLATE, KEEP, LexicalItem
from flowcore.layout import ROWS_PER_CHUNK, PromptLayout
from flowcore.markers import parse_markers
from flowcore.options import FlowOptions
from flowcore.report import FlowReport, FlowResult, ItemReport, Pull
from flowcore.representative import RepresentativeClassifier, last_token_rows
from flowcore.segmentation import segment_marked


class _LruCache:
    """A small least-recently-used cache (isolated encodings, items and encodings by text)."""

    def __init__(self, size: int):
        self.size = size
        self.data: OrderedDict[Hashable, Any] = OrderedDict()

    def get(self, key: Hashable) -> Any:
        if key in self.data:
            self.data.move_to_end(key)
            return self.data[key]
        return None

    def put(self, key: Hashable, value: Any) -> None:
        self.data[key] = value
        self.data.move_to_end(key)
        while len(self.data) > self.size:
            self.data.popitem(last=False)


class FlowPatcher:
    """Find the items of a prompt whose encoding leaked toward another item, and patch them.

    ```python
    patcher = FlowPatcher(ClipEncoder(tokenizer, text_model))
    result = patcher.run("a crosswalk next to a bus station with a ~standing zebra~")
    result.patched  # (77, 768), ready for `prompt_embeds=result.patched[None]`
    print(result.report.summary())
    ```

    Isolated encodings, segmentations and prompt encodings are cached by text (`cache_size` each), so a
    repeated prompt costs lookups only. Call `clear_cache()` when the encoder's weights change (a LoRA).
    """

    def __init__(
        self,
        encoder: TextEncoder,
        options: FlowOptions | None = None,
        nlp=None,
        classifier: RepresentativeClassifier | None = None,
        cache_size: int = 512,
    ) -> None:
        self.encoder = encoder
        self.options = options or FlowOptions()
        self.nlp = nlp
        self.classifier = classifier  # finds representative tokens; without one, each item's last token
        self._isolated = _LruCache(cache_size)
        self._items = _LruCache(cache_size)
        self._encodings = _LruCache(cache_size)
        self._baseline: Encoding | None = None

    def clear_cache(self) -> None:
        """Forget every cached encoding, e.g. after the encoder's weights changed."""
        for cache in (self._isolated, self._items, self._encodings):
            cache.data.clear()
        self._baseline = None

    def baseline(self) -> Encoding:
        """The clean-pad baseline: the empty prompt padded to 77 rows, `(77, dim)` (computed once)."""
        if self._baseline is None:
            self._baseline = self.encoder.empty()
        return self._baseline

    def isolated(self, text: str, start: int = 1) -> IsolatedItem:
        """`text` encoded on its own (cached). At `start` 1 (right after BOS) these are the rows an item of
        that text is patched with; at the item's own first position, the rows it is scored against (where
        the encoder can place tokens; otherwise always right after BOS)."""
        return self._isolated_encodings([text], [start])[0]

    def run(self, prompt: str, options: FlowOptions | None = None) -> FlowResult:
        """Encode `prompt` (markers allowed) with the encoder, then patch it (see `patch`).

        Encoders that can (`encode_many`) encode the prompt and every item alone, at its own positions and
        at the start, in a single pass; `patch` then finds them all in the cache.
        """
        marked = parse_markers(prompt)
        cached = self._encodings.get(marked.text)
        if cached is None:
            layout = self.encoder.layout(marked.text)
            if hasattr(self.encoder, "encode_many"):
                requests = [key for key in self._isolation_requests(marked, layout) if self._isolated.get(key) is None]
                encoding, isolated = self.encoder.encode_many(layout, requests)
                for key, item in zip(requests, isolated):
                    self._isolated.put(key, item)
            else:
                encoding = self.encoder.encode(layout)
            cached = (layout, encoding)
            self._encodings.put(marked.text, cached)
        layout, encoding = cached
        return self.patch(encoding.rows, prompt, layout=layout, pooled=encoding.pooled, options=options)

    def _isolation_requests(self, marked, layout: PromptLayout) -> list[tuple[str, int]]:
        """The `(text, first position)` encodings `patch` will ask for: every item at its own position (to
        score it) and, where it may be patched, at the start (where a patch takes it from). An item marked
        ^keep^, or one that nothing could have pulled and that is not marked ~isolate~, is never patched."""
        placed = []
        for item in self._segment(marked):
            rows = layout.rows_for_span(item.start, item.end)
            if not self._placement_problem(rows):
                placed.append((item, rows))
        requests = []
        for index, (item, rows) in enumerate(placed):
            text = layout.text[item.start : item.end]
            requests.append((text, rows[0] % ROWS_PER_CHUNK))
            may_patch = item.marker == ISOLATE or (item.marker != KEEP and self._candidates(index, placed))
            if may_patch:
                requests.append((text, 1))
        return list(dict.fromkeys(requests))

    def patch(
        self,
        encoding: torch.Tensor,
        prompt: str,
        layout: PromptLayout | None = None,
        pooled: torch.Tensor | None = None,
        options: FlowOptions | None = None,
    ) -> FlowResult:
        """Patch an encoding the caller already has (the WebUI's conditioning, or diffusers' prompt_embeds).

        Args:
            encoding (`torch.Tensor` of shape `(77 * chunks, dim)`): the prompt's encoding; it is not modified.
            prompt (`str`): the prompt, markers allowed; the encoding must be of its marker-free text.
            layout (`PromptLayout`, *optional*): which token sits in which row; by default the encoder's own.
            pooled (`torch.Tensor`, *optional*): the pooled vector, passed through (or re-derived).
            options (`FlowOptions`, *optional*): overrides the patcher's options for this call.
        """
        options = options or self.options
        # 1. Parse markers and find the items.
        marked = parse_markers(prompt)
        layout = layout or self.encoder.layout(marked.text)
        if layout.text != marked.text:
            raise EncodingMismatchError("`layout` was made for another text than the prompt without its markers.")
        if encoding.ndim != 2 or encoding.shape[0] != layout.n_rows:
            raise EncodingMismatchError(
                f"`encoding` must have shape ({layout.n_rows}, dim) for {len(layout.chunks)} chunk(s) but has "
                f"shape {tuple(encoding.shape)}."
            )
        items = self._segment(marked)
        threshold = analysis.threshold_for(options.sensitivity) if options.detect else float("inf")
        report = FlowReport(prompt, marked.text, threshold, warnings=list(marked.warnings), options=options.to_dict())

        # 2. Map items to rows; items without rows (or across a chunk boundary) are reported and left alone.
        placed: list[tuple[LexicalItem, list[int]]] = []
        for item in items:
            rows = layout.rows_for_span(item.start, item.end)
            problem = self._placement_problem(rows)
            if problem:
                report.items.append(ItemReport(item, rows, reason=problem))
            else:
                placed.append((item, rows))
        if not placed:
            return FlowResult(encoding, encoding.clone(), report, layout, pooled, pooled)

        # 3. Encode every item alone at the positions it has in the prompt (for scoring).
        texts = [layout.text[item.start : item.end] for item, _ in placed]
        positioned = self._isolated_encodings(texts, [rows[0] % ROWS_PER_CHUNK for _, rows in placed])

        # 4. Score: which item pulled each item, and by how much.
        contextual = [encoding[rows] for _, rows in placed]
        matched = [self._aligned_rows(iso, layout, rows) for iso, (_, rows) in zip(positioned, placed)]
        candidates = [self._candidates(index, placed) for index in range(len(placed))]
        usable = [index for index, rows in enumerate(matched) if rows is not None]
        scores = analysis.leak_scores(
            [contextual[i] for i in usable],
            [matched[i] for i in usable],
            [[usable.index(j) for j in candidates[i] if j in usable] for i in usable],
            self.encoder.causal,
        )
        by_index = dict(zip(usable, scores))

        # 5. Decide, item by item.
        for index, (item, rows) in enumerate(placed):
            entry = ItemReport(item, rows, representative_rows=self._representative(rows, encoding))
            score = by_index.get(index)
            if score is not None:
                entry.leak_score = score.score
                entry.source = placed[usable[score.source]][0] if score.source is not None else None
                pulls = [
                    Pull(placed[usable[j]][0], pull.value, pull.shift, pull.relatedness)
                    for j, pull in score.pulls.items()
                ]
                entry.pulls = sorted(pulls, key=lambda pull: -pull.value)
                entry.presence = analysis.presence(contextual[index], matched[index], self.encoder.causal)
            entry.patched, entry.reason = self._decide(item, score, matched[index] is not None, threshold, options)
            report.items.append(entry)

        # 6. Patch the chosen items with their encoding alone, as the paper does (tokens right after BOS).
        chosen = [entry for entry in report.items if entry.patched]
        isolated = self._isolated_encodings([layout.text[e.item.start : e.item.end] for e in chosen], [1] * len(chosen))
        patched = encoding.clone()
        patched_items: list[tuple[list[int], IsolatedItem]] = []
        for entry, item_alone in zip(chosen, isolated):
            patched = interventions.patch_rows(patched, entry.rows, item_alone.rows)
            patched_items.append((entry.rows, item_alone))
        report.items.sort(key=lambda entry: entry.item.start)

        # 7. Optional: redundant-token removal, then the EOS/padding rows.
        if options.remove_redundant:
            patched = self._remove_redundant(patched, report)
        pooled_patched = pooled
        if options.tail == "rederive" and patched_items:
            patched, pooled_patched = self._rederive_tail(patched, pooled, layout, patched_items, report)
        return FlowResult(encoding, patched, report, layout, pooled, pooled_patched)

    # --- helpers, in the order `patch` uses them ---

    def _segment(self, marked) -> list[LexicalItem]:
        key = (marked.text, marked.spans)
        items = self._items.get(key)
        if items is None:
            items = segment_marked(marked, self.nlp)
            self._items.put(key, items)
        return items

    @staticmethod
    def _placement_problem(rows: list[int]) -> str:
        if not rows:
            return "no tokens in the encoding (truncated or empty)"
        if rows[0] // ROWS_PER_CHUNK != rows[-1] // ROWS_PER_CHUNK:
            return "split across two chunks; each chunk is encoded separately"
        return ""

    def _can_position(self) -> bool:
        return bool(getattr(self.encoder, "supports_positions", False))

    def _isolated_encodings(self, texts: list[str], starts: list[int]) -> list[IsolatedItem]:
        """Each text alone at its start position (1 where the encoder cannot place tokens), from the cache."""
        if not texts:
            return []
        if not self._can_position():
            starts = [1] * len(texts)
        keys = list(zip(texts, starts))
        missing = [key for key in dict.fromkeys(keys) if self._isolated.get(key) is None]
        if missing:
            if self._can_position():
                encoded = self.encoder.encode_isolated([t for t, _ in missing], [s for _, s in missing])
            else:
                encoded = self.encoder.encode_isolated([t for t, _ in missing])
            for key, item in zip(missing, encoded):
                self._isolated.put(key, item)
        return [self._isolated.get(key) for key in keys]

    @staticmethod
    def _aligned_rows(isolated: IsolatedItem, layout: PromptLayout, rows: list[int]) -> torch.Tensor | None:
        """The isolated rows for the item's contextual rows, or None when the tokens differ (then the item
        cannot be patched one to one)."""
        wanted = set(rows)
        ids_in_prompt = [token.id for row, token in layout.token_rows() if row in wanted]
        if ids_in_prompt != isolated.token_ids:
            return None
        return isolated.rows

    def _candidates(self, index: int, placed: list[tuple[LexicalItem, list[int]]]) -> list[int]:
        """Items that could have influenced item `index`: same chunk, and before it in a causal encoder."""
        rows = placed[index][1]
        chunk = rows[0] // ROWS_PER_CHUNK
        found = []
        for other, (_, other_rows) in enumerate(placed):
            if other == index or other_rows[0] // ROWS_PER_CHUNK != chunk:
                continue
            if self.encoder.causal and other_rows[-1] >= rows[0]:
                continue
            found.append(other)
        return found

    def _representative(self, rows: list[int], encoding: torch.Tensor) -> list[int]:
        """The classifier's choice where one is set (at least one row), else the last-token rule."""
        if self.classifier is not None:
            chosen = [row for row, keep in zip(rows, self.classifier.predict(encoding[rows]).tolist()) if keep]
            if chosen:
                return chosen
        return last_token_rows(rows)

    @staticmethod
    def _decide(item, score, aligned: bool, threshold: float, options: FlowOptions) -> tuple[bool, str]:
        if item.marker == KEEP:
            return False, "marked ^keep^"
        if not aligned:
            return False, "its tokens differ when encoded alone; cannot patch one to one"
        if item.marker == ISOLATE:
            return True, "marked ~isolate~"
        if not options.detect:
            return False, "automatic detection is off"
        if score is None or score.source is None:
            return False, "no other item could have pulled it"
        if score.score >= threshold:
            return True, f"leak score {score.score:.3f} >= threshold {threshold:.3f}"
        return False, f"leak score {score.score:.3f} < threshold {threshold:.3f}"

    def _remove_redundant(self, patched: torch.Tensor, report: FlowReport) -> torch.Tensor:
        baseline = self.baseline().rows
        for entry in report.items:
            if not entry.rows or not entry.representative_rows or entry.item.marker == KEEP:
                continue
            entry.removed_rows = [r for r in entry.rows if r not in entry.representative_rows]
            patched = interventions.remove_redundant(patched, entry.rows, entry.representative_rows, baseline)
        return patched

    def _rederive_tail(self, patched, pooled, layout, patched_items, report):
        try:
            rederived = self.encoder.rederive(layout, patched_items)
        except NotImplementedError as error:
            report.warnings.append(f"EOS/padding rows left as encoded: {error}")
            return patched, pooled
        chunks = sorted({rows[0] // ROWS_PER_CHUNK for rows, _ in patched_items})
        tail = [row for chunk in chunks for row in layout.tail_rows(chunk)]
        patched = interventions.patch_rows(patched, tail, rederived.rows[tail])
        if 0 in chunks and rederived.pooled is not None and pooled is not None:
            pooled = rederived.pooled.to(device=pooled.device, dtype=pooled.dtype)
        return patched, pooled
