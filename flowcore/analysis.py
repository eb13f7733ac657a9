"""Leakage, representative tokens and presence, computed from encoder outputs alone.

The leak score of an item I compares three encodings of it (all through the same encoder and layer):
  c   its contextual rows in the prompt,
  p   its rows when encoded alone *at the positions it has in the prompt* (so that only the missing
      context differs from c: an item that merely moved scores zero), and
  q_J the same position-matched isolated encoding of each other item J that could have influenced it
      (in a causal encoder, only items before it in its chunk; in a bidirectional one, any item in it).
The pull of J on I is `cos(c, q_J) - cos(p, q_J)`: how much closer to J's own meaning the context brought
I. The leak score is the largest pull, and the source is the item that exerted it. Vectors are the item's
representative row (its last token, in a causal encoder) or the mean of its rows (bidirectional), and
cosine keeps every score independent of the WebUI's emphasis scaling.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

# Leak scores are cosine differences. At sensitivity 0.5 an item is patched when the context brought it
# 0.02 closer to another item's own meaning; see `threshold_for`.
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
class LeakScore:
    """An item's leak score, the index of the item that pulled it (or None) and the pull of each candidate."""

    score: float
    source: int | None
    pulls: dict[int, float] = field(default_factory=dict)


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
        pulls = {j: cosine(c[i], p[j]) - cosine(p[i], p[j]) for j in others}
        if not pulls:
            scores.append(LeakScore(0.0, None, {}))
            continue
        source = max(pulls, key=pulls.get)
        score = pulls[source]
        scores.append(LeakScore(score, source if score > 0 else None, pulls))
    return scores


def presence(contextual: torch.Tensor, isolated: torch.Tensor, causal: bool) -> float:
    """How much of an item's own meaning its contextual encoding still carries: the cosine between its
    contextual and position-matched isolated vectors (1 = intact). When an image lacks an item whose
    presence is high, the text encoder carried it and the failure is the decoder's (the paper's
    catastrophic neglect)."""
    return cosine(item_vector(contextual, causal), item_vector(isolated, causal))


def last_token_rows(rows: Sequence[int]) -> list[int]:
    """The representative-token rule for causal encoders: an item's last token carries the whole item."""
    return list(rows[-1:])
