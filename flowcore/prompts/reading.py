"""Reading a user's prompt: check it, then read its markers and its syntax into the text the encoder sees.

Markers (`~item~`, `^item^`) are read first, on the text as typed; the prompt syntax (`(word:1.3)`, `BREAK`,
escapes) then gives the plain text that is tokenized, and the markers' spans move into it (`read_marked`).
"""

from __future__ import annotations

from flowcore.errors import OptionsError, PromptError
from flowcore.prompts.markers import MarkedPrompt, MarkedSpan, parse_markers
from flowcore.prompts.prompt_syntax import SYNTAX_CHOICES, ParsedPrompt, read_prompt


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


def read_marked(prompt: str, syntax: str) -> tuple[MarkedPrompt, ParsedPrompt]:
    """The prompt's markers in the plain text its syntax gives (see `markers_in`), and that parsed prompt."""
    raw = parse_markers(prompt)
    parsed = read_prompt(raw.text, syntax)
    return markers_in(parsed, raw), parsed


def markers_in(parsed: ParsedPrompt, marked: MarkedPrompt) -> MarkedPrompt:
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
