"""`FlowPatcher`: from a prompt (and, optionally, the caller's own encoding of it) to a patched encoding.

The data flow is one way, each step in the module that owns it: prompt text (`flowcore.prompts.reading`) ->
lexical items (`flowcore.prompts.segmentation`: spaCy + markers) -> their rows (`flowcore.encoders.placement`)
-> isolated encodings (cached) -> leak scores on the encoder's calibrated scale (`flowcore.detection`) -> a
decision per item (`flowcore.patching.decision`) -> patched rows (`flowcore.patching.interventions`, `finish`).
"""

from __future__ import annotations

import functools
import inspect
import logging
import threading
import time
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any

import torch

from flowcore.detection import calibration, leakage, measuring
from flowcore.detection.calibration import Calibration
from flowcore.detection.representative import RepresentativeClassifier, representative_rows
from flowcore.encoders.base import Encoding, IsolatedItem, ItemRequest, TextEncoder
from flowcore.encoders.emphasis import check_emphasis, emphasis_scale, encoder_widths, row_weights
from flowcore.encoders.layout import PromptLayout
from flowcore.encoders.placement import (
    PlacedItem,
    candidates,
    item_request,
    mismatch,
    place,
    place_all,
    placement_problem,
    scoring_request,
)
from flowcore.errors import EncodingMismatchError, OptionsError
from flowcore.patching import finish, interventions
from flowcore.patching.cache import LruCache
from flowcore.patching.decision import decide, may_patch
from flowcore.patching.options import FlowOptions
from flowcore.patching.report import FlowReport, FlowResult, ItemReport, Pull
from flowcore.prompts.items import KEEP, LexicalItem
from flowcore.prompts.language import LanguageGuess
from flowcore.prompts.markers import MarkedPrompt, parse_markers
from flowcore.prompts.prompt_syntax import ParsedPrompt
from flowcore.prompts.reading import check_prompt, check_syntax, read_marked
from flowcore.prompts.segmentation import load_nlp, reader_for, segment_marked, unread_warning
from flowcore.prompts.style_tags import style_tags

logger = logging.getLogger(__name__)


def _locked(method):
    """Run `method` holding the patcher's lock: its caches and lazily computed state are shared by every
    caller, such as the Gradio app's concurrent handlers."""

    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        with self._lock:
            return method(self, *args, **kwargs)

    return wrapper


def _no_progress(done: int, total: int) -> None:
    """The calibration progress of a patcher that no front end watches."""


class FlowPatcher:
    """Find the items of a prompt whose encoding leaked toward another item, and patch them.

    ```python
    patcher = FlowPatcher(ClipEncoder(tokenizer, text_model))
    result = patcher.run("a crosswalk next to a bus station with a ~standing zebra~")
    result.patched  # (77, 768), ready for `prompt_embeds=result.patched[None]`
    print(result.report.summary())
    ```

    Prompts are read in the AUTOMATIC1111 WebUI's syntax by default (`syntax="webui"`: `(word:1.3)`, `[word]`,
    `BREAK`, `\\(`; see `flowcore.prompts.prompt_syntax`), so a prompt copied from the WebUI gives the WebUI's items and
    rows, with emphasis applied to the rows as `emphasis` says ("original", "no norm", "ignore": the WebUI's
    modes); `syntax="plain"` reads every character literally (only `BREAK` still breaks a chunk).

    Scores are read on the encoder's own scale (`flowcore.detection.calibration`): the first automatic detection
    calibrates the encoder on built-in neutral prompts (5 s for an SD 1.5-size encoder on an idle 2-core CPU)
    and caches that on disk; pass `calibration=` to use one you have, and `calibration_progress=` to follow a
    calibration (`flowcore.detection.progress`: a progress bar, a log line). Isolated encodings, segmentations and
    prompt encodings are cached (`cache_size` each), so a repeated prompt costs lookups only. Call `clear_cache()`
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
        self._isolated = LruCache(cache_size)
        self._items = LruCache(cache_size)
        self._encodings = LruCache(cache_size)
        self._readers = LruCache(cache_size)
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
        2. Encode the prompts a batch at a time (`measuring.encode_prompts`), telling `calibration_progress`.
        3. Keep every item's contextual and isolated vectors, and every token row.
        4. Fit the statistics and the null distribution (`flowcore.detection.calibration.fit`); cache them on disk.
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
            prompts.append((layout, place_all(scratch._segment(marked, scoring_only), layout)))

        # 2. and 3. Encode a batch of prompts at a time; keep their items' vectors and their token rows.
        # the front ends say this once each (`calibration_progress`, `flowcore.detection.progress`): a debug line here
        logger.debug("Calibrating the text encoder on %d prompts (cache key %s)", len(prompts), key)
        started = time.perf_counter()
        progress = self.calibration_progress or _no_progress
        progress(0, len(prompts))
        token_rows, samples = [], []
        for first in range(0, len(prompts), calibration.PROMPTS_PER_BATCH):
            laid = prompts[first : first + calibration.PROMPTS_PER_BATCH]
            encoded = measuring.encode_prompts(self.encoder, laid, scratch._isolated_encodings)
            for number, (prompt, (rows, alone)) in enumerate(zip(laid, encoded), start=first):
                if not all(entry.item.tag for entry in prompt[1]):  # statistics from sentences (see `calibration`)
                    token_rows.append(rows.float().cpu())
                samples += measuring.item_samples(number, prompt, rows, alone, len(samples), self.encoder.causal)
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
        request = item_request(layout, rows, start if start is not None else layout.leading)
        return self._isolated_encodings([request])[0]

    @_locked
    def isolated_at(self, layout: PromptLayout, rows: list[int]) -> IsolatedItem:
        """The tokens on `rows` of a laid-out prompt encoded alone at their own positions (where the encoder can
        place them): what an item on those rows is scored against (cached)."""
        entry = place(LexicalItem("", 0, 0), rows, layout)
        return self._isolated_encodings([scoring_request(entry, self._can_position())])[0]

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
        marked, parsed = read_marked(prompt, syntax)
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
                flagged them: see `flowcore.patching.joint`); items marked ^keep^ stay unpatched.
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
        # 1. Check the layout and the encoding; start the report.
        if layout.text != marked.text:
            raise EncodingMismatchError("`layout` was made for another text than the prompt without its markers.")
        if encoding.ndim != 2 or encoding.shape[0] != layout.n_rows:
            raise EncodingMismatchError(
                f"`encoding` must have shape ({layout.n_rows}, dim) for {len(layout.chunks)} chunk(s) but has "
                f"shape {tuple(encoding.shape)}."
            )
        share = leakage.patch_share(options.sensitivity) if options.detect else 0.0
        report = FlowReport(
            prompt, marked.text, float("inf"), share, warnings=list(marked.warnings), options=options.to_dict()
        )

        # 2. Find the items and map them to rows; items without rows (or across a chunk boundary) are reported and
        #    left alone. Items of a prompt in a language no installed pipeline reads are reported, and only patched
        #    where marked.
        unread = self._reader(marked.text)[1] if options.parse else None
        if unread is not None:
            report.warnings.append(unread_warning(unread))
        placed = []
        for item in self._segment(marked, options):
            rows = layout.item_rows(item.start, item.end)
            problem = placement_problem(rows, layout)
            if problem:
                report.items.append(ItemReport(item, rows, reason=problem))
            else:
                placed.append(place(item, rows, layout))
        if not placed:
            return FlowResult(encoding, encoding.clone(), report, layout, pooled, pooled)

        # 3. Automatic detection: score every item against its encoding alone at its own positions, on the
        #    encoder's calibrated scale (the calibration is measured once, the first time it is needed).
        scores: dict[int, leakage.LeakScore] = {}
        if options.detect:
            contextual, matched, sources = self._measure(encoding, layout, placed)
            sources = leakage.scorable(matched, sources)
            if any(sources):
                report.threshold = self.calibration.threshold(options.sensitivity)
                if any(entry.item.tag for entry in placed):
                    report.tag_threshold = self.calibration.threshold(options.sensitivity, tag=True)
                scores = leakage.leak_scores_by_item(
                    contextual, matched, sources, self.encoder.causal, self.calibration
                )

        # 4. Decide, item by item (`decision.decide`); another encoder's decision may force an item.
        entries = []
        for index, entry in enumerate(placed):
            item_report = ItemReport(
                entry.item, entry.rows, representative_rows=representative_rows(entry.rows, encoding, self.classifier)
            )
            score = scores.get(index)
            if score is not None:
                item_report.leak_score = score.score
                item_report.source = placed[score.source].item
                item_report.share_of_unrelated = self.calibration.share_at_least(score.score, tag=entry.item.tag)
                pulls = [Pull(placed[j].item, p.value, p.similarity, p.relatedness) for j, p in score.pulls.items()]
                item_report.pulls = sorted(pulls, key=lambda pull: -pull.value)
            if options.detect and matched[index] is not None:
                item_report.presence = leakage.presence(contextual[index], matched[index], self.encoder.causal)
            item_report.patched, item_report.reason = decide(
                entry.item,
                score,
                report.threshold_for(entry.item),
                options,
                self.encoder.causal,
                unread,
                self._unmatched(entry) if score is None else "",
            )
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
                item_report.reason = mismatch(entry.patch_request, item_alone)
                continue
            patched = interventions.patch_rows(patched, entry.rows, item_alone.rows)
            patched_items.append((entry.rows, item_alone))
        report.items.sort(key=lambda entry: entry.item.start)

        # 6. Optional: redundant-token removal, then the end-token/padding rows (`finish`).
        if options.remove_redundant:
            patched = finish.remove_redundant(patched, report, self.baseline().rows)
        pooled_patched = pooled
        if options.tail == "rederive" and patched_items:
            patched, pooled_patched = finish.rederive_tail(self.encoder, patched, pooled, layout, patched_items, report)
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
            placed = place_all(self._segment(marked, options), layout)
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

    def _requests(self, placed: list[PlacedItem], layout: PromptLayout, options: FlowOptions) -> list[ItemRequest]:
        """The encodings alone that `patch` will ask for: with detection on, every item at its own position
        (to score it); and at the start, every item that may be patched (`decision.may_patch`)."""
        requests = []
        for index, entry in enumerate(placed):
            if options.detect:
                requests.append(scoring_request(entry, self._can_position()))
            pulled = bool(candidates(index, placed, layout, self.encoder.causal))
            if may_patch(entry.item, options, pulled):
                requests.append(entry.patch_request)
        return list(dict.fromkeys(requests))

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
        """`segmentation.reader_for` the text (cached per text)."""
        found = self._readers.get(text)
        if found is None:
            found = reader_for(text, self.nlp)
            self._readers.put(text, found)
        return found

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
        self, encoding: torch.Tensor, layout: PromptLayout, placed: list[PlacedItem]
    ) -> tuple[list[torch.Tensor], list[torch.Tensor | None], list[list[int]]]:
        """Per item: its contextual rows, its rows alone at its own positions (None where the tokens differ),
        and the items that could have influenced it."""
        alone = self._isolated_encodings([scoring_request(entry, self._can_position()) for entry in placed])
        contextual = [encoding[entry.rows] for entry in placed]
        matched = [
            item.rows if list(item.token_ids) == list(entry.request.token_ids) else None
            for item, entry in zip(alone, placed)
        ]
        sources = [candidates(index, placed, layout, self.encoder.causal) for index in range(len(placed))]
        return contextual, matched, sources

    def _unmatched(self, entry: PlacedItem) -> str:
        """Why the item's encoding alone at its own positions cannot score it ("" where it can or was not made)."""
        alone = self._isolated.get(scoring_request(entry, self._can_position()))
        if alone is not None and list(alone.token_ids) != list(entry.request.token_ids):
            return mismatch(entry.request, alone)
        return ""
