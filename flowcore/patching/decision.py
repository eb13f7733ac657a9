"""Whether an item is patched, and the reason the report gives: markers first, then the mode, then its score.

The order is the user's promise: `^keep^` is never patched and `~isolate~` always is; an item of a prompt in
a language segmentation cannot read, and a style tag (unless `patch_style_tags`), only where marked; every
item in *every item* mode; otherwise an item whose leak score reaches the threshold.
"""

from __future__ import annotations

from flowcore.detection.leakage import LeakScore
from flowcore.patching.options import EVERY, FlowOptions
from flowcore.prompts.items import ISOLATE, KEEP, LexicalItem
from flowcore.prompts.language import LanguageGuess


def decide(
    item: LexicalItem,
    score: LeakScore | None,
    threshold: float,
    options: FlowOptions,
    causal: bool,
    unread: LanguageGuess | None = None,
    unmatched: str = "",
) -> tuple[bool, str]:
    """(patch it?, why) for `item`. `score`: its leak score, None where nothing could have pulled it or its
    tokens alone differ from the prompt's (`unmatched` then says how)."""
    if item.marker == KEEP:
        return False, "marked ^keep^"
    if item.marker == ISOLATE:
        return True, "marked ~isolate~"
    if unread is not None:
        return False, f"the prompt reads as {unread.name}, which segmentation cannot read: mark it ~...~ to patch"
    if item.style and not options.patch_style_tags:
        return False, "a quality/style tag: never patched unless `patch_style_tags` is on"
    if options.mode == EVERY:
        return True, "every-item mode"
    if not options.detect:
        return False, "automatic detection is off"
    if score is None:
        if unmatched:
            return False, unmatched
        where = "before it in its chunk" if causal else "in its chunk"
        return False, f"no other item {where} could have pulled it"
    return score.score >= threshold, f"leak score {compare(score.score, threshold)}"


def may_patch(item: LexicalItem, options: FlowOptions, could_be_pulled: bool) -> bool:
    """Whether `item` may end up patched, so that its encoding alone at the start is worth computing ahead:
    marked ~isolate~, or patchable (not ^keep^, not a style tag unless `patch_style_tags`) and either in *every
    item* mode or scored in automatic mode (sensitivity above 0) with another item that could have pulled it."""
    patchable = item.marker != KEEP and (options.patch_style_tags or not item.style)
    automatic = options.detect and options.sensitivity > 0 and patchable and could_be_pulled
    return item.marker == ISOLATE or automatic or (options.mode == EVERY and patchable)


def compare(score: float, threshold: float) -> str:
    """`score >= threshold` or `<`, with enough decimals that the printed numbers show the difference."""
    sign = ">=" if score >= threshold else "<"
    for decimals in range(3, 9):
        if f"{score:.{decimals}f}" != f"{threshold:.{decimals}f}" or decimals == 8:
            return f"{score:.{decimals}f} {sign} threshold {threshold:.{decimals}f}"
    raise AssertionError  # unreachable: the loop returns at 8 decimals
