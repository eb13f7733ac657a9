"""Which language a prompt is written in: a light, offline guess, English unless there is evidence otherwise.

Segmentation reads English (`flowcore.prompts.segmentation`); an English parser reads a German sentence as a run of
unknown nouns and a Chinese one as a single item, so the patcher must know when a prompt is not English. The
guess needs no model:

1. **Script**: where most letters are in one non-Latin script (CJK, kana, Hangul, Cyrillic, Arabic, Greek, ...),
   the prompt is in that script's language ("一只斑马站在人行横道上": Chinese).
2. **Function words**, for Latin script: articles, prepositions and conjunctions of a few languages, none of them
   also an English word ("ein", "auf", "mit"; "une", "sur", "avec"). A language is chosen where at least
   `MIN_WORDS` different words of it occur, and more than twice as many as English ones ("a", "the", "on").

So tag lists ("masterpiece, 1girl, white shirt"), which have no function words, stay English, and so does an
English prompt naming a French title ("by Renoir, le déjeuner des canotiers": 2 French words, 1 English).
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from dataclasses import dataclass

ENGLISH = "en"
NAMES = {
    "en": "English",
    "de": "German",
    "fr": "French",
    "es": "Spanish",
    "it": "Italian",
    "pt": "Portuguese",
    "nl": "Dutch",
    "zh": "Chinese",
    "ja": "Japanese",
    "ko": "Korean",
    "ru": "Russian",
    "ar": "Arabic",
    "el": "Greek",
    "he": "Hebrew",
    "th": "Thai",
    "hi": "Hindi",
}
# The first word of a letter's Unicode name -> the language its script most likely means.
SCRIPTS = {
    "CJK": "zh",
    "HIRAGANA": "ja",
    "KATAKANA": "ja",
    "HANGUL": "ko",
    "CYRILLIC": "ru",
    "ARABIC": "ar",
    "GREEK": "el",
    "HEBREW": "he",
    "THAI": "th",
    "DEVANAGARI": "hi",
}
# Function words that are not English words too (no "die"-like traps such as "man", "hat", "war", "van", "son").
FUNCTION_WORDS = {
    "en": "a an the and with on in of at by to from for under over next behind is are its his her their this",
    "de": "der das dem des ein eine einer einem einen eines und mit auf im vom zum zur neben unter über zwischen "
    "ist sind von zu bei aus nach ohne hinter vor",
    "fr": "le la les un une des du au aux et avec sur sous dans est sont pour par entre devant derrière près "
    "chez sans cette ces à",
    "es": "el los las una unos unas y con sobre bajo del al que es está están para por junto detrás delante",
    "it": "il lo gli una uno con su sotto tra fra della dei delle nel nella sul sulla alla di è sono accanto "
    "dietro davanti",
    "pt": "os um uma uns umas com em sob dos das na nas ao à é são para atrás",
    "nl": "het een en met op onder tussen naast achter voor bij uit zijn",
}
WORDS = {language: frozenset(words.split()) for language, words in FUNCTION_WORDS.items()}
MIN_WORDS = 2  # different words: one ("le", "la la land") is too little evidence, names and titles have them


@dataclass(frozen=True)
class LanguageGuess:
    """A prompt's language (`code`, ISO 639-1) and what it was judged by, for messages."""

    code: str
    evidence: str = ""

    @property
    def name(self) -> str:
        return NAMES.get(self.code, self.code)

    @property
    def english(self) -> bool:
        return self.code == ENGLISH


def _script(char: str) -> str:
    """The first word of a letter's Unicode name ("LATIN", "CJK", "CYRILLIC"), or "" where it has none."""
    return unicodedata.name(char, "").split(" ", 1)[0]


def guess_language(text: str) -> LanguageGuess:
    """The language `text` is most likely written in (see the module docstring); English where unsure."""
    # 1. Script: most letters in one non-Latin script.
    scripts = Counter(_script(char) for char in text if char.isalpha())
    letters = sum(scripts.values())
    if letters:
        foreign = Counter({SCRIPTS[s]: n for s, n in scripts.items() if s in SCRIPTS})
        if "ja" in foreign:  # kana with kanji: Japanese, kanji counted with it
            foreign["ja"] += foreign.pop("zh", 0)
        if foreign:
            code, count = foreign.most_common(1)[0]
            if count * 2 > letters:
                return LanguageGuess(code, f"{count} of {letters} letters in its script")

    # 2. Function words, for Latin script.
    words = set(re.findall(r"[^\W\d_]+", text.lower()))
    found = {language: sorted(words & vocabulary) for language, vocabulary in WORDS.items()}
    english = len(found.pop(ENGLISH))
    code, hits = max(found.items(), key=lambda entry: len(entry[1]))
    if len(hits) >= MIN_WORDS and len(hits) > 2 * english:
        shown = ", ".join(hits)
        return LanguageGuess(code, f"{len(hits)} {NAMES[code]} function words ({shown}) against {english} English")
    return LanguageGuess(ENGLISH)
