"""Walk the WebUI's conditioning in step with the prompt texts, patch it in place, and put it back.

`c` is a `MulticondLearnedConditioning`: `.batch[i]` (one per image) is a list of
`ComposableScheduledPromptConditioning` (one per `AND` sub-prompt) whose `.schedules` is a list of
`ScheduledPromptConditioning(end_at_step, cond)` (one per prompt-editing segment). `cond` is a tensor
`(rows, dim)` or, for SDXL, a dict whose `crossattn` is patched and whose `vector` is left alone.

The same cond objects live in the WebUI's class-level cond caches (and are shared between images with
the same prompt and between `n_iter` batches), so every write is recorded in `PENDING` and undone after
sampling: the caches never hold patched conds, and each distinct cond is patched once per pass.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from flowcore.layout import ROWS_PER_CHUNK
from flowcore.markers import parse_markers, strip_markers
from flowcore.options import FlowOptions
from flowcore.patcher import FlowPatcher
from flowcore.report import FlowReport

from .webui_encoder import MappingError, WebuiEncoder


class Restorer:
    """Rows written into shared cond tensors, with their original values, until `restore_all()`."""

    def __init__(self) -> None:
        self._written: dict[int, tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = {}

    def __len__(self) -> int:
        return len(self._written)

    def is_patched(self, tensor: torch.Tensor) -> bool:
        return id(tensor) in self._written

    def write(self, tensor: torch.Tensor, rows: torch.Tensor, values: torch.Tensor) -> None:
        """`tensor[rows] = values` in place, remembering the old rows (a tensor is written once)."""
        if id(tensor) in self._written:
            raise RuntimeError("a cond tensor was patched twice in one pass")
        self._written[id(tensor)] = (tensor, rows, tensor[rows].clone())
        tensor[rows] = values.to(device=tensor.device, dtype=tensor.dtype)

    def restore_all(self) -> int:
        """Put every written row back; returns how many tensors were restored."""
        count = len(self._written)
        for tensor, rows, original in self._written.values():
            tensor[rows] = original
        self._written.clear()
        return count


PENDING = Restorer()


@dataclass
class Target:
    """One distinct cond to patch: its rows tensor, the line the WebUI encoded and the marked line."""

    rows: torch.Tensor  # (rows, dim), a view into the WebUI's cond
    line: str  # the schedule text the WebUI encoded (markers stripped, emphasis syntax kept)
    marked_line: str  # the same text with the user's markers
    images: list[int] = field(default_factory=list)  # positions in the batch of the images that use it


@dataclass
class PassResult:
    """What one sampling pass got: the reports per distinct line, the items patched in each image (by
    position in the batch), and the problems met."""

    reports: list[FlowReport] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    patched_conds: int = 0
    patched_items: dict[int, list[str]] = field(default_factory=dict)


def _rows_of(cond) -> torch.Tensor:
    if isinstance(cond, dict):
        if "crossattn" not in cond:
            raise MappingError(f"a dict cond without `crossattn` (keys {sorted(cond)})")
        return cond["crossattn"]
    if not isinstance(cond, torch.Tensor) or cond.ndim != 2:
        raise MappingError(f"an unexpected cond of type {type(cond).__name__}")
    return cond


def schedules_for(prompts: Sequence[str], steps_candidates: Sequence[tuple[int, int | None]], ends: list[int]):
    """The schedule `[[end, text], ...]` of each sub-prompt whose end steps are `ends`, trying each
    `(base_steps, hires_steps)` pair the WebUI may have used; None when none matches."""
    from modules import prompt_parser, shared

    old = bool(getattr(shared.opts, "use_old_scheduling", False))
    for base, hires in steps_candidates:
        found = prompt_parser.get_learned_conditioning_prompt_schedules(list(prompts), base, hires, old)
        if all([end for end, _ in schedule] == ends for schedule in found):
            return found
    return None


def collect_targets(c, prompts: Sequence[str], marked: Sequence[str], steps_candidates, problems: list[str]):
    """Every distinct cond of `c` with its text. Images whose text cannot be matched are skipped and
    added to `problems`."""
    from modules import prompt_parser

    if len(c.batch) != len(prompts) or len(prompts) != len(marked):
        raise MappingError(f"{len(c.batch)} conds for {len(prompts)} prompts ({len(marked)} marked)")
    targets: dict[int, Target] = {}
    for image, (prompt, marked_prompt) in enumerate(zip(prompts, marked)):
        if strip_markers(marked_prompt) != prompt:
            problems.append(f"image {image + 1}: the prompt changed after its markers were removed")
            continue
        _, subs, _ = prompt_parser.get_multicond_prompt_list([prompt])
        _, marked_subs, _ = prompt_parser.get_multicond_prompt_list([marked_prompt])
        composables = c.batch[image]
        if len(subs) != len(composables):
            problems.append(f"image {image + 1}: {len(composables)} AND parts but {len(subs)} in the prompt")
            continue
        if len(marked_subs) != len(subs):  # a marker made or hid an `AND`: patch without this image's markers
            problems.append(f"image {image + 1}: its markers change where `AND` splits it; they are ignored")
            marked_subs = subs
        for sub, marked_sub, composable in zip(subs, marked_subs, composables):
            ends = [entry.end_at_step for entry in composable.schedules]
            plain = schedules_for([sub], steps_candidates, ends)
            if plain is None:
                problems.append(f"{sub!r}: its prompt-editing steps do not match the conds ({ends})")
                continue
            with_markers = schedules_for([marked_sub], steps_candidates, ends) if marked_sub != sub else plain
            if with_markers is None:
                problems.append(f"{sub!r}: its markers change its prompt editing; they are ignored")
                with_markers = plain
            for entry, (_, line), (_, marked_line) in zip(composable.schedules, plain[0], with_markers[0]):
                if strip_markers(marked_line) != line:  # a marker across `[...]`: patch the line without them
                    problems.append(f"{line!r}: markers across `[...]` or `AND` boundaries are ignored")
                    marked_line = line
                rows = _rows_of(entry.cond)
                targets.setdefault(id(rows), Target(rows, line, marked_line)).images.append(image)
    return list(targets.values())


def needs_core(target: Target, options: FlowOptions) -> bool:
    """Markers only, no markers in the line, no redundant-token removal: nothing to do (no spaCy run)."""
    return options.detect or options.remove_redundant or target.marked_line != target.line


def patch_target(
    target: Target, encoder: WebuiEncoder, patcher: FlowPatcher, options: FlowOptions
) -> tuple[torch.Tensor, torch.Tensor, FlowReport]:
    """The rows to write `(changed,)` and their values `(changed, dim)` for one cond, and the report.

    1. Lay the line out with the WebUI's own tokenizer (rows, emphasis multipliers).
    2. Divide out each row's emphasis factor: the core sees the encoding without emphasis.
    3. Patch with the core (the marked plain text says what the user marked).
    4. Re-apply the factors to the rows the core changed; every other row keeps its exact bits.
    """
    # 1. Layout.
    line = encoder.line_layout(target.line)
    layout = line.layout
    marked_plain = encoder.plain_text(target.marked_line)
    if parse_markers(marked_plain).text != layout.text:
        raise MappingError(f"{target.marked_line!r}: markers change how the WebUI parses the prompt")
    rows, dim = target.rows.shape
    if rows < layout.n_rows or (rows - layout.n_rows) % ROWS_PER_CHUNK:
        raise MappingError(f"{target.line!r}: {rows} rows for {len(layout.chunks)} chunk(s)")
    encoding = target.rows[: layout.n_rows].float()
    # 2. Emphasis out.
    scale = encoder.row_scale(encoding, line)
    safe = torch.where(scale == 0, torch.ones_like(scale), scale)
    raw = encoding / safe
    # 3. Core.
    result = patcher.patch(raw, marked_plain, layout=layout, options=options)
    # 4. Emphasis back, on the changed rows only.
    changed = (result.patched != raw).any(dim=1).nonzero().flatten()
    values = result.patched[changed] * scale[changed]
    return changed, values, result.report


def patch_pass(
    c, prompts, marked, steps_candidates, encoder: WebuiEncoder, patcher: FlowPatcher, options: FlowOptions
) -> PassResult:
    """Patch every distinct cond of `c` once; prompts that cannot be mapped are skipped (in `problems`).

    All values are computed before anything is written, so an error leaves `c` untouched."""
    result = PassResult()
    targets = collect_targets(c, prompts, marked, steps_candidates, result.problems)
    writes = []
    for target in targets:
        if PENDING.is_patched(target.rows) or not needs_core(target, options):
            continue
        try:
            changed, values, report = patch_target(target, encoder, patcher, options)
        except MappingError as error:
            result.problems.append(str(error))
            continue
        result.reports.append(report)
        for image in target.images:
            items = result.patched_items.setdefault(image, [])
            items += [item.text for item in report.patched_items if item.text not in items]
        if len(changed):
            writes.append((target.rows, changed, values))
    for rows, changed, values in writes:
        PENDING.write(rows, changed, values)
        result.patched_conds += 1
    return result
