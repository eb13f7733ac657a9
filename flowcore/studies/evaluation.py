"""Minimal pairs for checking that leak detection reacts to meaning, not to position or noise.

Each pair puts the same target item after a context that should pull it toward another meaning
("a baseball game with bats": bats become baseball bats) and after a neutral one ("a red car with bats").
A detector that reacts to meaning gives the target a higher leak score in the first prompt, names the
pulling item as the source, and at the default sensitivity flags the first more often than the second.

The pairs (`flowcore/data/minimal_pairs.jsonl`) are ours, written for this check, not from the paper, in these
splits: `dev` (the score was designed on them), `held-out` (looked at a few times while choosing among a
handful of designs) and `final` (written before, and first scored after, the design was fixed); and, written
for issue 20 before any of its designs was tried: `final2` (more sentences, scored once at the end),
`tags-dev` and `tags-final`, tag lists as WebUI users write them, the target the last tag ("computer desk,
mouse" vs "garden bench, mouse"; "tiger, striped shirt" vs "teacup, striped shirt"). None of their prompts is
among the calibration prompts.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from flowcore.errors import InputError, OptionsError
from flowcore.patching.options import FlowOptions

PAIRS_PATH = Path(__file__).parents[1] / "data" / "minimal_pairs.jsonl"
# "a baseball game| with |bats", "computer desk|, |mouse"
_JOIN = re.compile(r"(\s+(with|and)(\s+an?)?\s*|\s*,\s*)$")
SPLITS = ("dev", "held-out", "final", "final2", "tags-dev", "tags-final")


@dataclass(frozen=True)
class MinimalPair:
    """The target item's text, a prompt whose context should pull it, and a neutral prompt."""

    target: str
    pulling: str
    neutral: str
    split: str = "dev"

    @property
    def contexts(self) -> tuple[str, str, str]:
        """The pulling context, the neutral context and how the target follows them: "a baseball game",
        "a red car", " with bats"; in a tag list "computer desk", "garden bench", ", mouse"."""
        pulling = _JOIN.sub("", self.pulling[: self.pulling.rindex(self.target)])
        neutral = _JOIN.sub("", self.neutral[: self.neutral.rindex(self.target)])
        return pulling, neutral, self.pulling[len(pulling) :]

    def three_item_prompts(self) -> list[str]:
        """Both contexts before the target, in both orders ("a red car, a baseball game with bats"): the
        detector should name the pulling context as the source whichever comes first."""
        pulling, neutral, tail = self.contexts
        return [f"{neutral}, {pulling}{tail}", f"{pulling}, {neutral}{tail}"]


def minimal_pairs(split: str | None = None) -> list[MinimalPair]:
    """The built-in pairs, all or those of one split (one of `SPLITS`)."""
    if split is not None and split not in SPLITS:
        raise OptionsError(f"`split` must be one of {SPLITS} but is {split!r}.")
    pairs = [MinimalPair(**json.loads(line)) for line in PAIRS_PATH.read_text(encoding="utf-8").splitlines() if line]
    return [pair for pair in pairs if split is None or pair.split == split]


@dataclass
class PairOutcome:
    """The target's leak score in both prompts (None: nothing could pull it), whether the default sensitivity
    flags it in each, the source the detector named in the pulling prompt, and the sources it named in the
    three-item prompts (`MinimalPair.three_item_prompts`); `tag`: the target is a tag of a tag list, so its
    scores are judged against the calibration's tag null (`Calibration.threshold(..., tag=True)`)."""

    pair: MinimalPair
    pulling_score: float | None
    neutral_score: float | None
    pulling_flagged: bool
    neutral_flagged: bool
    pulling_source: str | None
    three_item_sources: tuple[str | None, ...] = ()
    tag: bool = False

    @property
    def ranked_right(self) -> bool:
        if self.pulling_score is None:
            return False
        return self.neutral_score is None or self.pulling_score > self.neutral_score

    @property
    def source_right(self) -> bool:
        """Whether the named source is an item of the pulling context (not the target itself)."""
        return self.pulling_source is not None and self.pulling_source in self.pair.contexts[0]

    @property
    def three_item_sources_right(self) -> int:
        """In how many three-item prompts the pulling context was named the source."""
        return sum(source is not None and source in self.pair.contexts[0] for source in self.three_item_sources)


def target_entry(report, target: str):
    """The last item of the report that ends with the target's words ("bats"; "striped shirt")."""
    words = target.split()
    matches = [entry for entry in report.items if entry.item.text.split()[-len(words) :] == words]
    if not matches:
        raise InputError(f"No item ending in `{target}` was found in {report.text!r}: check the pair.")
    return matches[-1]


def evaluate_pairs(
    patcher, pairs: list[MinimalPair] | None = None, sensitivity: float = 0.5, three_items: bool = False
) -> list[PairOutcome]:
    """Run the patcher on both prompts of every pair (automatic detection at `sensitivity`), and with
    `three_items` on its three-item prompts too."""
    options = FlowOptions(detect=True, sensitivity=sensitivity)

    def target(prompt: str):
        return target_entry(patcher.run(prompt, options).report, pair.target)

    outcomes = []
    for pair in pairs if pairs is not None else minimal_pairs():
        pulling, neutral = target(pair.pulling), target(pair.neutral)
        sources = [target(prompt).source for prompt in pair.three_item_prompts()] if three_items else []
        outcomes.append(
            PairOutcome(
                pair,
                pulling.leak_score,
                neutral.leak_score,
                pulling.patched,
                neutral.patched,
                pulling.source.text if pulling.source else None,
                tuple(source.text if source else None for source in sources),
                pulling.item.tag,
            )
        )
    return outcomes


@dataclass(frozen=True)
class PairSummary:
    """Shares over a set of pairs: pulling scored higher, pulling / neutral flagged, source named right (in
    the pairs' prompts, and in the three-item prompts where they were run)."""

    pairs: int
    wins: float
    pulling_flagged: float
    neutral_flagged: float
    source_right: float
    three_item_source_right: float | None = None


def summarize(outcomes: list[PairOutcome]) -> PairSummary:
    n = len(outcomes)
    if not n:
        raise InputError("No outcomes to summarize.")
    three = sum(len(o.three_item_sources) for o in outcomes)
    return PairSummary(
        n,
        sum(o.ranked_right for o in outcomes) / n,
        sum(o.pulling_flagged for o in outcomes) / n,
        sum(o.neutral_flagged for o in outcomes) / n,
        sum(o.source_right for o in outcomes) / n,
        sum(o.three_item_sources_right for o in outcomes) / three if three else None,
    )
