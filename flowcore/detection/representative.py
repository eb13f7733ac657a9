"""Representative tokens: which of an item's tokens carry its meaning (the rest are redundant).

Two ways to find them:
- the rule for causal encoders (CLIP): the item's last token has seen the whole item and carries it;
- `RepresentativeClassifier`, a k-nearest-neighbour classifier over token vectors for any encoder (the
  paper reports 92% precision for k-NN), fitted from a labelled file, saved as safetensors + JSON (never
  pickle), and evaluated on held-out labels.

Labelled files are JSON Lines, one item per line:
    {"prompt": "a crosswalk with a standing zebra", "item": "standing zebra", "representative": ["zebra"]}
Every token of the item's words listed in `representative` is labelled representative, every other token
of the item redundant.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from flowcore.errors import LabelsError, OptionsError


def last_token_rows(rows: Sequence[int]) -> list[int]:
    """The rule for causal encoders: an item's last token carries the whole item."""
    return list(rows[-1:])


@dataclass(frozen=True)
class LabelledItem:
    """One labelled item: the prompt, the item's text in it, and its representative words."""

    prompt: str
    item: str
    representative: tuple[str, ...]


def read_labels(path: str | Path) -> list[LabelledItem]:
    """Read a JSON Lines file of labelled items (see the module docstring); errors name the bad line."""
    records = []
    for number, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            data = json.loads(line)
            record = LabelledItem(data["prompt"], data["item"], tuple(data["representative"]))
        except (json.JSONDecodeError, KeyError, TypeError) as error:
            raise LabelsError(f"{path}:{number}: expected {{prompt, item, representative}}: {error}") from error
        if record.item not in record.prompt:
            raise LabelsError(f"{path}:{number}: item {record.item!r} is not in prompt {record.prompt!r}")
        records.append(record)
    return records


def token_examples(encoder, records: Sequence[LabelledItem]) -> tuple[torch.Tensor, torch.Tensor]:
    """Encode each record's prompt and return its item tokens' vectors `(tokens, dim)` and labels `(tokens,)`."""
    vectors, labels = [], []
    for record in records:
        layout = encoder.layout(record.prompt)
        rows = encoder.encode(layout).rows
        start = record.prompt.index(record.item)
        keep = [
            (start + offset, start + offset + len(word))
            for word, offset in _word_spans(record.item)
            if word in record.representative
        ]
        for row, token in layout.token_rows():
            if start <= token.start < start + len(record.item):
                vectors.append(rows[row].float())
                labels.append(any(a <= token.start < b for a, b in keep))
    if not vectors:
        raise LabelsError("No labelled tokens were found: check that the items occur in their prompts.")
    return torch.stack(vectors), torch.tensor(labels)


def _word_spans(text: str) -> list[tuple[str, int]]:
    spans, offset = [], 0
    for word in text.split():
        offset = text.index(word, offset)
        spans.append((word, offset))
        offset += len(word)
    return spans


class RepresentativeClassifier:
    """k-nearest-neighbour classifier (cosine similarity, majority vote) over token vectors."""

    def __init__(self, k: int = 5):
        if k < 1:
            raise OptionsError(f"`k` must be at least 1 but is {k}.")
        self.k = k
        self.vectors: torch.Tensor | None = None  # (examples, dim), unit length
        self.labels: torch.Tensor | None = None  # (examples,), bool

    def fit(self, vectors: torch.Tensor, labels: torch.Tensor) -> RepresentativeClassifier:
        """Remember the labelled token vectors `(examples, dim)` and labels `(examples,)`."""
        if vectors.ndim != 2 or labels.shape != (vectors.shape[0],):
            raise LabelsError(
                f"`vectors` (n, dim) and `labels` (n,) do not match: {tuple(vectors.shape)}, {tuple(labels.shape)}."
            )
        self.vectors = torch.nn.functional.normalize(vectors.float(), dim=1)
        self.labels = labels.bool()
        return self

    def predict(self, vectors: torch.Tensor) -> torch.Tensor:
        """Whether each token vector `(n, dim)` is representative: `(n,)` bool."""
        if self.vectors is None:
            raise LabelsError("The classifier has not been fitted or loaded: call `fit` or `load` first.")
        queries = torch.nn.functional.normalize(vectors.float().to(self.vectors.device), dim=1)
        k = min(self.k, self.vectors.shape[0])
        nearest = (queries @ self.vectors.T).topk(k, dim=1).indices  # (n, k)
        return self.labels[nearest].float().mean(dim=1) > 0.5

    def evaluate(self, vectors: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
        """Precision and recall of the "representative" class, and accuracy, on held-out examples."""
        predicted = self.predict(vectors)
        labels = labels.bool()
        true_positive = (predicted & labels).sum().item()
        return {
            "precision": true_positive / max(predicted.sum().item(), 1),
            "recall": true_positive / max(labels.sum().item(), 1),
            "accuracy": (predicted == labels).float().mean().item(),
            "examples": int(labels.numel()),
        }

    def save(self, path: str | Path) -> None:
        """Write `path.safetensors` (vectors, labels) and `path.json` (k and shapes)."""
        if self.vectors is None:
            raise LabelsError("The classifier has not been fitted: call `fit` first.")
        path = Path(path)
        save_file({"vectors": self.vectors.contiguous(), "labels": self.labels.to(torch.uint8)}, f"{path}.safetensors")
        meta = {"k": self.k, "examples": int(self.vectors.shape[0]), "dim": int(self.vectors.shape[1])}
        Path(f"{path}.json").write_text(json.dumps(meta, indent=2))

    @classmethod
    def load(cls, path: str | Path) -> RepresentativeClassifier:
        """Read a classifier written by `save`."""
        meta = json.loads(Path(f"{path}.json").read_text())
        tensors = load_file(f"{path}.safetensors")
        return cls(k=meta["k"]).fit(tensors["vectors"], tensors["labels"].bool())


def representative_rows(
    rows: list[int], encoding: torch.Tensor, classifier: RepresentativeClassifier | None = None
) -> list[int]:
    """An item's representative rows among its `rows` of `encoding`: the classifier's choice where one is given
    and it keeps at least one row, else the last-token rule (`last_token_rows`)."""
    if classifier is not None:
        chosen = [row for row, keep in zip(rows, classifier.predict(encoding[rows]).tolist()) if keep]
        if chosen:
            return chosen
    return last_token_rows(rows)
