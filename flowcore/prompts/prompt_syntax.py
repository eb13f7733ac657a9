"""The AUTOMATIC1111 WebUI's prompt syntax, read without the WebUI: emphasis, `BREAK`, escapes.

Pure Python (no torch, no WebUI), written from the WebUI's documented behaviour (wiki "Features: Attention/
emphasis", v1.10), not from its code:

- `(text)` multiplies the attention to `text` by 1.1, `[text]` divides it by 1.1, `(text:1.3)` multiplies it
  by 1.3; nesting multiplies (`((text))` is 1.1 * 1.1). A bracket that is never closed applies to the rest of
  the line; a closing bracket with nothing open is plain text.
- `\\(`, `\\)`, `\\[`, `\\]` and `\\\\` are the literal characters; any other backslash is dropped.
- `BREAK` (the word alone, in capitals) ends the current 75-token chunk.
- Each run of equal weight is a fragment, tokenized on its own: `(zebra)crossing` is "zebra" and "crossing",
  never "zebracrossing".

`parse_attention(line)` gives the WebUI's `(text, weight)` fragments for one line (`BREAK` is `("BREAK", -1)`),
exactly as the WebUI's own `parse_prompt_attention` gives them. `parse_prompt(prompt)` is what standalone use
needs: the plain text to segment, each fragment's span in it, and warnings for the syntax a standalone run
cannot honour, each named: `AND` (composable diffusion; each part gets its own chunk), prompt editing `[a:b:n]` and
alternation `[a|b]` (what the first sampling step uses), extra networks `<lora:name:1>` (removed).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

ROUND_FACTOR = 1.1  # `(text)`
SQUARE_FACTOR = 1 / 1.1  # `[text]`
BREAK_WEIGHT = -1.0  # the WebUI's weight for a `BREAK` fragment
BREAK_SEPARATOR = " BREAK "  # what a `BREAK` becomes in the plain text (the layout and the parser split there)
SYNTAX_CHOICES = ("webui", "plain")

BREAK_PATTERN = re.compile(r"\s*\bBREAK\b\s*")  # a `BREAK` with the spaces around it
_WEIGHT_CLOSE = re.compile(r":\s*([+-]?[.\d]+)\s*\)")  # `:1.3)` closes `(text:1.3)`
_TEXT_RUN = re.compile(r"[^\\()\[\]:]+")
_ESCAPABLE = "()[]\\"
_AND = re.compile(r"\bAND\b")
_EXTRA_NETWORK = re.compile(r"<(\w+):([^>]+)>")
_PART_WEIGHT = re.compile(r"\s*:\s*[+-]?(?:\d+\.?|\d*\.\d+)\s*$")  # `a cat :1.2 AND ...`
_NUMBER = re.compile(r"\s*[+-]?(?:\d+\.?\d*|\.\d+)\s*")


@dataclass(frozen=True)
class Fragment:
    """A run of the plain text with one emphasis weight, tokenized on its own.

    `start`/`end` are offsets into `ParsedPrompt.text`. A `BREAK` has `is_break` set and covers the separator."""

    text: str
    weight: float
    start: int
    end: int
    is_break: bool = False


@dataclass(frozen=True)
class ParsedPrompt:
    """A prompt in the WebUI's syntax, as standalone use reads it.

    - `text`: the plain text (syntax removed, each `BREAK` as " BREAK "): what is segmented and tokenized.
    - `fragments`: its runs of equal weight, in order, `BREAK`s included.
    - `landing`: for each character of the source, its offset in `text`, or -1 where the syntax removed it:
      `span` maps marker spans from the source into `text`.
    - `warnings`: the syntax that could not be honoured, each named.
    """

    source: str
    text: str
    fragments: tuple[Fragment, ...]
    landing: tuple[int, ...]
    warnings: tuple[str, ...] = ()

    def span(self, start: int, end: int) -> tuple[int, int]:
        """The span of `text` that the source's characters [start, end) became (empty where all were removed)."""
        kept = [self.landing[i] for i in range(start, end) if self.landing[i] >= 0]
        return (kept[0], kept[-1] + 1) if kept else (0, 0)

    def segments(self) -> list[list[tuple[int, int]]]:
        """The spans of `text` to tokenize one by one, grouped by `BREAK` (each group starts a chunk)."""
        groups: list[list[tuple[int, int]]] = [[]]
        for fragment in self.fragments:
            if fragment.is_break:
                groups.append([])
            elif fragment.text:
                groups[-1].append((fragment.start, fragment.end))
        return groups

    def weight_at(self, offset: int) -> float:
        """The emphasis weight of the character at `offset` in `text` (1 outside every fragment)."""
        for fragment in self.fragments:
            if not fragment.is_break and fragment.start <= offset < fragment.end:
                return fragment.weight
        return 1.0

    @property
    def has_emphasis(self) -> bool:
        return any(f.weight != 1.0 for f in self.fragments if not f.is_break)


# --- 1. Emphasis, BREAK and escapes: the WebUI's fragments ---


def _attention_entries(line: str) -> list[list]:
    """`[text, weight, source indices]` entries of one line, before neighbours of equal weight are merged.

    Reads the line left to right; a bracket remembers where its entries begin and, when it closes, multiplies
    every entry since then by its factor (so the factors of nested brackets multiply, in closing order)."""
    entries: list[list] = []
    round_open: list[int] = []
    square_open: list[int] = []

    def scale(first: int, factor: float) -> None:
        for entry in entries[first:]:
            entry[1] *= factor

    position = 0
    while position < len(line):
        char = line[position]
        if char == "\\":
            escaped = position + 1 < len(line) and line[position + 1] in _ESCAPABLE
            text = line[position + 1] if escaped else ""
            entries.append([text, 1.0, (position + 1,) if escaped else ()])
            position += 2 if escaped else 1
        elif char == "(":
            round_open.append(len(entries))
            position += 1
        elif char == "[":
            square_open.append(len(entries))
            position += 1
        elif char == ":" and (weighted := _WEIGHT_CLOSE.match(line, position)):
            if round_open:
                scale(round_open.pop(), _number(weighted.group(1), weighted.group()))
            else:
                _add_text(entries, weighted.group(), weighted.start())
            position = weighted.end()
        elif char == ")" and round_open:
            scale(round_open.pop(), ROUND_FACTOR)
            position += 1
        elif char == "]" and square_open:
            scale(square_open.pop(), SQUARE_FACTOR)
            position += 1
        else:
            run = _TEXT_RUN.match(line, position)
            end = run.end() if run else position + 1  # `:` or an unmatched closing bracket: one character
            _add_text(entries, line[position:end], position)
            position = end
    for first in round_open:  # never closed: up to the end of the line
        scale(first, ROUND_FACTOR)
    for first in square_open:
        scale(first, SQUARE_FACTOR)
    return entries


def _number(text: str, construct: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"the emphasis weight in `{construct}` is not a number") from None


def _add_text(entries: list[list], text: str, start: int) -> None:
    """A run of plain text, split at each `BREAK` into text entries with `BREAK` entries between them."""
    position = 0
    for match in [*BREAK_PATTERN.finditer(text), None]:
        end = match.start() if match else len(text)
        entries.append([text[position:end], 1.0, tuple(range(start + position, start + end))])
        if match:
            entries.append(["BREAK", BREAK_WEIGHT, ()])
            position = match.end()


def _merged(entries: list[list]) -> list[list]:
    """Neighbouring entries of equal weight as one (an empty line is one empty entry of weight 1)."""
    if not entries:
        return [["", 1.0, ()]]
    merged = [list(entries[0])]
    for text, weight, indices in entries[1:]:
        if merged[-1][1] == weight:
            merged[-1][0] += text
            merged[-1][2] += indices
        else:
            merged.append([text, weight, indices])
    return merged


def parse_attention(line: str) -> list[tuple[str, float]]:
    """The WebUI's `(text, weight)` fragments of one prompt line; a `BREAK` is `("BREAK", -1.0)`.

    >>> parse_attention("a (red:1.2) car")
    [('a ', 1.0), ('red', 1.2), (' car', 1.0)]

    Raises `ValueError` where an emphasis weight is not a number (`(red:1.2.3)`; the WebUI fails there too).
    """
    return [(text, weight) for text, weight, _ in _merged(_attention_entries(line))]


# --- 2. What standalone use cannot honour: AND, prompt editing, alternation, extra networks ---


def _scan(text: str, start: int, end: int):
    """`(position, char, depth)` for each unescaped character of text[start:end], `depth` being the number of
    brackets open before it."""
    depth, position = 0, start
    while position < end:
        char = text[position]
        if char == "\\":
            position += 2
            continue
        yield position, char, depth
        if char in "([":
            depth += 1
        elif char in ")]":
            depth -= 1
        position += 1


def _closing_bracket(text: str, start: int) -> int | None:
    """The index of the `]` closing the `[` at `start` (escapes and nesting honoured), or None."""
    for position, char, depth in _scan(text, start, len(text)):
        if char in ")]" and depth == 1:
            return position if char == "]" else None
    return None


def _top_level(text: str, start: int, end: int, separators: str) -> list[int]:
    """Positions of `separators` in text[start:end] outside nested brackets (escapes skipped)."""
    return [position for position, char, depth in _scan(text, start, end) if depth == 0 and char in separators]


def _first_step(text: str, start: int, close: int) -> tuple[int, int, str] | None:
    """For `[a:b:n]`, `[b:n]` or `[a|b|...]` at text[start:close + 1], the span the first sampling step uses and
    the kind of construct; None for plain emphasis `[text]`."""
    bars = _top_level(text, start + 1, close, "|")
    if bars:
        return start + 1, bars[0], "alternation"
    colons = _top_level(text, start + 1, close, ":")
    if len(colons) not in (1, 2) or not _NUMBER.fullmatch(text[colons[-1] + 1 : close]):
        return None
    if len(colons) == 1:  # `[b:n]`: nothing until step n
        return start + 1, start + 1, "prompt editing"
    return start + 1, colons[0], "prompt editing"


class _View:
    """The source text with some characters removed (and some added), each character remembering its source
    index (-1 for added ones)."""

    def __init__(self, text: str, indices: list[int]):
        self.text, self.indices = text, indices

    def keep(self, pieces: list[tuple[int, int] | str]) -> _View:
        """The spans `(start, end)` of this view, and strings to add, in order."""
        text, indices = [], []
        for piece in pieces:
            if isinstance(piece, str):
                text.append(piece)
                indices += [-1] * len(piece)
            else:
                text.append(self.text[piece[0] : piece[1]])
                indices += self.indices[piece[0] : piece[1]]
        return _View("".join(text), indices)


def _standalone_view(prompt: str, warnings: list[str]) -> _View:
    """The prompt with what a standalone run cannot honour resolved, each construct named in `warnings`."""
    view = _View(prompt, list(range(len(prompt))))

    # 1. Extra networks (`<lora:name:1>`) are loaded by the WebUI, not by flowcore: removed.
    networks = list(_EXTRA_NETWORK.finditer(view.text))
    for match in networks:
        warnings.append(
            f"`{match.group()}`: extra networks ({match.group(1)}) are applied by the WebUI only; "
            "removed from the prompt here."
        )
    if networks:
        spans, position = [], 0
        for match in networks:
            spans.append((position, match.start()))
            position = match.end()
        view = view.keep([*spans, (position, len(view.text))])

    # 2. `AND` (composable diffusion) needs the WebUI's sampler. The WebUI encodes each part on its own (a
    #    trailing `:weight` is the part's weight, not text): here each part starts a chunk, as after `BREAK`.
    if _AND.search(view.text):
        pieces: list[tuple[int, int] | str] = []
        position = 0
        for match in [*_AND.finditer(view.text), None]:
            end = match.start() if match else len(view.text)
            weight = _PART_WEIGHT.search(view.text, position, end)
            part_end = weight.start() if weight else end
            if view.text[position:part_end].strip():
                pieces += [BREAK_SEPARATOR] if pieces else []
                pieces.append((position, part_end))
            position = match.end() if match else end
        warnings.append(
            "`AND` (composable diffusion) combines the parts' images in the WebUI only; here each part is encoded "
            "in its own chunk, as after `BREAK` (part weights are ignored)."
        )
        view = view.keep(pieces)

    # 3. Prompt editing and alternation: what the first sampling step uses, innermost constructs too.
    position = 0
    while (position := view.text.find("[", position)) != -1:
        if position > 0 and view.text[position - 1] == "\\" and _escaped(view.text, position):
            position += 1
            continue
        close = _closing_bracket(view.text, position)
        found = _first_step(view.text, position, close) if close is not None else None
        if found is None:
            position += 1
            continue
        keep_start, keep_end, kind = found
        construct, used = view.text[position : close + 1], view.text[keep_start:keep_end]
        warnings.append(
            f"`{construct}` ({kind}) changes the prompt during sampling, which the WebUI does; here the prompt "
            f"of the first step is used: {used!r}."
        )
        view = view.keep([(0, position), (keep_start, keep_end), (close + 1, len(view.text))])
    return view


def _escaped(text: str, position: int) -> bool:
    """Whether the character at `position` is escaped (an odd number of backslashes before it)."""
    count = 0
    while position - count - 1 >= 0 and text[position - count - 1] == "\\":
        count += 1
    return count % 2 == 1


# --- 3. Everything together ---


def parse_prompt(prompt: str) -> ParsedPrompt:
    """Read `prompt` in the WebUI's syntax for a standalone run (see the module docstring).

    Never raises on syntax: what cannot be honoured, or a weight that is not a number (then the bracket is
    read as plain text), is described in `.warnings`."""
    warnings: list[str] = []
    view = _standalone_view(prompt, warnings)
    try:
        entries = _merged(_attention_entries(view.text))
    except ValueError as error:
        warnings.append(f"{error}; the prompt's emphasis is ignored.")
        entries = _merged([["", 1.0, ()]] if not view.text else [[view.text, 1.0, tuple(range(len(view.text)))]])

    # Plain text, fragments with their spans, and where each source character lands.
    pieces: list[str] = []
    fragments: list[Fragment] = []
    landing: dict[int, int] = {}
    length = 0
    for text, weight, indices in entries:
        if text == "BREAK" and weight == BREAK_WEIGHT:
            fragments.append(Fragment("BREAK", weight, length, length + len(BREAK_SEPARATOR), is_break=True))
            pieces.append(BREAK_SEPARATOR)
            length += len(BREAK_SEPARATOR)
            continue
        for offset, index in enumerate(indices):
            if view.indices[index] >= 0:
                landing[view.indices[index]] = length + offset
        fragments.append(Fragment(text, weight, length, length + len(text)))
        pieces.append(text)
        length += len(text)
    landed = tuple(landing.get(index, -1) for index in range(len(prompt)))
    return ParsedPrompt(prompt, "".join(pieces), tuple(fragments), landed, tuple(warnings))


def plain_prompt(prompt: str) -> ParsedPrompt:
    """`prompt` as plain text (`syntax="plain"`): one fragment per stretch between `BREAK`s, weight 1."""
    fragments, position = [], 0
    for match in [*BREAK_PATTERN.finditer(prompt), None]:
        end = match.start() if match else len(prompt)
        fragments.append(Fragment(prompt[position:end], 1.0, position, end))
        if match:
            fragments.append(Fragment("BREAK", BREAK_WEIGHT, match.start(), match.end(), is_break=True))
            position = match.end()
    return ParsedPrompt(prompt, prompt, tuple(fragments), tuple(range(len(prompt))))


def read_prompt(prompt: str, syntax: str) -> ParsedPrompt:
    """`prompt` read as `syntax`: "webui" (`parse_prompt`) or "plain" (`plain_prompt`)."""
    return parse_prompt(prompt) if syntax == "webui" else plain_prompt(prompt)
