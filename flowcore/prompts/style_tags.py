"""Quality, style and camera tags: which items of a prompt say how the image should look, not what is in it.

`masterpiece`, `best quality`, `trending on artstation`, `bokeh`, `85mm` are items like any other for the
encoder (they can pull another item, and be pulled), but patching one with its isolated encoding changes
nothing anyone asked for, and in the every-item mode it would only cost time. So flowcore recognises them
from a documented list (`flowcore/data/style_tags.txt`: one tag per line, or `re:` and a regular expression)
and never patches them unless asked (`FlowOptions(patch_style_tags=True)`); the report says why.

Users extend the list with files in the same format named by `$FLOWCORE_STYLE_TAGS` (several separated by
`os.pathsep`) or with extra lines passed as `FlowOptions(style_tags=...)`.
"""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from flowcore.errors import OptionsError

BUILTIN_PATH = Path(__file__).parents[1] / "data" / "style_tags.txt"
ENV_VAR = "FLOWCORE_STYLE_TAGS"
REGEX_PREFIX = "re:"
# Emphasis written into the text of a prompt ("(masterpiece:1.2)", "[[bokeh]]") is not part of the tag.
_EDGE = re.compile(r"^[\s(\[{\"']+|(?::\s*-?\d*\.?\d+)?[\s)\]}\"']*$")


def normalize(text: str) -> str:
    """A tag as it is matched: lower case, `_` read as a space, emphasis brackets and a trailing `:weight`
    removed, runs of spaces collapsed ("(Best_Quality:1.2)" -> "best quality")."""
    text = text.replace("_", " ").lower()
    previous = None
    while previous != text:
        previous, text = text, _EDGE.sub("", text)
    return " ".join(text.split())


@dataclass(frozen=True)
class StyleTags:
    """A set of tags (normalised) and regular expressions; `matches(text)` says whether an item is one."""

    words: frozenset[str]
    patterns: tuple[re.Pattern, ...]

    @classmethod
    def from_lines(cls, lines: Iterable[str], where: str = "style tags") -> StyleTags:
        """Parse lines of the list format (comments and blank lines skipped); a bad regex is an error."""
        words, patterns = set(), []
        for number, line in enumerate(lines, 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            if line.startswith(REGEX_PREFIX):
                expression = line[len(REGEX_PREFIX) :].strip()
                try:
                    patterns.append(re.compile(expression, re.IGNORECASE))
                except re.error as error:
                    raise OptionsError(
                        f"{where}, line {number}: `{expression}` is not a regular expression: {error}"
                    ) from error
            else:
                words.add(normalize(line))
        return cls(frozenset(words), tuple(patterns))

    def __or__(self, other: StyleTags) -> StyleTags:
        return StyleTags(self.words | other.words, self.patterns + other.patterns)

    def matches(self, text: str) -> bool:
        """Whether `text` (an item, or a comma-separated stretch of a prompt) is one of the tags."""
        tag = normalize(text)
        return bool(tag) and (tag in self.words or any(p.fullmatch(tag) for p in self.patterns))


def _read(path: str | os.PathLike) -> StyleTags:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as error:
        raise OptionsError(
            f"Cannot read the style-tag file `{path}` ({error.strerror}); fix or unset ${ENV_VAR}."
        ) from error
    return StyleTags.from_lines(text.splitlines(), where=str(path))


@functools.lru_cache(maxsize=16)
def _load(env_value: str, extra: tuple[str, ...]) -> StyleTags:
    tags = _read(BUILTIN_PATH)
    for path in filter(None, env_value.split(os.pathsep)):
        tags = tags | _read(path)
    return (tags | StyleTags.from_lines(extra, where="`style_tags`")) if extra else tags


def style_tags(extra: Iterable[str] = ()) -> StyleTags:
    """The built-in list, then every file named in `$FLOWCORE_STYLE_TAGS`, then `extra` lines (cached)."""
    return _load(os.environ.get(ENV_VAR, ""), tuple(extra))
