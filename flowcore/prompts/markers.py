"""Prompt markers: `~text~` isolates an item (always patch it), `^text^` keeps it (never patch it).

Neither character means anything to the WebUI's prompt parser (emphasis and scheduling use ( ) [ ] : | \\,
extra networks use < >, Dynamic Prompts uses { } and __name__, Cutoff forks use &&), so both pass through
it as plain text and can be stripped afterwards. Dynamic Prompts writes `{~a|b}` for random choice: a `~`
right after `{` is left alone.

A marked span must contain a letter or digit, so that emoticons such as `^_^` stay plain text. Malformed
markers (unclosed, nested, empty) are kept as plain text and reported as warnings; parsing never raises.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from flowcore.prompts.items import ISOLATE, KEEP

MARKER_KINDS = {"~": ISOLATE, "^": KEEP}


@dataclass(frozen=True)
class MarkedSpan:
    """A marked item: character offsets into the marker-free text, and the marker's kind."""

    start: int
    end: int
    kind: str


@dataclass(frozen=True)
class MarkedPrompt:
    """A prompt with its markers removed: the clean text, the marked spans in it, and any warnings."""

    text: str
    spans: tuple[MarkedSpan, ...] = ()
    warnings: tuple[str, ...] = field(default=())


def _marker_positions(prompt: str) -> list[int]:
    """Indices of the characters that may open or close a marker."""
    return [
        index
        for index, char in enumerate(prompt)
        if char in MARKER_KINDS and not (char == "~" and index > 0 and prompt[index - 1] == "{")
    ]


def _find_pairs(prompt: str, warnings: list[str]) -> list[tuple[int, int]]:
    """Pair opening and closing marker characters; malformed ones are dropped with a warning."""
    positions = _marker_positions(prompt)
    pairs: list[tuple[int, int]] = []
    index = 0
    while index < len(positions):
        open_at = positions[index]
        char = prompt[open_at]
        closes = [p for p in positions[index + 1 :] if prompt[p] == char]
        if not closes:
            warnings.append(f"Unclosed marker `{char}` at character {open_at} is kept as plain text.")
            index += 1
            continue
        close_at = closes[0]
        inner = prompt[open_at + 1 : close_at]
        if any(prompt[p] != char for p in positions if open_at < p < close_at):
            warnings.append(f"Nested markers in `{prompt[open_at : close_at + 1]}` are kept as plain text.")
        elif not any(c.isalnum() for c in inner):
            warnings.append(f"Empty marker `{prompt[open_at : close_at + 1]}` is kept as plain text.")
        else:
            pairs.append((open_at, close_at))
        index = positions.index(close_at) + 1
    return pairs


def parse_markers(prompt: str) -> MarkedPrompt:
    """Remove well-formed markers from `prompt` and return the clean text with the marked spans in it.

    Malformed markers are kept as text and described in `.warnings`; nothing is logged here, so that a
    caller that parses the same prompt several times (a host, per image and pass) reports each problem once.
    """
    warnings: list[str] = []
    pairs = _find_pairs(prompt, warnings)
    removed = {p for pair in pairs for p in pair}
    clean_index = []  # clean_index[i] = offset in the clean text of prompt[i]
    pieces = []
    for index, char in enumerate(prompt):
        clean_index.append(len(pieces))
        if index not in removed:
            pieces.append(char)
    clean_index.append(len(pieces))
    text = "".join(pieces)

    spans = []
    for open_at, close_at in pairs:
        start, end = clean_index[open_at], clean_index[close_at]
        while start < end and text[start].isspace():
            start += 1
        while end > start and text[end - 1].isspace():
            end -= 1
        spans.append(MarkedSpan(start, end, MARKER_KINDS[prompt[open_at]]))
    return MarkedPrompt(text=text, spans=tuple(spans), warnings=tuple(warnings))


def strip_markers(prompt: str) -> str:
    """The prompt without its well-formed markers (what the encoder sees)."""
    return parse_markers(prompt).text


def has_markers(prompt: str) -> bool:
    """Whether the prompt contains at least one well-formed marker."""
    return bool(_find_pairs(prompt, []))
