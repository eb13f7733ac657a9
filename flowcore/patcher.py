"""`FlowPatcher`: from a prompt (and, optionally, the caller's own encoding of it) to a patched encoding.

The data flow is one way: prompt text -> lexical items (spaCy + markers) -> their rows (the tokenizer's
offsets, per chunk) -> isolated encodings (cached) -> leak scores on the encoder's calibrated scale -> a patch
plan -> patched rows.
"""

from __future__ import annotations

import functools
import inspect
import itertools
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import torch

from flowcore import analysis, calibration, interventions
from flowcore.calibration import Calibration, ItemSample
from flowcore.emphasis import check_emphasis, emphasis_scale, encoder_widths, row_weights
from flowcore.encoders.base import Encoding, IsolatedItem, ItemRequest, TextEncoder
from flowcore.errors import EncodingMismatchError, OptionsError, PromptError
from flowcore.items import ISOLATE, KEEP, LexicalItem
from flowcore.language import LanguageGuess, guess_language
from flowcore.layout import PromptLayout
from flowcore.markers import MarkedPrompt, MarkedSpan, parse_markers
from flowcore.options import EVERY, FlowOptions
from flowcore.prompt_syntax import SYNTAX_CHOICES, ParsedPrompt, read_prompt
from flowcore.report import FlowReport, FlowResult, ItemReport, Pull
from flowcore.representative import RepresentativeClassifier, last_token_rows
from flowcore.segmentation import load_nlp, pipeline_for, segment_marked
from flowcore.style_tags import style_tags

logger = logging.getLogger(__name__)


def check_prompt(prompt: object, name: str = "prompt") -> str:
    """`prompt` if it is a string flowcore can read, else `PromptError` naming `name`: not a string (None, an
    int, bytes), or with a NUL character, which tokenizers and spaCy drop with everything after it."""
    if isinstance(prompt, bytes):
        raise PromptError(f"`{name}` must be a str but is bytes ({prompt[:40]!r}); decode it first, e.g. `.decode()`.")
    if not isinstance(prompt, str):
        raise PromptError(f"`{name}` must be a str but is {type(prompt).__name__} ({prompt!r:.40}).")
    if "\x00" in prompt:
        raise PromptError(
            f"`{name}` contains a NUL character (\\x00) at character {prompt.index(chr(0))}; remove it "
            "(it usually comes from reading a binary file or a C string)."
        )
    return prompt


def check_syntax(syntax: object) -> str:
    """`syntax` if it is one of `SYNTAX_CHOICES`, else `OptionsError`."""
    if syntax not in SYNTAX_CHOICES:
        raise OptionsError(f"`syntax` must be one of {SYNTAX_CHOICES} but is {syntax!r}.")
    return syntax


def _locked(method):
    """Run `method` holding the patcher's lock: its caches and lazily computed state are shared by every
    caller, such as the Gradio app's concurrent handlers."""

    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        with self._lock:
            return method(self, *args, **kwargs)

    return wrapper


def _marked_in(parsed: ParsedPrompt, marked: MarkedPrompt) -> MarkedPrompt:
    """The marker spans of `marked` (offsets into the syntax text) moved into `parsed.text`, with the warnings of
    both. A span whose text the syntax removes (the unused part of `[a:b:n]`) is dropped with a warning."""
    spans, warnings = [], [*marked.warnings, *parsed.warnings]
    text = parsed.text
    for span in marked.spans:
        start, end = parsed.span(span.start, span.end)
        while start < end and text[start].isspace():
            start += 1
        while end > start and text[end - 1].isspace():
            end -= 1
        if start == end or not any(char.isalnum() for char in text[start:end]):
            warnings.append(f"The marked text `{marked.text[span.start : span.end]}` is not encoded; marker ignored.")
            continue
        spans.append(MarkedSpan(start, end, span.kind))
    return MarkedPrompt(text, tuple(spans), tuple(warnings))


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


@dataclass
class _Placed:
    """An item with rows in the encoding, and its tokens as requests to encode them alone: at the item's own
    position (to score it) and right after the start token (to patch it with, as the paper does)."""

    item: LexicalItem
    rows: list[int]
    request: ItemRequest
    patch_request: ItemRequest


def _item_request(layout: PromptLayout, rows: list[int], start: int | None = None) -> ItemRequest:
    """The item on those rows as a request to encode it alone: the prompt's own token ids and the text they
    cover, first token at `start` (default: the position it has in the prompt)."""
    wanted = set(rows)
    tokens = [token for row, token in layout.token_rows() if row in wanted]
    text = layout.text[tokens[0].start : tokens[-1].end]
    return ItemRequest(text, tuple(t.id for t in tokens), layout.position(rows[0]) if start is None else start)


def _chunk_requests(layout: PromptLayout) -> list[ItemRequest]:
    """Each chunk's tokens as one request to encode them alone at their own positions (chunks with tokens only)."""
    rows_by_chunk: dict[int, list[int]] = {}
    for row, _ in layout.token_rows():
        rows_by_chunk.setdefault(layout.chunk_of(row), []).append(row)
    return [_item_request(layout, rows) for rows in rows_by_chunk.values()]


def _no_progress(done: int, total: int) -> None:
    """The calibration progress of a patcher that no front end watches."""


def _compare(score: float, threshold: float) -> str:
    """`score >= threshold` or `<`, with enough decimals that the printed numbers show the difference."""
    sign = ">=" if score >= threshold else "<"
    for decimals in range(3, 9):
        if f"{score:.{decimals}f}" != f"{threshold:.{decimals}f}" or decimals == 8:
            return f"{score:.{decimals}f} {sign} threshold {threshold:.{decimals}f}"
    raise AssertionError  # unreachable: the loop returns at 8 decimals


class FlowPatcher:
    """Find the items of a prompt whose encoding leaked toward another item, and patch them.

    ```python
    patcher = FlowPatcher(ClipEncoder(tokenizer, text_model))
    result = patcher.run("a crosswalk next to a bus station with a ~standing zebra~")
    result.patched  # (77, 768), ready for `prompt_embeds=result.patched[None]`
    print(result.report.summary())
    ```

    Prompts are read in the AUTOMATIC1111 WebUI's syntax by default (`syntax="webui"`: `(word:1.3)`, `[word]`,
    `BREAK`, `\\(`; see `flowcore.prompt_syntax`), so a prompt copied from the WebUI gives the WebUI's items and
    rows, with emphasis applied to the rows as `emphasis` says ("original", "no norm", "ignore": the WebUI's
    modes); `syntax="plain"` reads every character literally (only `BREAK` still breaks a chunk).

    Scores are read on the encoder's own scale (`flowcore.calibration`): the first automatic detection
    calibrates the encoder on built-in neutral prompts (5 s for an SD 1.5-size encoder on an idle 2-core CPU)
    and caches that on disk; pass `calibration=` to use one you have, and `calibration_progress=` to follow a
    calibration (`flowcore.progress`: a progress bar, a log line). Isolated encodings, segmentations and prompt
    encodings are cached (`cache_size` each), so a repeated prompt costs lookups only. Call `clear_cache()`
    when the encoder's weights change (a LoRA).
    """

    def __init__(
        self,
        encoder: TextEncoder,
        options: FlowOptions | None = None,
        nlp=None,
        classifier: RepresentativeClassifier | None = None,
        cache_size: int = 512,
        calibration: Calibration | None = None,
        syntax: str = "webui",
        emphasis: str = "original",
        calibration_progress: Callable[[int, int], None] | None = None,
    ) -> None:
        if options is not None and not isinstance(options, FlowOptions):
            raise OptionsError(f"`options` must be a FlowOptions but is {type(options).__name__}.")
        self.encoder = encoder
        self.options = options or FlowOptions()
        self.syntax = check_syntax(syntax)
        self.emphasis = check_emphasis(emphasis)
        self._lock = threading.RLock()
        self.nlp = nlp
        self.classifier = classifier  # finds representative tokens; without one, each item's last token
        self._isolated = _LruCache(cache_size)
        self._items = _LruCache(cache_size)
        self._encodings = _LruCache(cache_size)
        self._readers = _LruCache(cache_size)
        self._baseline: Encoding | None = None
        self._calibration = calibration
        self.calibration_progress = calibration_progress  # (prompts done, prompts in all) while calibrating

    @_locked
    def clear_cache(self) -> None:
        """Forget every cached encoding, e.g. after the encoder's weights changed (a LoRA); the calibration too
        when the encoder's identity changed with them (it is measured, or loaded, again when next needed)."""
        for cache in (self._isolated, self._items, self._encodings, self._readers):
            cache.data.clear()
        self._baseline = None
        calibrated = self._calibration
        if calibrated is not None and calibrated.key and not calibrated.key.startswith(self.encoder.identity()):
            self._calibration = None

    @_locked
    def baseline(self) -> Encoding:
        """The clean-pad baseline: the empty prompt padded to one chunk, `(chunk rows, dim)` (computed once)."""
        if self._baseline is None:
            self._baseline = self.encoder.empty()
        return self._baseline

    @property
    def calibration(self) -> Calibration:
        """The encoder's calibration: given, cached on disk, or measured now (see `calibrate`)."""
        with self._lock:
            if self._calibration is None:
                self._calibration = self.calibrate()
        return self._calibration

    @_locked
    def calibrate(self, use_cache: bool = True) -> Calibration:
        """Measure the encoder on the built-in calibration prompts (or load that from the disk cache).

        1. Lay out and segment every prompt.
        2. Encode the prompts a batch at a time (`_calibration_encodings`), telling `calibration_progress`.
        3. Keep every item's contextual and isolated vectors, and every token row.
        4. Fit the statistics and the null distribution (`flowcore.calibration.fit`); cache them on disk.
        """
        nlp = self.nlp or load_nlp()
        nlp_name = f"{nlp.meta.get('lang', '')}_{nlp.meta.get('name', '')}-{nlp.meta.get('version', '')}"
        key = calibration.calibration_key(self.encoder.identity(), nlp_name)
        if use_cache and (cached := calibration.load_cached(key)) is not None:
            return cached

        # 1. Lay out and segment every prompt (a scratch patcher keeps this patcher's caches for the user).
        scratch = FlowPatcher(self.encoder, nlp=nlp, cache_size=64)
        scoring_only = FlowOptions(sensitivity=0.0)  # detection on, nothing to patch: items alone at their positions
        prompts = []
        for prompt in calibration.calibration_prompts():
            marked = parse_markers(prompt)
            layout = scratch._layout(marked.text, None)
            prompts.append((layout, scratch._placed(scratch._segment(marked, scoring_only), layout)))

        # 2. and 3. Encode a batch of prompts at a time; keep their items' vectors and their token rows.
        # the front ends say this once each (`calibration_progress`, `flowcore.progress`): a debug line here
        logger.debug("Calibrating the text encoder on %d prompts (cache key %s)", len(prompts), key)
        started = time.perf_counter()
        progress = self.calibration_progress or _no_progress
        progress(0, len(prompts))
        token_rows, samples = [], []
        for first in range(0, len(prompts), calibration.PROMPTS_PER_BATCH):
            laid = prompts[first : first + calibration.PROMPTS_PER_BATCH]
            encoded = scratch._calibration_encodings(laid)
            for number, ((layout, placed), (rows, alone)) in enumerate(zip(laid, encoded), start=first):
                if not all(entry.item.tag for entry in placed):  # statistics from sentences (see `calibration`)
                    token_rows.append(rows.float().cpu())
                samples += scratch._calibration_samples(number, layout, placed, rows, alone, len(samples))
            progress(first + len(laid), len(prompts))

        # 4. Fit and cache.
        fitted = calibration.fit(torch.cat(token_rows), samples, key)
        calibration.store(fitted)
        logger.debug("Calibrated in %.1f s; cached in %s", time.perf_counter() - started, calibration.cache_dir())
        return fitted

    @_locked
    def isolated(self, text: str, start: int | None = None) -> IsolatedItem:
        """`text` encoded on its own (cached), its first token at `start` (default: right after the start
        token, as when the text is the whole prompt; the rows an item of that text is patched with)."""
        layout = self.encoder.layout(text)
        rows = [row for row, _ in layout.token_rows() if layout.chunk_of(row) == 0]
        if not rows:
            raise EncodingMismatchError(f"{text!r} has no tokens to encode.")
        return self._isolated_encodings([_item_request(layout, rows, start if start is not None else layout.leading)])[
            0
        ]

    @_locked
    def isolated_at(self, layout: PromptLayout, rows: list[int]) -> IsolatedItem:
        """The tokens on `rows` of a laid-out prompt encoded alone at their own positions (where the encoder can
        place them): what an item on those rows is scored against (cached)."""
        entry = self._place(LexicalItem("", 0, 0), rows, layout)
        return self._isolated_encodings([self._scoring_request(entry)])[0]

    @_locked
    def run(self, prompt: str, options: FlowOptions | None = None, syntax: str | None = None) -> FlowResult:
        """Encode `prompt` (markers allowed) with the encoder, then patch it (see `patch`).

        `syntax` ("webui" or "plain", default the patcher's) says how to read the prompt; with "webui" the
        result's encodings carry the emphasis (`emphasis`), patched rows included. Encoders that can
        (`encode_many`) encode the prompt and every item it needs alone (at its own positions to score it, at the
        start to patch it) in a single pass; `patch` then finds them all in the cache.
        """
        # 1. Check inputs.
        check_prompt(prompt)
        options = self._check_options(options)
        syntax = self.syntax if syntax is None else check_syntax(syntax)

        # 2. Read markers, then the prompt syntax; encode without emphasis and patch.
        raw = parse_markers(prompt)
        parsed = read_prompt(raw.text, syntax)
        marked = _marked_in(parsed, raw)
        layout, encoding = self._encoded(marked, options, parsed)
        result = self._patch(encoding.rows, prompt, marked, layout, encoding.pooled, options)
        result.report.options["syntax"] = syntax

        # 3. Emphasis, with the factors of the prompt's own encoding on its patched rows too.
        if parsed.has_emphasis and self.emphasis != "ignore":
            weights = row_weights(layout, parsed)
            widths = encoder_widths(self.encoder, result.original.shape[1])
            scale = emphasis_scale(result.original, weights, layout.format.rows, widths, self.emphasis)
            scale = scale.to(result.original.dtype)
            result.original, result.patched = result.original * scale, result.patched * scale
            result.report.options["emphasis"] = self.emphasis
        return result

    @_locked
    def patch(
        self,
        encoding: torch.Tensor | Encoding,
        prompt: str,
        layout: PromptLayout | None = None,
        pooled: torch.Tensor | None = None,
        options: FlowOptions | None = None,
        force: Mapping[tuple[int, int], str] = MappingProxyType({}),
    ) -> FlowResult:
        """Patch an encoding the caller already has (the WebUI's conditioning, or diffusers' prompt_embeds).

        Args:
            encoding (`torch.Tensor` of shape `(layout.n_rows, dim)`, or an `Encoding`): the prompt's encoding
                (rows; an `Encoding`'s pooled vector is used where `pooled` is not given); it is not modified.
            prompt (`str`): the prompt, markers allowed; the encoding must be of its marker-free text.
            layout (`PromptLayout`, *optional*): which token sits in which row; by default the encoder's own.
            pooled (`torch.Tensor`, *optional*): the pooled vector, passed through (or re-derived).
            options (`FlowOptions`, *optional*): overrides the patcher's options for this call.
            force (`dict`, *optional*): items to patch whatever this encoder's scores say, by their span
                `(start, end)` in the marker-free text, with the reason (another encoder of the same prompt
                flagged them: see `flowcore.joint`); items marked ^keep^ stay unpatched.
        """
        check_prompt(prompt)
        options = self._check_options(options)
        if isinstance(encoding, Encoding):
            encoding, pooled = encoding.rows, encoding.pooled if pooled is None else pooled
        if not isinstance(encoding, torch.Tensor):
            raise EncodingMismatchError(
                f"`encoding` must be a torch.Tensor of rows or an Encoding but is {type(encoding).__name__}."
            )
        marked = parse_markers(prompt)
        layout = layout or self.encoder.layout(marked.text)
        return self._patch(encoding, prompt, marked, layout, pooled, options, force)

    def _check_options(self, options: FlowOptions | None) -> FlowOptions:
        if options is not None and not isinstance(options, FlowOptions):
            raise OptionsError(f"`options` must be a FlowOptions but is {type(options).__name__}.")
        return options or self.options

    def _patch(
        self,
        encoding: torch.Tensor,
        prompt: str,
        marked: MarkedPrompt,
        layout: PromptLayout,
        pooled: torch.Tensor | None,
        options: FlowOptions,
        force: Mapping[tuple[int, int], str] = MappingProxyType({}),
    ) -> FlowResult:
        """`patch` once the markers are read (`marked.text` is the encoded text)."""
        # 1. Check the layout and the encoding; find the items.
        if layout.text != marked.text:
            raise EncodingMismatchError("`layout` was made for another text than the prompt without its markers.")
        if encoding.ndim != 2 or encoding.shape[0] != layout.n_rows:
            raise EncodingMismatchError(
                f"`encoding` must have shape ({layout.n_rows}, dim) for {len(layout.chunks)} chunk(s) but has "
                f"shape {tuple(encoding.shape)}."
            )
        share = analysis.patch_share(options.sensitivity) if options.detect else 0.0
        report = FlowReport(
            prompt, marked.text, float("inf"), share, warnings=list(marked.warnings), options=options.to_dict()
        )

        # 2. Map items to rows; items without rows (or across a chunk boundary) are reported and left alone. Items of
        #    a prompt in a language no installed pipeline reads are reported, and only patched where marked.
        unread = self._reader(marked.text)[1] if options.parse else None
        if unread is not None:
            report.warnings.append(
                f"The prompt reads as {unread.name} ({unread.evidence}) and segmentation is English, so no item found "
                f"in it is patched. Mark items with ~...~ to patch them, or install a {unread.name} spaCy pipeline "
                f"(`{unread.code}_core_news_sm` or `{unread.code}_core_web_sm`, or set "
                f"FLOWCORE_SPACY_MODEL_{unread.code.upper()} to one)."
            )
        placed = []
        for item in self._segment(marked, options):
            rows = layout.item_rows(item.start, item.end)
            problem = self._placement_problem(rows, layout)
            if problem:
                report.items.append(ItemReport(item, rows, reason=problem))
            else:
                placed.append(self._place(item, rows, layout))
        if not placed:
            return FlowResult(encoding, encoding.clone(), report, layout, pooled, pooled)

        # 3. Automatic detection: score every item against its encoding alone at its own positions, on the
        #    encoder's calibrated scale (the calibration is measured once, the first time it is needed).
        scores: dict[int, analysis.LeakScore] = {}
        if options.detect:
            contextual, matched, candidates = self._measure(encoding, layout, placed)
            usable = [index for index, rows in enumerate(matched) if rows is not None]
            sources = [[j for j in candidates[i] if j in usable] for i in usable]
            if any(sources):
                report.threshold = self.calibration.threshold(options.sensitivity)
                if any(entry.item.tag for entry in placed):
                    report.tag_threshold = self.calibration.threshold(options.sensitivity, tag=True)
                found = analysis.leak_scores(
                    [contextual[i] for i in usable],
                    [matched[i] for i in usable],
                    [[usable.index(j) for j in others] for others in sources],
                    self.encoder.causal,
                    self.calibration,
                )
                for n, score in enumerate(found):  # back from indices into `usable` to indices into `placed`
                    if score.source is not None:
                        pulls = {usable[j]: pull for j, pull in score.pulls.items()}
                        scores[usable[n]] = analysis.LeakScore(score.score, usable[score.source], pulls)

        # 4. Decide, item by item.
        entries = []
        for index, entry in enumerate(placed):
            item_report = ItemReport(entry.item, entry.rows, representative_rows=self._representative(entry, encoding))
            score = scores.get(index)
            if score is not None:
                item_report.leak_score = score.score
                item_report.source = placed[score.source].item
                item_report.share_of_unrelated = self.calibration.share_at_least(score.score, tag=entry.item.tag)
                pulls = [Pull(placed[j].item, p.value, p.similarity, p.relatedness) for j, p in score.pulls.items()]
                item_report.pulls = sorted(pulls, key=lambda pull: -pull.value)
            if options.detect and matched[index] is not None:
                item_report.presence = analysis.presence(contextual[index], matched[index], self.encoder.causal)
            threshold = report.threshold_for(entry.item)
            item_report.patched, item_report.reason = self._decide(entry, score, threshold, options, unread)
            span = (entry.item.start, entry.item.end)
            if span in force and not item_report.patched and entry.item.marker != KEEP:
                item_report.patched, item_report.reason = True, force[span]
            entries.append(item_report)
        report.items += entries

        # 5. Patch the chosen items with their encoding alone, as the paper does (right after the start token).
        chosen = [(entry, item_report) for entry, item_report in zip(placed, entries) if item_report.patched]
        isolated = self._isolated_encodings([entry.patch_request for entry, _ in chosen])
        patched = encoding.clone()
        patched_items: list[tuple[list[int], IsolatedItem]] = []
        for (entry, item_report), item_alone in zip(chosen, isolated):
            if list(item_alone.token_ids) != list(entry.patch_request.token_ids):
                item_report.patched = False
                item_report.reason = self._mismatch(entry.patch_request, item_alone)
                continue
            patched = interventions.patch_rows(patched, entry.rows, item_alone.rows)
            patched_items.append((entry.rows, item_alone))
        report.items.sort(key=lambda entry: entry.item.start)

        # 6. Optional: redundant-token removal, then the end-token/padding rows.
        if options.remove_redundant:
            patched = self._remove_redundant(patched, report)
        pooled_patched = pooled
        if options.tail == "rederive" and patched_items:
            patched, pooled_patched = self._rederive_tail(patched, pooled, layout, patched_items, report)
        return FlowResult(encoding, patched, report, layout, pooled, pooled_patched)

    # --- helpers, in the order `run` and `patch` use them ---

    def _encoded(
        self, marked: MarkedPrompt, options: FlowOptions, parsed: ParsedPrompt | None = None
    ) -> tuple[PromptLayout, Encoding]:
        """The prompt's layout and encoding without emphasis (cached). Encoders with `encode_many` also encode,
        in the same pass, every item alone that `patch` will ask for, so that `patch` finds them in the cache.
        With `parsed` (the WebUI's syntax), each run of equal emphasis is tokenized on its own, as the WebUI does."""
        segments = parsed.segments() if parsed is not None else None
        key = (marked.text, None if segments is None else tuple(tuple(spans) for spans in segments))
        cached = self._encodings.get(key)
        if cached is not None:
            return cached
        layout = self._layout(marked.text, segments)
        if hasattr(self.encoder, "encode_many"):
            placed = self._placed(self._segment(marked, options), layout)
            wanted = [
                request for request in self._requests(placed, layout, options) if self._isolated.get(request) is None
            ]
            encoding, isolated = self.encoder.encode_many(layout, wanted)
            for request, item in zip(wanted, isolated):
                self._isolated.put(request, item)
        else:
            encoding = self.encoder.encode(layout)
        self._encodings.put(key, (layout, encoding))
        return layout, encoding

    def _layout(self, text: str, segments: list[list[tuple[int, int]]] | None) -> PromptLayout:
        """The encoder's layout of `text`, tokenizing `segments` one by one where the encoder can (hosts whose
        `layout` takes text only get the text)."""
        if segments is not None and "segments" in inspect.signature(self.encoder.layout).parameters:
            return self.encoder.layout(text, segments=segments)
        return self.encoder.layout(text)

    @staticmethod
    def _place(item: LexicalItem, rows: list[int], layout: PromptLayout) -> _Placed:
        return _Placed(item, rows, _item_request(layout, rows), _item_request(layout, rows, layout.leading))

    def _placed(self, items: Sequence[LexicalItem], layout: PromptLayout) -> list[_Placed]:
        placed = []
        for item in items:
            rows = layout.item_rows(item.start, item.end)
            if not self._placement_problem(rows, layout):
                placed.append(self._place(item, rows, layout))
        return placed

    def _requests(self, placed: list[_Placed], layout: PromptLayout, options: FlowOptions) -> list[ItemRequest]:
        """The encodings alone that `patch` will ask for: with detection on, every item at its own position
        (to score it); and at the start, every item that may be patched (to patch it). An item marked
        ^keep^, a style tag (unless `patch_style_tags`), or, in automatic mode, one that nothing could have
        pulled (or at sensitivity 0), is never patched unless it is marked ~isolate~."""
        requests = []
        for index, entry in enumerate(placed):
            if options.detect:
                requests.append(self._scoring_request(entry))
            item = entry.item
            patchable = item.marker != KEEP and (options.patch_style_tags or not item.style)
            automatic = options.detect and options.sensitivity > 0 and patchable
            scorable = automatic and self._candidates(index, placed, layout)
            if item.marker == ISOLATE or scorable or (options.mode == EVERY and patchable):
                requests.append(entry.patch_request)
        return list(dict.fromkeys(requests))

    def _scoring_request(self, entry: _Placed) -> ItemRequest:
        """The item alone at its own positions, where the encoder can place it (else right after the start)."""
        return entry.request if self._can_position() else entry.patch_request

    def _segment(self, marked: MarkedPrompt, options: FlowOptions | None = None) -> list[LexicalItem]:
        """The prompt's items (cached), found by the pipeline of its language (`_reader`); in markers-only mode
        without redundant-token removal only its marked spans (no spaCy run). Items that are style tags (the
        built-in list, `$FLOWCORE_STYLE_TAGS` and `options.style_tags`) are marked as such."""
        options = options or self.options
        parse = options.parse or options.remove_redundant
        tags = style_tags(options.style_tags)
        key = (marked.text, marked.spans, parse, tags)
        items = self._items.get(key)
        if items is None:
            nlp = self._reader(marked.text)[0] if parse else self.nlp
            items = segment_marked(marked, nlp, parse, tags)
            self._items.put(key, items)
        return items

    def _reader(self, text: str) -> tuple[Any, LanguageGuess | None]:
        """The spaCy pipeline that reads `text` (`flowcore.segmentation.pipeline_for` its language, as
        `flowcore.language` guesses it), and None; or, where no pipeline of that language is installed, the
        English one and the guess, whose items are then not to be patched (cached per text)."""
        found = self._readers.get(text)
        if found is None:
            guess = guess_language(text)
            nlp = pipeline_for(guess.code, self.nlp)
            found = (nlp, None) if nlp is not None else (pipeline_for("en", self.nlp), guess)
            self._readers.put(text, found)
        return found

    @staticmethod
    def _placement_problem(rows: list[int], layout: PromptLayout) -> str:
        if not rows:
            return "no tokens in the encoding (truncated or empty)"
        if layout.chunk_of(rows[0]) != layout.chunk_of(rows[-1]):
            return "split across two chunks; each chunk is encoded separately"
        return ""

    def _can_position(self) -> bool:
        return bool(getattr(self.encoder, "supports_positions", False))

    def _isolated_encodings(self, requests: list[ItemRequest]) -> list[IsolatedItem]:
        """Each request's encoding alone, from the cache or encoded now (all missing ones in one call)."""
        missing = [request for request in dict.fromkeys(requests) if self._isolated.get(request) is None]
        if missing:
            for request, item in zip(missing, self.encoder.encode_isolated(missing)):
                self._isolated.put(request, item)
        return [self._isolated.get(request) for request in requests]

    def _measure(
        self, encoding: torch.Tensor, layout: PromptLayout, placed: list[_Placed]
    ) -> tuple[list[torch.Tensor], list[torch.Tensor | None], list[list[int]]]:
        """Per item: its contextual rows, its rows alone at its own positions (None where the tokens differ),
        and the items that could have influenced it."""
        alone = self._isolated_encodings([self._scoring_request(entry) for entry in placed])
        contextual = [encoding[entry.rows] for entry in placed]
        matched = [
            item.rows if list(item.token_ids) == list(entry.request.token_ids) else None
            for item, entry in zip(alone, placed)
        ]
        candidates = [self._candidates(index, placed, layout) for index in range(len(placed))]
        return contextual, matched, candidates

    def _calibration_encodings(
        self, prompts: Sequence[tuple[PromptLayout, list[_Placed]]]
    ) -> list[tuple[torch.Tensor, list[IsolatedItem]]]:
        """Per laid-out calibration prompt: its token rows `(tokens, dim)`, in the order of `layout.token_rows()`,
        and each of its items alone at its own positions.

        In a causal encoder a chunk's token rows depend only on the start token and the tokens themselves, as an
        item's do: each chunk is encoded as one more item alone (`_chunk_requests`), so its end token and padding
        are never computed and the prompts of a batch share forward calls. A bidirectional encoder encodes each
        prompt whole, its items alone in one call, as `run` does."""
        items = [[self._scoring_request(entry) for entry in placed] for _, placed in prompts]
        if not self.encoder.causal:
            return [
                (
                    self.encoder.encode(layout).rows[[row for row, _ in layout.token_rows()]],
                    self._isolated_encodings(requests),
                )
                for (layout, _), requests in zip(prompts, items)
            ]
        chunks = [_chunk_requests(layout) for layout, _ in prompts]
        encoded = iter(self.encoder.encode_isolated([*itertools.chain(*chunks), *itertools.chain(*items)]))
        token_rows = [torch.cat([next(encoded).rows for _ in requests]) for requests in chunks]
        return [(rows, [next(encoded) for _ in requests]) for rows, requests in zip(token_rows, items)]

    def _calibration_samples(
        self,
        number: int,
        layout: PromptLayout,
        placed: list[_Placed],
        rows: torch.Tensor,
        alone: list[IsolatedItem],
        first: int,
    ) -> list[ItemSample]:
        """Calibration prompt `number`'s items as samples, the first of them sample `first`: each item's vector in
        the prompt (from its token `rows`, see `_calibration_encodings`) and alone at its own positions, and the
        samples that could have pulled it. Items whose tokens alone differ from the prompt's are left out."""
        causal = self.encoder.causal
        order = {row: index for index, (row, _) in enumerate(layout.token_rows())}  # layout row -> index in `rows`
        usable = [
            index
            for index, (entry, item) in enumerate(zip(placed, alone))
            if list(item.token_ids) == list(entry.request.token_ids)
        ]
        samples = []
        for index in usable:
            entry = placed[index]
            candidates = self._candidates(index, placed, layout)
            samples.append(
                ItemSample(
                    analysis.item_vector(rows[[order[row] for row in entry.rows]], causal).float().cpu(),
                    analysis.item_vector(alone[index].rows, causal).float().cpu(),
                    number,
                    tuple(first + usable.index(j) for j in candidates if j in usable),
                    entry.item.tag,
                )
            )
        return samples

    def _candidates(self, index: int, placed: list[_Placed], layout: PromptLayout) -> list[int]:
        """Items that could have influenced item `index`: same chunk, and before it in a causal encoder."""
        rows = placed[index].rows
        found = []
        for other, entry in enumerate(placed):
            if other == index or layout.chunk_of(entry.rows[0]) != layout.chunk_of(rows[0]):
                continue
            if self.encoder.causal and entry.rows[-1] >= rows[0]:
                continue
            found.append(other)
        return found

    def _representative(self, entry: _Placed, encoding: torch.Tensor) -> list[int]:
        """The classifier's choice where one is set (at least one row), else the last-token rule."""
        rows = entry.rows
        if self.classifier is not None:
            chosen = [row for row, keep in zip(rows, self.classifier.predict(encoding[rows]).tolist()) if keep]
            if chosen:
                return chosen
        return last_token_rows(rows)

    def _decide(
        self, entry: _Placed, score, threshold: float, options: FlowOptions, unread: LanguageGuess | None = None
    ) -> tuple[bool, str]:
        item = entry.item
        if item.marker == KEEP:
            return False, "marked ^keep^"
        if item.marker == ISOLATE:
            return True, "marked ~isolate~"
        if unread is not None:
            return False, f"the prompt reads as {unread.name}, which segmentation cannot read: mark it ~...~ to patch"
        if item.style and not options.patch_style_tags:
            return False, "a quality/style tag: never patched unless `patch_style_tags` is on"
        if options.mode == EVERY:
            return True, "every-item mode"
        if not options.detect:
            return False, "automatic detection is off"
        if score is None:
            alone = self._isolated.get(self._scoring_request(entry))
            if alone is not None and list(alone.token_ids) != list(entry.request.token_ids):
                return False, self._mismatch(entry.request, alone)
            where = "before it in its chunk" if self.encoder.causal else "in its chunk"
            return False, f"no other item {where} could have pulled it"
        verdict = _compare(score.score, threshold)
        if score.score >= threshold:
            return True, f"leak score {verdict}"
        return False, f"leak score {verdict}"

    @staticmethod
    def _mismatch(request: ItemRequest, alone: IsolatedItem) -> str:
        return (
            f"encoded alone, {request.text!r} gives tokens {list(alone.token_ids)} but the prompt has "
            f"{list(request.token_ids)}; cannot patch one to one"
        )

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
            report.warnings.append(f"End-token/padding rows left as encoded: {error}")
            return patched, pooled
        chunks = sorted({layout.chunk_of(rows[0]) for rows, _ in patched_items})
        tail = [row for chunk in chunks for row in layout.tail_rows(chunk)]
        patched = interventions.patch_rows(patched, tail, rederived.rows[tail])
        if 0 in chunks and rederived.pooled is not None and pooled is not None:
            pooled = rederived.pooled.to(device=pooled.device, dtype=pooled.dtype)
        return patched, pooled
