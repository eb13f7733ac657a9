"""A prompt encoded as ComfyUI's `CLIPTextEncode` encodes it, with Follow the Flow's patch on top.

A CONDITIONING is `[[cond (1, rows, width), {"pooled_output": ..., ...}]]`. The prompt is tokenized and encoded
by ComfyUI itself (`clip.tokenize`, `clip.encode_from_tokens_scheduled`), so every row starts out exactly as
`CLIPTextEncode` gives it for the marker-free text. Then, for every part of the rows (`parts.parts_for`):

1. Lay the prompt out as ComfyUI tokenized it (rows and weights per token).
2. Take ComfyUI's weighting out: a weighted row is `(z - empty) * weight + empty`, so `z` is recovered from it
   and the empty prompt's rows (rows of weight 0 carry nothing of `z`: they are encoded again).
3. Patch every part with the core, one decision per item (`flowcore.patching.joint`).
4. Put the weighting back on the patched items' rows as ComfyUI would weigh the item's text encoded alone (its
   empty rows at the item's own positions) and write those rows only: every other row, and the pooled
   output, stay as ComfyUI encoded them.

HiDream's Llama rows are not in `cond` but in the extras (`conditioning_llama3`, every layer): scored on one
layer, patched in all of them (`llm.LlamaStackPart`). Lumina 2's system prompt goes before the text, as
`CLIPTextEncodeLumina2` puts it.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from dataclasses import dataclass, field
from functools import cache

import torch

from flowcore.detection.progress import CalibrationLog
from flowcore.errors import FlowcoreError, MappingError
from flowcore.hosts.token_placement import PlacedLine
from flowcore.models.compat import version_problem
from flowcore.patching.joint import Part, patch_jointly
from flowcore.patching.options import FlowOptions
from flowcore.patching.patcher import FlowPatcher
from flowcore.patching.report import FlowReport
from flowcore.prompts.markers import parse_markers

from .layout import plain_text
from .llm import system_prompt_prefix
from .parts import comfy_fragments, parts_for

logger = logging.getLogger("follow_the_flow")

PREFIX = "[Follow the Flow]"  # starts every line this node pack logs
PATCHER_CACHE_SIZE = 8  # text encoders whose patchers (items encoded alone, calibration) are kept


@dataclass
class Outcome:
    """What the node returns: the conditioning, each part's report (`(name, report)`), the items patched, and
    the notes and problems met (a problem means the conditioning is `CLIPTextEncode`'s, unpatched)."""

    conditioning: list
    reports: list[tuple[str, FlowReport]] = field(default_factory=list)
    patched: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


_PATCHERS: OrderedDict[tuple, FlowPatcher] = OrderedDict()


def patcher_for(part, clip) -> FlowPatcher:
    """The part's `FlowPatcher`, kept across runs while the weights (a LoRA merged in included), the layer read
    and ComfyUI's patch set stay the same; its caches then make a repeated prompt cost lookups only."""
    key = (part.identity(), str(getattr(getattr(clip, "patcher", None), "patches_uuid", "")))
    patcher = _PATCHERS.get(key)
    if patcher is None:
        patcher = FlowPatcher(part, calibration_progress=CalibrationLog(logger, PREFIX, f"the {part.name} encoder"))
        _PATCHERS[key] = patcher
        while len(_PATCHERS) > PATCHER_CACHE_SIZE:
            _PATCHERS.popitem(last=False)
    _PATCHERS.move_to_end(key)
    patcher.encoder = part  # the same weights and settings; this run's objects
    return patcher


def encode(clip, text: str, options: FlowOptions, system_prompt: str | None = None) -> Outcome:
    """`text` (markers allowed) as `CLIPTextEncode` encodes it without its markers (for Lumina 2, as
    `CLIPTextEncodeLumina2` does with `system_prompt`), then patched.

    *Markers only* with no marker returns ComfyUI's conditioning untouched, without running spaCy. Anything that
    goes wrong while patching leaves ComfyUI's conditioning as it is, with the reason in `problems`; errors of
    ComfyUI's own tokenizer or encoder are raised, as `CLIPTextEncode` raises them."""
    if clip is None:
        raise RuntimeError("The clip input is None: the checkpoint loader gave no text encoder.")
    marked = parse_markers(text)
    prefix = system_prompt_prefix(clip, system_prompt)
    tokens = clip.tokenize(prefix + marked.text)
    conditioning = clip.encode_from_tokens_scheduled(tokens)
    outcome = Outcome(conditioning, notes=list(marked.warnings))
    if not options.parse and not marked.spans and not options.remove_redundant:
        outcome.notes.append("Markers only, and the prompt has no markers: nothing to patch.")
        return outcome
    if version_problem():  # ComfyUI's environment holds a version flowcore cannot work with
        outcome.problems.append(version_problem())
        _warn_once(version_problem())
        return outcome
    try:
        outcome.conditioning, outcome.reports = patch_conditioning(
            clip, conditioning, text, marked.text, options, prefix
        )
    except (MappingError, FlowcoreError, NotImplementedError) as error:
        outcome.problems.append(f"left unpatched: {error}")
    except Exception as error:  # never break the workflow: the image is generated unpatched
        logger.debug("Follow the Flow failed", exc_info=True)
        outcome.problems.append(f"left unpatched after an error: {type(error).__name__}: {error}")
    for _, report in outcome.reports:
        outcome.patched += [item.text for item in report.patched_items if item.text not in outcome.patched]
    for problem in outcome.problems:
        logger.warning("%s %s", PREFIX, problem)
    return outcome


@cache
def _warn_once(message: str) -> None:
    """Log `message` once per ComfyUI session (a per-environment problem, not a per-prompt one)."""
    logger.warning("[Follow the Flow] %s", message)


def patch_conditioning(clip, conditioning: list, marked_text: str, line: str, options: FlowOptions, prefix: str = ""):
    """ComfyUI's conditioning of `line` (the prompt without markers; `prefix` before it, Lumina 2's system
    prompt) with the leaked items' rows patched (see the module docstring); returns the new conditioning and
    each part's report. Parts are the conditioning's rows side by side (CLIP, T5, a language model), or a
    tensor of every layer in the extras (HiDream's `conditioning_llama3`)."""
    if len(conditioning) != 1:
        raise MappingError(f"{len(conditioning)} conditionings for one prompt (scheduled CLIP hooks)")
    cond, extras = conditioning[0]
    if cond.ndim != 3 or cond.shape[0] != 1:
        raise MappingError(f"a conditioning of shape {tuple(cond.shape)}")
    parts = parts_for(clip, prefix)
    clip.load_model()
    tokens = clip.tokenize(prefix + line, return_word_ids=True)
    lines = [part.line_layout(line, tokens) for part in parts]
    in_rows = [not hasattr(part, "extra_key") for part in parts]
    starts, total = [], 0
    for laid, rows in zip(lines, in_rows):
        starts.append(total)
        total += laid.layout.n_rows if rows else 0
    widest = max((columns.stop for part, rows in zip(parts, in_rows) if rows for columns in part.columns), default=0)
    if any(in_rows) and (cond.shape[1] != total or cond.shape[2] < widest):
        raise MappingError(f"{tuple(cond.shape[1:])} conditioning rows for parts of {[x.layout.n_rows for x in lines]}")
    readings = [_plain(part, marked_text) for part in parts]
    if len(set(readings)) != 1 or any(parse_markers(r).text != x.layout.text for r, x in zip(readings, lines)):
        raise MappingError("the markers change how ComfyUI parses the prompt's weights")
    marked_plain = readings[0]

    joint = []
    for part, laid, start, rows in zip(parts, lines, starts, in_rows):
        if rows:
            cut = cond[0, start : start + laid.layout.n_rows]
            raw = torch.cat([cut[:, columns] for columns in part.columns], dim=-1).to(part.device, torch.float32)
            scored = _unweighted(part, raw, laid)
        else:  # every layer in the extras, scored on one
            scored = _unweighted_stack(part, extras, laid)[part.score_layer]
        joint.append(Part(part.name, patcher_for(part, clip), scored, laid.layout))
    results = patch_jointly(joint, marked_plain, options)
    for part, result in zip(parts, results):
        if not getattr(part, "weighted", True) and any(piece.weight != 1 for piece in comfy_fragments(line)):
            result.report.warnings.append(
                f"ComfyUI reads weights as text for this model ({part.name}): (word:1.2) is not applied, here neither."
            )

    patched, new_extras = cond.clone(), dict(extras)
    for part, laid, start, result, rows in zip(parts, lines, starts, results, in_rows):
        if not rows:
            new_extras[part.extra_key] = _patched_stack(part, extras[part.extra_key], laid, result.report)
            continue
        for entry in result.report.items:
            if not entry.patched:
                continue
            values = _weighted(part, result.patched[entry.rows], laid.weights[entry.rows])
            first = 0
            for columns in part.columns:
                width = columns.stop - columns.start
                target = values[:, first : first + width].to(device=cond.device, dtype=cond.dtype)
                patched[0, [start + row for row in entry.rows], columns] = target
                first += width
    return [[patched, new_extras]], [(part.name, result.report) for part, result in zip(parts, results)]


def _plain(part, marked_text: str) -> str:
    """The marked prompt as the part reads it (weight syntax parsed, or for weights off, only escapes)."""
    plain = getattr(part, "plain", None)
    return plain(marked_text) if plain is not None else plain_text(comfy_fragments(marked_text))


def _stack_weights(part, laid: PlacedLine, entries: int) -> torch.Tensor:
    """Per stacked entry, the weight ComfyUI moved it by (`llm.LlamaStackPart.entry_weights`); a weight of 0
    cannot be taken out."""
    weights = part.entry_weights(laid.weights, entries)
    if bool((weights == 0).any()):
        raise MappingError("a weight of 0 in the first tokens of a HiDream prompt (it wipes a whole Llama layer)")
    return weights


def _unweighted_stack(part, extras: dict, laid: PlacedLine) -> torch.Tensor:
    """The stacked layers `(entries, rows, width)` in float32 with ComfyUI's per-entry weighting taken out."""
    stack = extras.get(part.extra_key)
    if stack is None or stack.ndim != 4 or stack.shape[0] != 1 or stack.shape[2] != laid.layout.n_rows:
        raise MappingError(f"{part.extra_key} is not every layer of the prompt's {laid.layout.n_rows} tokens")
    raw = stack[0].to(part.device, torch.float32)
    weights = _stack_weights(part, laid, raw.shape[0])
    if bool((weights == 1).all()):
        return raw
    empty = part.empty_stack(laid.layout.n_rows).to(raw.device)
    scale = weights.to(raw.device)[:, None, None]
    return (raw - empty) / scale + empty


def _patched_stack(part, stack: torch.Tensor, laid: PlacedLine, report) -> torch.Tensor:
    """ComfyUI's stack with each patched item's rows, in every entry, replaced by the item alone in every entry
    (weighted as ComfyUI weighted that entry of this prompt)."""
    patched = stack.clone()
    weights = _stack_weights(part, laid, stack.shape[1]).to(part.device)
    empty = part.empty_stack(laid.layout.n_rows) if bool((weights != 1).any()) else None
    token_rows = dict(laid.layout.token_rows())
    for entry in report.items:
        if not entry.patched:
            continue
        ids = [token_rows[row].id for row in entry.rows]
        alone = part.stack_alone(ids, laid.layout.leading)
        if empty is not None:
            rows_empty = empty[:, entry.rows].to(alone.device)
            alone = (alone - rows_empty) * weights[:, None, None] + rows_empty
        patched[0][:, entry.rows] = alone.to(device=stack.device, dtype=stack.dtype)
    return patched


def _unweighted(part, raw: torch.Tensor, laid: PlacedLine) -> torch.Tensor:
    """The rows without ComfyUI's weighting: `z = (row - empty) / weight + empty` (`(rows, width)`)."""
    weights = laid.weights.to(raw.device)
    if bool((weights == 1).all()):
        return raw
    chunk = laid.layout.format.rows
    empty = part.empty_rows(chunk).to(raw.device)
    empty = empty.repeat(raw.shape[0] // chunk, 1)
    weighted = weights != 1
    safe = torch.where(weights == 0, torch.ones_like(weights), weights)[:, None]
    unweighted = torch.where(weighted[:, None], (raw - empty) / safe + empty, raw)
    if bool((weights == 0).any()):  # a weight of 0 leaves only the empty row: encode those rows again
        zero = (weights == 0).nonzero().flatten()
        unweighted[zero] = part.encode(laid.layout).rows.to(raw.device)[zero]
    return unweighted


def _weighted(part, rows: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """An item's rows encoded alone, weighted as ComfyUI weighs that item's text encoded alone: toward the
    empty prompt's rows at the positions the item's tokens have there."""
    weights = weights.to(rows.device)
    if bool((weights == 1).all()):
        return rows
    length, positions = part.alone_positions(rows.shape[0])
    empty = part.empty_rows(length).to(rows.device)[positions]
    return torch.where((weights != 1)[:, None], (rows - empty) * weights[:, None] + empty, rows)
