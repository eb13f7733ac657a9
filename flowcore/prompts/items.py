"""The lexical item: a word or expression that carries one concept, located by character offsets."""

from __future__ import annotations

from dataclasses import dataclass

ISOLATE = "isolate"  # always patch this item with its own, uncontextualized encoding
KEEP = "keep"  # never patch this item


@dataclass(frozen=True)
class LexicalItem:
    """One concept of a prompt, with its own modifiers and without leading determiners.

    `start` and `end` are character offsets into the marker-free prompt, so
    `clean_text[item.start:item.end] == item.text`. `head` is the word that names the concept (the noun
    the modifiers attach to; for a tag, its last word); `marker` is `"isolate"`, `"keep"` or None when the
    item came from the parser; `style` whether it is a quality, style or camera tag (`flowcore.prompts.style_tags`),
    which the patcher does not patch unless asked; `tag` whether it is one tag of a tag list (the segmentation's
    tag rule), not an item of a phrase: its leak score is judged against unrelated tags' scores.
    """

    text: str
    start: int
    end: int
    head: str = ""
    marker: str | None = None
    style: bool = False
    tag: bool = False

    def overlaps(self, start: int, end: int) -> bool:
        """Whether the half-open character span [start, end) shares a character with this item."""
        return self.start < end and start < self.end
