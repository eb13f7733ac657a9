"""Leakage and presence, computed from encoder outputs alone, on a scale calibrated per encoder.

For an item I the patcher has three kinds of vectors (all from the rows the text-to-image model reads):
  c    I's contextual vector in the prompt (its last row in a causal encoder, the mean of its rows otherwise),
  p    I encoded alone *at the positions it has in the prompt*, so that only the missing context differs, and
  q_J  the same position-matched isolated vector of each item J that could have influenced I (in a causal
       encoder only items before I in its chunk; in a bidirectional one any other item in it).

Raw hidden states are anisotropic: every pair of tokens has a high cosine, dominated by a few directions that
say "this is a token of this model", and a cosine that means "related" on one encoder means nothing on
another. So every vector first goes through its encoder's `Calibration` (`flowcore.detection.calibration`): each
dimension is standardised, the few dominant directions are removed, the result is scaled to unit length.

The pull of J on I is then how much closer I's contextual vector is to J's own meaning than either vector is,
typically, to anything (the hubness correction CSLS of cross-lingual word retrieval, Conneau et al. 2018):
    pull(J -> I) = 2 cos(c, q_J) - r(c) - r(q_J),
where r(c) is the mean cosine of c with its k nearest isolated items of the calibration prompts and r(q_J)
that of q_J with its k nearest contextual items there. The leak score is the largest pull, the source the
item that exerted it. Whether a score is high is read off the encoder's own null distribution: the pulls
seen in the calibration prompts, whose items are unrelated to each other (see `patch_share`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

import torch

DEFAULT_PATCH_SHARE = 0.10  # at sensitivity 0.5: about 1 in 10 items that nothing pulled is patched anyway


class CalibratedSpace(Protocol):
    """What scoring needs from an encoder's calibration (`flowcore.detection.calibration.Calibration` is one):
    the map into the calibrated space and each side's hubness there."""

    def transform(self, vectors: torch.Tensor) -> torch.Tensor: ...

    def hubness_of_contextual(self, vectors: torch.Tensor) -> torch.Tensor: ...

    def hubness_of_isolated(self, vectors: torch.Tensor) -> torch.Tensor: ...


def patch_share(sensitivity: float) -> float:
    """The share of unrelated items a sensitivity patches (the calibration prompts' items score above the
    threshold this often): 0 at sensitivity 0 (nothing is patched), 10% at 0.5, 100% at 1.

    Between, each 0.5 of sensitivity multiplies the share by 10: 3.2% at 0.25, 32% at 0.75."""
    if sensitivity <= 0.0:
        return 0.0
    return min(1.0, DEFAULT_PATCH_SHARE * 10.0 ** ((sensitivity - 0.5) / 0.5))


def item_vector(rows: torch.Tensor, causal: bool) -> torch.Tensor:
    """One vector for an item's rows `(tokens, dim)`: the last row in a causal encoder (it has seen the
    whole item), the mean otherwise."""
    return rows[-1] if causal else rows.mean(dim=0)


def cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    """Cosine similarity of two vectors, in float32 whatever their dtype."""
    return torch.nn.functional.cosine_similarity(a.float(), b.float(), dim=0).item()


@dataclass
class PullScore:
    """The pull of one candidate source on an item, with the cosines it comes from (calibrated space):
    `similarity` between the item in context and the source alone, `relatedness` between both alone."""

    value: float
    similarity: float
    relatedness: float


@dataclass
class LeakScore:
    """An item's leak score, the index of the item that pulled it (or None) and the pull of each candidate."""

    score: float
    source: int | None
    pulls: dict[int, PullScore] = field(default_factory=dict)


def pull_value(similarity: float, hubness_contextual: float, hubness_isolated: float) -> float:
    """The pull (CSLS): twice the calibrated cosine of the item in context with the source alone, less how
    close each of the two is to anything (their hubness)."""
    return 2 * similarity - hubness_contextual - hubness_isolated


def leak_scores(
    contextual: Sequence[torch.Tensor],
    matched: Sequence[torch.Tensor],
    candidates: Sequence[Sequence[int]],
    causal: bool,
    calibration: CalibratedSpace,
) -> list[LeakScore]:
    """Score every item: `contextual[i]` and `matched[i]` are item i's rows `(tokens, dim)` in the prompt and
    encoded alone at the same positions; `candidates[i]` the items that could have influenced item i."""
    if not contextual:
        return []
    c = calibration.transform(torch.stack([item_vector(rows, causal) for rows in contextual]))  # (items, dim)
    p = calibration.transform(torch.stack([item_vector(rows, causal) for rows in matched]))  # (items, dim)
    r_c = calibration.hubness_of_contextual(c)  # (items,)
    r_p = calibration.hubness_of_isolated(p)  # (items,)
    similarity = (c @ p.T).tolist()  # [i][j]: item i in context vs item j alone
    relatedness = (p @ p.T).tolist()
    scores = []
    for i, others in enumerate(candidates):
        pulls = {
            j: PullScore(
                pull_value(similarity[i][j], r_c[i].item(), r_p[j].item()), similarity[i][j], relatedness[i][j]
            )
            for j in others
        }
        if not pulls:
            scores.append(LeakScore(0.0, None, {}))
            continue
        source = max(pulls, key=lambda j: pulls[j].value)
        scores.append(LeakScore(pulls[source].value, source, pulls))
    return scores


def presence(contextual: torch.Tensor, isolated: torch.Tensor, causal: bool) -> float:
    """How much of an item's own meaning its contextual encoding still carries: the cosine between its
    contextual and position-matched isolated vectors (1 = intact). When an image lacks an item whose
    presence is high, the text encoder carried it and the failure is the decoder's (the paper's
    catastrophic neglect)."""
    return cosine(item_vector(contextual, causal), item_vector(isolated, causal))


def scorable(matched: Sequence[torch.Tensor | None], candidates: Sequence[Sequence[int]]) -> list[list[int]]:
    """Per item whose rows alone match its tokens in the prompt (`matched[i]` not None), the candidate sources
    that match too; an empty list for every other item. Nothing to score where every list is empty."""
    return [
        [j for j in others if matched[j] is not None] if matched[i] is not None else []
        for i, others in enumerate(candidates)
    ]


def leak_scores_by_item(
    contextual: Sequence[torch.Tensor],
    matched: Sequence[torch.Tensor | None],
    sources: Sequence[Sequence[int]],
    causal: bool,
    calibration: CalibratedSpace,
) -> dict[int, LeakScore]:
    """`leak_scores` of the items that have rows alone (`matched[i]` not None), by item index, for the items
    that some source pulled; `sources` from `scorable`."""
    usable = [index for index, rows in enumerate(matched) if rows is not None]
    found = leak_scores(
        [contextual[i] for i in usable],
        [matched[i] for i in usable],
        [[usable.index(j) for j in sources[i]] for i in usable],
        causal,
        calibration,
    )
    scores = {}
    for n, score in enumerate(found):  # back from indices into `usable` to item indices
        if score.source is not None:
            pulls = {usable[j]: pull for j, pull in score.pulls.items()}
            scores[usable[n]] = LeakScore(score.score, usable[score.source], pulls)
    return scores
