"""Leakage and presence, computed from encoder outputs alone.

The leak score of an item I compares three encodings of it (all through the same encoder and layer):
  c   its contextual rows in the prompt,
  p   its rows when encoded alone *at the positions it has in the prompt*, so that only the missing
      context differs from c (an item that merely moved has c == p up to the context), and
  q_J the same position-matched isolated encoding of each other item J that could have influenced it
      (in a causal encoder, only items before it in its chunk; in a bidirectional one, any item in it).
Two things make a leak from J into I:
  shift        `cos(c, q_J) - cos(p, q_J)`: the context brought I closer to J's own meaning, and
  relatedness  `cos(p, q_J)`: I's own meaning shares something with J's, a bridge for meaning to flow.
The pull of J on I is their product (relatedness clipped at 0). Shift alone is a poor detector: every
context mixes into every token, and the shift toward an unrelated item is often larger than toward a
related one (on the MiniLM minimal pairs in `flowcore.evaluation` the shift alone ranks the pulling
context higher in 5 of 20 pairs, the product in 17 of 20; `benchmarks/leakage.py` prints this).
The leak score is the largest pull and the source is the item that exerted it. Vectors are an item's
representative row (its last token, in a causal encoder) or the mean of its rows (bidirectional); cosine
keeps every score independent of the WebUI's emphasis scaling.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

# The threshold at sensitivity 0.5, calibrated on the MiniLM minimal pairs (`benchmarks/leakage.py`): it
# separates pulling from neutral contexts there. Not calibrated on CLIP weights, which are not available here.
THRESHOLD_AT_HALF = 0.02


def threshold_for(sensitivity: float) -> float:
    """The leak-score threshold for a sensitivity in [0, 1]: 0 patches nothing, 1 patches any positive pull.

    The threshold halves with every 0.25 of sensitivity above 0.5 and doubles below it, from 0.08 at
    sensitivity 0 (then nothing is patched at all) to 0.005 at 1.
    """
    if sensitivity <= 0.0:
        return float("inf")
    return THRESHOLD_AT_HALF * 2.0 ** (-(sensitivity - 0.5) / 0.25)


def item_vector(rows: torch.Tensor, causal: bool) -> torch.Tensor:
    """One vector for an item's rows `(tokens, dim)`: the last row in a causal encoder (it has seen the
    whole item), the mean otherwise."""
    return rows[-1] if causal else rows.mean(dim=0)


def cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    """Cosine similarity of two vectors, in float32 whatever their dtype."""
    return torch.nn.functional.cosine_similarity(a.float(), b.float(), dim=0).item()


@dataclass
class PullScore:
    """The pull of one candidate source on an item, with its two factors."""

    value: float
    shift: float
    relatedness: float


@dataclass
class LeakScore:
    """An item's leak score, the index of the item that pulled it (or None) and the pull of each candidate."""

    score: float
    source: int | None
    pulls: dict[int, PullScore] = field(default_factory=dict)


def pull(contextual: torch.Tensor, matched: torch.Tensor, source: torch.Tensor) -> PullScore:
    """The pull of a source (its isolated vector) on an item (its contextual and isolated vectors)."""
    relatedness = cosine(matched, source)
    shift = cosine(contextual, source) - relatedness
    return PullScore(shift * max(relatedness, 0.0), shift, relatedness)


def leak_scores(
    contextual: Sequence[torch.Tensor],
    matched: Sequence[torch.Tensor],
    candidates: Sequence[Sequence[int]],
    causal: bool,
) -> list[LeakScore]:
    """Score every item: `contextual[i]` and `matched[i]` are item i's rows `(tokens, dim)` in the prompt and
    encoded alone at the same positions; `candidates[i]` the items that could have influenced item i."""
    c = [item_vector(rows, causal) for rows in contextual]
    p = [item_vector(rows, causal) for rows in matched]
    scores = []
    for i, others in enumerate(candidates):
        pulls = {j: pull(c[i], p[i], p[j]) for j in others}
        if not pulls:
            scores.append(LeakScore(0.0, None, {}))
            continue
        source = max(pulls, key=lambda j: pulls[j].value)
        score = pulls[source].value
        scores.append(LeakScore(score, source if score > 0 else None, pulls))
    return scores


def presence(contextual: torch.Tensor, isolated: torch.Tensor, causal: bool) -> float:
    """How much of an item's own meaning its contextual encoding still carries: the cosine between its
    contextual and position-matched isolated vectors (1 = intact). When an image lacks an item whose
    presence is high, the text encoder carried it and the failure is the decoder's (the paper's
    catastrophic neglect)."""
    return cosine(item_vector(contextual, causal), item_vector(isolated, causal))
