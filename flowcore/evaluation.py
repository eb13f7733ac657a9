"""Minimal pairs for checking that leak detection reacts to meaning, not to position or noise.

Each pair puts the same target item after a context that should pull it toward another meaning
("a baseball game with bats": bats become baseball bats) and after a neutral one ("a red car with bats").
A detector that reacts to meaning gives the target a higher leak score in the first prompt, and names
the pulling item as the source. The pairs are ours, written for this check; they are not from the paper.
"""

from __future__ import annotations

from dataclasses import dataclass

from flowcore.options import FlowOptions


@dataclass(frozen=True)
class MinimalPair:
    """The target item's text, a prompt whose context should pull it, and a neutral prompt."""

    target: str
    pulling: str
    neutral: str


MINIMAL_PAIRS = [
    MinimalPair("bats", "a baseball game with bats", "a red car with bats"),
    MinimalPair("zebra", "a crosswalk with a zebra", "a wooden chair with a zebra"),
    MinimalPair("mouse", "a computer keyboard and a mouse", "a garden bench and a mouse"),
    MinimalPair("crane", "a construction site with a crane", "a blue sofa with a crane"),
    MinimalPair("jaguar", "a sports car race and a jaguar", "a wooden table and a jaguar"),
    MinimalPair("apple", "a laptop computer and an apple", "a straw hat and an apple"),
    MinimalPair("bass", "a rock concert with a bass", "a cotton shirt with a bass"),
    MinimalPair("seal", "an official document with a seal", "a green lamp with a seal"),
    MinimalPair("pitcher", "a baseball field with a pitcher", "a leather boot with a pitcher"),
    MinimalPair("python", "a laptop screen and a python", "a paper cup and a python"),
    MinimalPair("mole", "a chemistry lab with a mole", "a silver spoon with a mole"),
    MinimalPair("fan", "a football stadium with a fan", "a glass vase with a fan"),
    MinimalPair("cricket", "a sports field and a cricket", "a white candle and a cricket"),
    MinimalPair("trunk", "an elephant and a trunk", "a metal fork and a trunk"),
    MinimalPair("glasses", "a wine bar with glasses", "a brick wall with glasses"),
    MinimalPair("bow", "a violin and a bow", "a plastic bucket and a bow"),
    MinimalPair("dog", "a hot summer day and a dog", "a quiet morning and a dog"),
    MinimalPair("bug", "a computer program with a bug", "a clay pot with a bug"),
    MinimalPair("star", "a movie premiere with a star", "a cardboard box with a star"),
    MinimalPair("chip", "a computer circuit board and a chip", "a sunny window and a chip"),
]


@dataclass
class PairOutcome:
    """The target's leak score in both prompts and the source the detector named in the pulling one."""

    pair: MinimalPair
    pulling_score: float
    neutral_score: float
    pulling_source: str | None

    @property
    def ranked_right(self) -> bool:
        return self.pulling_score > self.neutral_score


def _target_entry(report, target: str):
    matches = [entry for entry in report.items if entry.item.text.split()[-1] == target]
    if not matches:
        raise ValueError(f"No item ending in `{target}` was found in {report.text!r}: check the pair.")
    return matches[-1]


def evaluate_pairs(patcher, pairs: list[MinimalPair] = MINIMAL_PAIRS) -> list[PairOutcome]:
    """Run the patcher on both prompts of every pair (detection only: nothing depends on patching)."""
    options = FlowOptions(detect=True)
    outcomes = []
    for pair in pairs:
        pulling = _target_entry(patcher.run(pair.pulling, options).report, pair.target)
        neutral = _target_entry(patcher.run(pair.neutral, options).report, pair.target)
        source = pulling.source.text if pulling.source else None
        outcomes.append(PairOutcome(pair, pulling.leak_score, neutral.leak_score, source))
    return outcomes


def ranking_accuracy(outcomes: list[PairOutcome]) -> float:
    """The fraction of pairs whose pulling prompt gave the target the higher leak score."""
    return sum(outcome.ranked_right for outcome in outcomes) / len(outcomes)
