"""Per-encoder calibration: what "related" and "pulled" mean on this encoder, measured on neutral prompts.

Hidden states differ wildly between encoders (a small LLM's tokens all have cosines near 0.9; MiniLM's spread
out), so no fixed threshold means the same on two models. Once per encoder, flowcore runs the built-in
calibration prompts (`flowcore/data/calibration_prompts.txt`: everyday scenes whose items are unrelated to
each other, written apart from the minimal pairs used to evaluate detection) through the patcher and keeps:

- the mean and standard deviation of every dimension of their token rows, and their few dominant directions
  (`DOMINANT_DIRECTIONS`), which `transform` takes out before any cosine (anisotropy correction);
- the transformed contextual and isolated vectors of their items, against which the hubness terms of a pull
  are measured (`flowcore.detection.leakage`);
- the null distribution: the leak score of every one of their items that another item could have pulled;
  kept apart for items that are tags of a tag list (`tag_null`), since a list of unrelated tags pulls its
  items differently from a sentence (a causal encoder's more). The statistics and the hubness banks come
  from the sentences' items only, so that tag lists change nothing in how sentences are scored.

A sensitivity then means "patch the items whose score is higher than this share of unrelated items'
scores" (`flowcore.detection.leakage.patch_share`), on every encoder. Calibrations are plain tensors saved with
safetensors and a JSON sidecar under `$FLOWCORE_CACHE` (default `~/.cache/flowcore/calibration`), keyed by the
encoder's `identity()` (a sampled fingerprint of its weights and settings), the spaCy pipeline, and this
module's version and prompts. The prompts are encoded `PROMPTS_PER_BATCH` at a time, a causal encoder's in
shared forward calls and without their end tokens and padding (`flowcore.detection.measuring.encode_prompts`): an SD
1.5-size encoder's calibration takes 5 s once on an idle 2-core CPU (`benchmarks/first_run.py`), and front
ends show its progress (`flowcore.detection.progress`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from flowcore.detection.leakage import patch_share, pull_value
from flowcore.errors import CalibrationError

logger = logging.getLogger(__name__)

CALIBRATION_VERSION = 4  # bump when the score or the statistics change: old cache files are then ignored
DOMINANT_DIRECTIONS = 3  # removed after standardising; the first few carry "a token of this model", not meaning
NEIGHBOURS = 10  # k of the hubness terms
PROMPTS_PATH = Path(__file__).parents[1] / "data" / "calibration_prompts.txt"
PROMPTS_PER_BATCH = 28  # calibration prompts per progress step; a causal encoder's share forward calls


def calibration_prompts() -> list[str]:
    """The built-in neutral prompts, one per line (blank lines and `#` comments skipped)."""
    lines = PROMPTS_PATH.read_text(encoding="utf-8").splitlines()
    return [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]


def cache_dir() -> Path:
    """Where calibrations are kept: `$FLOWCORE_CACHE/calibration`, default `~/.cache/flowcore/calibration`."""
    root = os.environ.get("FLOWCORE_CACHE") or Path.home() / ".cache" / "flowcore"
    return Path(root) / "calibration"


def _with_suffix(path: Path, suffix: str) -> Path:
    """`path` with `suffix` appended (keys hold dots, e.g. a spaCy version, that `Path.with_suffix` would cut)."""
    return path.with_name(path.name + suffix)


@dataclass(frozen=True)
class ItemSample:
    """One calibration item: its contextual and position-matched isolated vectors `(dim,)` (raw), the prompt
    it came from, the indices (into the same list) of the items that could have pulled it, and whether it is
    a tag of a tag list (`LexicalItem.tag`)."""

    contextual: torch.Tensor
    isolated: torch.Tensor
    prompt: int
    candidates: tuple[int, ...]
    tag: bool = False


@dataclass
class Calibration:
    """One encoder's statistics (see the module docstring). Shapes: `mean`, `scale` `(dim,)`; `directions`
    `(k, dim)`; `contextual`, `isolated` `(items, dim)`, transformed; `null` and `tag_null` `(scores,)`, sorted
    ascending (`tag_null`: the scores of tags of tag lists; empty: tags are judged against `null`)."""

    mean: torch.Tensor
    scale: torch.Tensor
    directions: torch.Tensor
    contextual: torch.Tensor
    isolated: torch.Tensor
    null: torch.Tensor
    key: str = ""
    tag_null: torch.Tensor = field(default_factory=lambda: torch.zeros(0))

    @classmethod
    def identity(cls, dim: int) -> Calibration:
        """No correction and an empty null: plain cosines, for tests of the scoring arithmetic."""
        empty = torch.zeros(0, dim)
        return cls(torch.zeros(dim), torch.ones(dim), empty, empty, empty, torch.zeros(0))

    def transform(self, vectors: torch.Tensor) -> torch.Tensor:
        """Standardise `(n, dim)` vectors, remove the dominant directions, scale to unit length."""
        x = (vectors.float().to(self.mean.device) - self.mean) / self.scale
        if len(self.directions):
            x = x - (x @ self.directions.T) @ self.directions
        return torch.nn.functional.normalize(x, dim=-1)

    @staticmethod
    def _hubness(vectors: torch.Tensor, bank: torch.Tensor) -> torch.Tensor:
        if not len(bank):
            return torch.zeros(len(vectors))
        similarities = vectors @ bank.T  # (n, bank)
        return similarities.topk(min(NEIGHBOURS, bank.shape[0]), dim=1).values.mean(dim=1)

    def hubness_of_contextual(self, vectors: torch.Tensor) -> torch.Tensor:
        """How close transformed contextual vectors `(n, dim)` are to isolated items in general: `(n,)`."""
        return self._hubness(vectors, self.isolated)

    def hubness_of_isolated(self, vectors: torch.Tensor) -> torch.Tensor:
        """How close transformed isolated vectors `(n, dim)` are to contextual items in general: `(n,)`."""
        return self._hubness(vectors, self.contextual)

    def _null(self, tag: bool) -> torch.Tensor:
        return self.tag_null if tag and len(self.tag_null) else self.null

    def threshold(self, sensitivity: float, tag: bool = False) -> float:
        """The leak score above which an item is patched at `sensitivity` (`flowcore.detection.leakage.patch_share` of
        the null scores reach it; `tag`: of an item that is a tag of a tag list). Shares below one null score
        mean "above every one of them"."""
        null = self._null(tag)
        share = patch_share(sensitivity)
        if share <= 0.0:
            return float("inf")
        if share >= 1.0 or not len(null):
            return float("-inf")
        quantile = torch.quantile(null, 1.0 - share).item()
        return max(quantile, null[-1].item()) if share * len(null) < 1 else quantile

    def share_at_least(self, score: float, tag: bool = False) -> float | None:
        """The share of the null (unrelated items' scores; `tag`: unrelated tags') at or above `score`; None
        without a null."""
        null = self._null(tag)
        if not len(null):
            return None
        return (null >= score).float().mean().item()

    # --- persistence ---

    def save(self, path: str | Path) -> None:
        """Write `path.safetensors` (the tensors) and `path.json` (version and key)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tensors_path, meta_path = _with_suffix(path, ".safetensors"), _with_suffix(path, ".json")
        tensors = {
            "mean": self.mean,
            "scale": self.scale,
            "directions": self.directions,
            "contextual": self.contextual,
            "isolated": self.isolated,
            "null": self.null,
            "tag_null": self.tag_null,
        }
        # Written under temporary names and renamed, so that a process reading the cache never sees half a file.
        partial = path.with_name(f"{path.name}.{os.getpid()}.partial")
        save_file({name: t.contiguous().cpu() for name, t in tensors.items()}, str(partial))
        os.replace(partial, tensors_path)
        meta = {"version": CALIBRATION_VERSION, "key": self.key, "items": len(self.contextual)}
        partial.write_text(json.dumps(meta, indent=2), encoding="utf-8")
        os.replace(partial, meta_path)

    @classmethod
    def load(cls, path: str | Path) -> Calibration:
        path = Path(path)
        meta = json.loads(_with_suffix(path, ".json").read_text(encoding="utf-8"))
        if meta.get("version") != CALIBRATION_VERSION:
            raise CalibrationError(
                f"{path} is a calibration of version {meta.get('version')}, not {CALIBRATION_VERSION}."
            )
        tensors = load_file(str(_with_suffix(path, ".safetensors")))
        return cls(key=meta["key"], **tensors)


def fit(token_rows: torch.Tensor, samples: Sequence[ItemSample], key: str = "") -> Calibration:
    """Fit a calibration from the calibration prompts' token rows `(tokens, dim)` and item samples.

    The hubness banks are the items that are not tags; each item's null score is computed leaving its own
    prompt out of them, as a user's prompt is not in them. An item's candidates are items of its own prompt,
    so they leave the same prompt out."""
    if len(samples) < 2 or token_rows.shape[0] < 2:
        raise CalibrationError("The calibration prompts gave fewer than two items; check the spaCy pipeline.")
    rows = token_rows.float()
    mean = rows.mean(dim=0)
    scale = rows.std(dim=0).clamp_min(1e-6)
    standardised = (rows - mean) / scale
    k = min(DOMINANT_DIRECTIONS, standardised.shape[0] - 1, standardised.shape[1] - 1)
    # Contiguous, as it is read back from the cache: a first run then computes exactly what a cached run does.
    directions = torch.linalg.svd(standardised, full_matrices=False).Vh[:k].contiguous()
    calibration = Calibration(mean, scale, directions, torch.zeros(0), torch.zeros(0), torch.zeros(0), key)
    contextual = calibration.transform(torch.stack([s.contextual for s in samples]))  # (items, dim)
    isolated = calibration.transform(torch.stack([s.isolated for s in samples]))  # (items, dim)
    prompts = torch.tensor([s.prompt for s in samples])
    in_banks = torch.tensor([not s.tag for s in samples])
    similarity = contextual @ isolated.T  # (items, items): item i in context vs item j alone
    elsewhere = (prompts[:, None] != prompts[None, :]) & in_banks[None, :]  # (items, items): j in i's banks
    hubness_contextual = _hubness_elsewhere(similarity, elsewhere).tolist()
    hubness_isolated = _hubness_elsewhere(isolated @ contextual.T, elsewhere).tolist()
    cosines = similarity.tolist()
    null, tag_null = [], []
    for index, sample in enumerate(samples):
        if not sample.candidates:
            continue
        pulls = [
            pull_value(cosines[index][j], hubness_contextual[index], hubness_isolated[j]) for j in sample.candidates
        ]
        (tag_null if sample.tag else null).append(max(pulls))
    calibration.contextual, calibration.isolated = contextual[in_banks], isolated[in_banks]
    calibration.null, calibration.tag_null = torch.tensor(sorted(null)), torch.tensor(sorted(tag_null))
    return calibration


def _hubness_elsewhere(similarities: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
    """`Calibration._hubness` of every row of `similarities` `(n, bank)` against only its `allowed` `(n, bank)`
    bank entries: the mean of its `NEIGHBOURS` largest (of all of them where fewer; 0 where none), `(n,)`."""
    counts = allowed.sum(dim=1).clamp(max=NEIGHBOURS)  # (n,)
    if not len(counts) or counts.max() == 0:
        return torch.zeros(len(counts))
    top = similarities.masked_fill(~allowed, float("-inf")).topk(int(counts.max()), dim=1).values  # descending
    taken = torch.arange(top.shape[1])[None, :] < counts[:, None]
    return top.masked_fill(~taken, 0.0).sum(dim=1) / counts.clamp(min=1)


def calibration_key(encoder_identity: str, nlp_name: str) -> str:
    """The cache key: the encoder's identity, the spaCy pipeline, this module's version and its prompts."""
    prompts = hashlib.sha256("\n".join(calibration_prompts()).encode()).hexdigest()[:8]
    return f"{encoder_identity}-{nlp_name}-v{CALIBRATION_VERSION}-{prompts}"


def load_cached(key: str) -> Calibration | None:
    """The calibration saved under `key`, or None (missing, unreadable or of another version)."""
    path = cache_dir() / key
    if not _with_suffix(path, ".json").is_file():
        return None
    try:
        return Calibration.load(path)
    except (OSError, ValueError, KeyError, CalibrationError) as error:
        logger.warning("Ignoring the cached calibration %s: %s", path, error)
        return None


def store(calibration: Calibration) -> None:
    """Save a calibration under its key; a read-only cache only costs a re-calibration next time."""
    try:
        calibration.save(cache_dir() / calibration.key)
    except OSError as error:
        logger.warning("Could not cache the calibration in %s: %s", cache_dir(), error)
