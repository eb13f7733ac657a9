"""Does reading the flow between items catch leaks better than today's pull? (issue 20)

For an item I and each item J that could have pulled it (`FlowPatcher`'s candidates), the flow from J into I
is taken by occlusion, `f = c_I - c_I(without J)`, in the encoder's calibrated space (`flowcore.detection.calibration`):
- total: J hidden from every token (its input embeddings replaced by the padding token's);
- direct: J hidden from I's queries only, at every layer (a 4D attention mask); other tokens still see J.
Each kind gives three scores:
- dpull: the part of today's pull that J's flow made, `pull(c_I) - pull(c_I without J)`;
- dcos: how far the flow points at J's own meaning, `f . q_J` (J alone at its own positions);
- proj: how far it points along `q_J - p_I` (J alone minus I alone), relative to the whole context shift
  `|c_I - p_I|`;
and each is added to today's pull at weights 0.1 to 1 (`pull+0.25*dcos_total`: both standardised on the
calibration prompts' item-source pairs). An item's score is its largest over its candidates, read on that
score's own null: the same scores of the calibration prompts' items (their hubness banks leaving the item's own
prompt out, as `calibration.fit` does; tags of tag lists against the tags' null), so "flagged" means the same
share of unrelated items as today's default sensitivity (0.5).

Printed per variant, pooled over the splits' pairs (`flowcore.studies.evaluation`): AUC (a pulling target's score
against a neutral one's), wins, pulling and neutral targets flagged. `--layer mid` reads the middle layer
(calibrated there, cached under its own key), `--tokens mean` the mean of an item's rows instead of its last.
The encoders are benchmarks/leakage.py's; `--gguf FILE` scores a causal LLM stored as one GGUF file instead
(labelled by the file's name), to check on an encoder the variants were not chosen on. By default the final
splits are left out (they are scored once).

    python benchmarks/flow_scores.py --encoder minilm|smollm2 [--splits dev,held-out,tags-dev] [--limit N]
        [--layer main|mid] [--tokens last|mean]
    python benchmarks/flow_scores.py --gguf FILE [--splits ...] [--limit N] [--layer main|mid] [--tokens last|mean]
"""

from __future__ import annotations

import argparse
import copy
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from leakage import ENCODERS, gguf_encoders

from flowcore import FlowOptions, FlowPatcher, GenericEncoder
from flowcore.detection.calibration import NEIGHBOURS, calibration_prompts
from flowcore.detection.leakage import item_vector, pull_value
from flowcore.encoders.layout import PromptLayout
from flowcore.errors import ModelNotFoundError
from flowcore.studies.evaluation import SPLITS, PairOutcome, minimal_pairs, summarize, target_entry

ENCODER_CHOICES = {"minilm": "MiniLM-L6 (bidirectional)", "smollm2": "SmolLM2-135M (causal)"}
DEFAULT_SPLITS = "dev,held-out,tags-dev"  # where issue 20's designs were chosen
KINDS = ("total", "direct")
FLOWS = ("dpull", "dcos", "proj")
WEIGHTS = (0.1, 0.25, 0.5, 1.0)
OPTIONS = FlowOptions(detect=True)  # automatic detection at the default sensitivity, as benchmarks/leakage.py


# --- occlusion ---


@dataclass(frozen=True)
class Occlusion:
    """One re-encoding of a one-chunk prompt without part of its flow (rows of the encoding): the `hidden`
    rows get the padding token's input embedding, so that no token sees what they held (the total flow of
    their item), and the `queries` rows may not attend to the `keys` rows at any layer (the direct flow)."""

    hidden: tuple[int, ...] = ()
    queries: tuple[int, ...] = ()
    keys: tuple[int, ...] = ()


@torch.no_grad()
def occluded_rows(encoder: GenericEncoder, layout: PromptLayout, occlusions: Sequence[Occlusion]) -> torch.Tensor:
    """The prompt encoded once per occlusion, in one batch: `(occlusions, tokens, dim)` at the encoder's layer,
    `tokens` the rows from the start token to the end token (no padding; the rows of `encoder.encode`)."""
    if len(layout.chunks) != 1:
        raise ValueError(f"Occlusion reads one chunk but {layout.text!r} has {len(layout.chunks)}.")
    ids, positions = encoder.frame([token.id for token in layout.chunks[0]], layout.leading)
    model = encoder.encoder_module
    embed = model.get_input_embeddings()
    device, dtype = encoder.device, embed.weight.dtype
    batch, length = len(occlusions), len(ids)
    inputs = embed(torch.tensor([ids] * batch, device=device))  # (batch, tokens, hidden)
    pad = embed(torch.tensor([encoder.pad_id], device=device))[0]  # (hidden,)
    allowed = torch.ones(length, length, dtype=torch.bool)  # (queries, keys)
    allowed = (allowed.tril() if encoder.causal else allowed).repeat(batch, 1, 1)  # (batch, queries, keys)
    for index, occlusion in enumerate(occlusions):
        if occlusion.hidden:
            inputs[index, list(occlusion.hidden)] = pad
        if occlusion.queries and occlusion.keys:
            allowed[index, torch.tensor(occlusion.queries)[:, None], torch.tensor(occlusion.keys)[None, :]] = False
    mask = torch.zeros(batch, 1, length, length, dtype=dtype).masked_fill(~allowed[:, None], torch.finfo(dtype).min)
    arguments = {"inputs_embeds": inputs, "attention_mask": mask.to(device), "output_hidden_states": True}
    if encoder.supports_positions:
        arguments["position_ids"] = torch.tensor([positions] * batch, device=device)
    return model(**arguments).hidden_states[encoder.layer]


# --- measuring the items of a prompt ---


@dataclass
class Source:
    """A candidate source J of an item I, calibrated vectors `(dim,)`: J alone at its own positions `q`; I in
    context with J hidden from every token `total`, and from I only `direct`."""

    q: torch.Tensor
    total: torch.Tensor
    direct: torch.Tensor


@dataclass
class Measured:
    """An item that can be scored (its tokens alone are the prompt's), calibrated vectors `(dim,)`: in context
    `c`, alone at its own positions `p`; whether it is a tag of a tag list; and its candidate sources."""

    tag: bool
    c: torch.Tensor
    p: torch.Tensor
    sources: list[Source]


def measure(patcher: FlowPatcher, prompt: str, last_token: bool, target: str | None = None) -> list[Measured]:
    """Every scorable item of `prompt` (or only the `target` item: none where it cannot be scored).

    1. Run the patcher: the items, their rows and the candidate sources it scores.
    2. Encode each item alone at its own positions (the patcher's cache); keep the items whose tokens match.
    3. Re-encode the prompt without each source, for every item kept, in one batch.
    `last_token`: an item's vector is its last row in a causal encoder (today's rule), else the mean of its rows.
    """
    # 1. and 2. The items and their encodings alone.
    result = patcher.run(prompt, OPTIONS)
    layout, report = result.layout, result.report
    encoder, calibration = patcher.encoder, patcher.calibration
    tokens = dict(layout.token_rows())
    alone = {entry.item: patcher.isolated_at(layout, entry.rows) for entry in report.items if entry.rows}
    kept = [
        entry
        for entry in report.items
        if entry.rows and alone[entry.item].token_ids == [tokens[r].id for r in entry.rows]
    ]
    if target is not None:
        wanted = target_entry(report, target).item
        kept = [entry for entry in kept if entry.item == wanted]
    rows_of = {entry.item: tuple(entry.rows) for entry in report.items}

    # 3. Every occlusion the kept items need, in one batch: each source hidden once, each (item, source) pair.
    occlusions: dict[Occlusion, int] = {}
    for entry in kept:
        for pull in entry.pulls:
            occlusions.setdefault(Occlusion(hidden=rows_of[pull.source]), len(occlusions))
            occlusions.setdefault(Occlusion(queries=rows_of[entry.item], keys=rows_of[pull.source]), len(occlusions))
    occluded = occluded_rows(encoder, layout, list(occlusions)) if occlusions else None

    def vector(rows: torch.Tensor) -> torch.Tensor:
        return calibration.transform(item_vector(rows, encoder.causal and last_token)[None])[0]

    measured = []
    for entry in kept:
        sources = []
        for pull in entry.pulls:
            total = occluded[occlusions[Occlusion(hidden=rows_of[pull.source])]]
            direct = occluded[occlusions[Occlusion(queries=rows_of[entry.item], keys=rows_of[pull.source])]]
            q = vector(alone[pull.source].rows)
            sources.append(Source(q, vector(total[entry.rows]), vector(direct[entry.rows])))
        c, p = vector(result.original[entry.rows]), vector(alone[entry.item].rows)
        measured.append(Measured(entry.item.tag, c, p, sources))
    return measured


# --- scores ---


@dataclass
class Banks:
    """The hubness banks (`flowcore.detection.leakage`): the calibration prompts' items that are not tags, calibrated,
    in context `contextual` and alone `isolated` `(items, dim)`, and the prompt each came from `(items,)`."""

    contextual: torch.Tensor
    isolated: torch.Tensor
    prompts: torch.Tensor

    @classmethod
    def of(cls, calibration_items: list[list[Measured]]) -> Banks:
        kept = [(number, item) for number, items in enumerate(calibration_items) for item in items if not item.tag]
        return cls(
            torch.stack([item.c for _, item in kept]),
            torch.stack([item.p for _, item in kept]),
            torch.tensor([number for number, _ in kept]),
        )

    @staticmethod
    def _near(vector: torch.Tensor, bank: torch.Tensor) -> float:
        return (bank @ vector).topk(min(NEIGHBOURS, len(bank))).values.mean().item()

    def hubness(self, vector: torch.Tensor, contextual: bool, exclude: int | None) -> float:
        """How close a calibrated vector in context (`contextual`) or alone is to the other kind in general, the
        items of prompt `exclude` left out."""
        bank = self.isolated if contextual else self.contextual
        return self._near(vector, bank if exclude is None else bank[self.prompts != exclude])


def flow_features(item: Measured, source: Source, banks: Banks, exclude: int | None = None) -> dict[str, float]:
    """Today's pull of `source` on `item` and the flow scores of both kinds (see the module docstring)."""

    def pull(contextual: torch.Tensor) -> float:
        similarity = (contextual @ source.q).item()
        return pull_value(similarity, banks.hubness(contextual, True, exclude), banks.hubness(source.q, False, exclude))

    found = {"pull": pull(item.c)}
    toward = source.q - item.p  # from I's own meaning toward J's
    shift = (item.c - item.p).norm().clamp_min(1e-6)  # the whole context shift
    for kind in KINDS:
        without = getattr(source, kind)
        flow = item.c - without
        found[f"dpull_{kind}"] = found["pull"] - pull(without)
        found[f"dcos_{kind}"] = (flow @ source.q).item()
        found[f"proj_{kind}"] = ((flow @ toward) / (toward.norm() * shift)).item()
    return found


Features = list[dict[str, float]]  # an item's features, one dict per candidate source


@dataclass(frozen=True)
class Variant:
    """One score of an item-source pair: `flow` alone ("pull": today's; or a flow score, "dcos_total"), or with
    a `weight`, today's pull plus `weight` x the flow score, both standardised (`Scale`)."""

    flow: str
    weight: float = 0.0

    @property
    def name(self) -> str:
        return f"pull+{self.weight:g}*{self.flow}" if self.weight else self.flow


VARIANTS = [
    Variant("pull"),
    *(Variant(f"{flow}_{kind}") for kind in KINDS for flow in FLOWS),
    *(Variant(f"{flow}_{kind}", weight) for kind in KINDS for flow in FLOWS for weight in WEIGHTS),
]


@dataclass
class Scale:
    """The mean and deviation of every feature over the calibration sentences' item-source pairs."""

    mean: dict[str, float]
    deviation: dict[str, float]

    @classmethod
    def of(cls, items: list[Features]) -> Scale:
        values = {name: torch.tensor([pair[name] for item in items for pair in item]) for name in items[0][0]}
        return cls({n: v.mean().item() for n, v in values.items()}, {n: v.std().item() for n, v in values.items()})

    def score(self, variant: Variant, features: Features) -> float | None:
        """An item's score: the variant's largest over the item's candidate sources (None: nothing could pull it)."""
        if not variant.weight:
            return max((pair[variant.flow] for pair in features), default=None)
        scores = [self._z(pair, "pull") + variant.weight * self._z(pair, variant.flow) for pair in features]
        return max(scores, default=None)

    def _z(self, pair: dict[str, float], name: str) -> float:
        return (pair[name] - self.mean[name]) / self.deviation[name]


def pooled_auc(outcomes: list[PairOutcome]) -> float:
    """The chance that a pulling target outscores a neutral one, over every pairing of the two (ties count
    half; targets nothing could pull left out)."""
    pulling = torch.tensor([o.pulling_score for o in outcomes if o.pulling_score is not None])
    neutral = torch.tensor([o.neutral_score for o in outcomes if o.neutral_score is not None])
    if not len(pulling) or not len(neutral):
        return float("nan")
    above = (pulling[:, None] > neutral[None, :]).float() + 0.5 * (pulling[:, None] == neutral[None, :]).float()
    return above.mean().item()


# --- the table ---


def at_layer(encoder: GenericEncoder, layer: str) -> GenericEncoder:
    """The encoder (`main`), or a copy reading the middle layer's hidden states (`mid`: half its layers, MiniLM 3
    of 6, SmolLM2 15 of 30), which is then calibrated there under its own cache key."""
    if layer == "main":
        return encoder
    middle = copy.copy(encoder)
    middle.layer = encoder.encoder_module.config.num_hidden_layers // 2
    return middle


def flow_table(
    name: str, load: Callable[[], GenericEncoder], splits: list[str], limit: int | None, layer: str, last_token: bool
) -> None:
    """Measure the calibration prompts (the nulls) and the pairs of `splits` on the encoder `load` gives (labelled
    `name`), then print the table."""
    # 1. Load the encoder and its calibration (measured now, or read from the disk cache).
    encoder = at_layer(load(), layer)
    patcher = FlowPatcher(encoder)
    calibration = patcher.calibration

    # 2. The calibration prompts: the hubness banks, then every item's features, leaving its own prompt out.
    started = time.perf_counter()
    prompts = calibration_prompts()
    calibration_items = [measure(patcher, prompt, last_token) for prompt in prompts]
    banks = Banks.of(calibration_items)
    null_items = [
        (item.tag, [flow_features(item, source, banks, number) for source in item.sources])
        for number, items in enumerate(calibration_items)
        for item in items
        if item.sources
    ]
    scale = Scale.of([features for tag, features in null_items if not tag])
    calibrating = time.perf_counter() - started

    # 3. Each variant's threshold at the default sensitivity, on its own null (as `Calibration.threshold`).
    thresholds = {}
    for variant in VARIANTS:
        null = {tag: sorted(scale.score(variant, f) for t, f in null_items if t == tag) for tag in (False, True)}
        judged = replace(calibration, null=torch.tensor(null[False]), tag_null=torch.tensor(null[True]))
        thresholds[variant] = {tag: judged.threshold(OPTIONS.sensitivity, tag=tag) for tag in (False, True)}

    # 4. The pairs: the target's features in the pulling and the neutral prompt, and whether it is a tag.
    started = time.perf_counter()
    pairs = [pair for split in splits for pair in minimal_pairs(split)[:limit]]
    targets = []
    for pair in pairs:
        pulling, neutral = (
            measure(patcher, prompt, last_token, pair.target) for prompt in (pair.pulling, pair.neutral)
        )
        features = [
            [flow_features(item, source, banks) for item in items for source in item.sources]
            for items in (pulling, neutral)
        ]
        targets.append((*features, any(item.tag for item in pulling)))
    measuring = time.perf_counter() - started

    # 5. One row per variant.
    sizes = ", ".join(f"{split} {sum(pair.split == split for pair in pairs)}" for split in splits)
    read = "the last layer" if encoder.layer == -1 else f"layer {encoder.layer}"
    vector = "last row" if last_token else "mean of rows"
    print(f"{name}: hidden states of {read}, item vector {vector}; {len(pairs)} pairs ({sizes})")
    print(f"{'variant':<26} {'AUC':>6} {'wins':>6} {'pulling':>8} {'neutral':>8}")
    auc = {}
    for variant in VARIANTS:
        outcomes = []
        for pair, (pulling, neutral, tag) in zip(pairs, targets):
            p, n = scale.score(variant, pulling), scale.score(variant, neutral)
            flagged = [s is not None and s >= thresholds[variant][tag] for s in (p, n)]
            outcomes.append(PairOutcome(pair, p, n, *flagged, pulling_source=None, tag=tag))
        summary, auc[variant] = summarize(outcomes), pooled_auc(outcomes)
        print(
            f"{variant.name:<26} {auc[variant]:>6.3f} {summary.wins:>6.0%} {summary.pulling_flagged:>8.0%} "
            f"{summary.neutral_flagged:>8.0%}"
        )

    # 6. Checks and times.
    pull, others = VARIANTS[0], VARIANTS[1:]
    if layer == "main" and last_token:
        null = torch.tensor(sorted(scale.score(pull, features) for tag, features in null_items if not tag))
        gap = (null - calibration.null).abs().max().item() if len(null) == len(calibration.null) else float("nan")
        print(f"today's pull recomputed: its null differs from the calibration's by at most {gap:.1e}")
    print(
        f"time: calibration prompts {calibrating:.0f} s ({len(prompts)} prompts), pairs {measuring:.0f} s "
        f"({measuring / max(1, len(pairs)):.2f} s per pair)"
    )
    better = ", ".join(f"{v.name} {auc[v]:.3f}" for v in others if auc[v] >= auc[pull])
    best = max(others, key=auc.get)
    verdict = (
        f"at least as high: {better}" if better else f"no variant is as high; the best {best.name} {auc[best]:.3f}"
    )
    print(f"{name}: pull AUC {auc[pull]:.3f}; {verdict}")


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--encoder", choices=sorted(ENCODER_CHOICES), default="minilm")
    parser.add_argument("--gguf", type=Path, help="score this causal LLM's GGUF file instead of `--encoder`")
    parser.add_argument("--splits", default=DEFAULT_SPLITS, help="comma-separated splits of the pairs")
    parser.add_argument("--limit", type=int, default=None, help="only the first N pairs of each split")
    parser.add_argument("--layer", choices=("main", "mid"), default="main", help="the encoder's layer or a middle one")
    parser.add_argument("--tokens", choices=("last", "mean"), default="last", help="an item's vector in a causal LM")
    args = parser.parse_args(argv)
    splits = args.splits.split(",")
    if unknown := [split for split in splits if split not in SPLITS]:
        parser.error(f"`--splits` must be among {', '.join(SPLITS)} but has {', '.join(unknown)}.")
    if args.limit is not None and args.limit < 1:
        parser.error(f"`--limit` must be at least 1 but is {args.limit}.")
    if args.gguf is not None and not args.gguf.is_file():
        parser.error(f"`--gguf` must be a GGUF file but {str(args.gguf)!r} is not a file.")
    if args.gguf is not None:
        ((name, load),) = gguf_encoders(args.gguf).items()
        chosen = f"--gguf {args.gguf}"
    else:
        name = ENCODER_CHOICES[args.encoder]
        load, chosen = ENCODERS[name], f"--encoder {args.encoder}"
    try:
        flow_table(name, load, splits, args.limit, args.layer, args.tokens == "last")
    except (ModelNotFoundError, ImportError) as error:
        parser.error(f"`{chosen}` is not available: {error}")


if __name__ == "__main__":
    main()
