"""Walk the WebUI's conditioning in step with the prompt texts, patch it in place, and put it back.

`c` is a `MulticondLearnedConditioning`: `.batch[i]` (one per image) is a list of
`ComposableScheduledPromptConditioning` (one per `AND` sub-prompt) whose `.schedules` is a list of
`ScheduledPromptConditioning(end_at_step, cond)` (one per prompt-editing segment). `cond` is a tensor
`(rows, dim)` or a dict (SDXL, SD 3.5, Flux) whose `crossattn` is patched and whose `vector` is left alone.
The rows of `crossattn` may come from more than one encoder (Forge's SD 3.5: CLIP, then T5): each host module
(`a1111`, `forge`) says which parts they are, and every part is patched with one decision per item
(`flowcore.patching.joint`).

The same cond objects live in the WebUI's class-level cond caches (and are shared between images with
the same prompt and between `n_iter` batches), so every write is recorded in `PENDING` and undone after
sampling: the caches never hold patched conds, and each distinct cond is patched once per pass.

sd-webui-controlnet (Mikubill, `scripts/hook.py`) wraps `p.sample` and puts one row of +-1024 (its mark: cond
or uncond) in front of every cond before the sampling hooks run; its UNet hook takes it off again. That row is
not the prompt's: it is skipped, and the prompt's rows follow it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from flowcore.errors import MappingError
from flowcore.patching.joint import Part, patch_jointly
from flowcore.patching.options import FlowOptions
from flowcore.patching.patcher import FlowPatcher
from flowcore.patching.report import FlowReport
from flowcore.prompts.markers import parse_markers, strip_markers

from .line_layout import plain_text


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
        with _writable(tensor):
            tensor[rows] = values.to(device=tensor.device, dtype=tensor.dtype)

    def restore_all(self) -> int:
        """Put every written row back; returns how many tensors were restored."""
        count = len(self._written)
        for tensor, rows, original in self._written.values():
            with _writable(tensor):
                tensor[rows] = original
        self._written.clear()
        return count


def _writable(tensor: torch.Tensor):
    """Forge makes its conds under `torch.inference_mode`: they may only be written inside it."""
    return torch.inference_mode() if tensor.is_inference() else contextlib.nullcontext()


PENDING = Restorer()


CONTROLNET_MARK = 1024.0  # sd-webui-controlnet's POSITIVE_MARK_TOKEN (its NEGATIVE one is -1024)


def prompt_start(rows: torch.Tensor) -> int:
    """Where the prompt's rows start in a cond `(rows, dim)`: 1 after ControlNet's mark row, else 0."""
    if rows.shape[0] < 2:
        return 0
    off_mark = (rows[0].float().abs() - CONTROLNET_MARK).abs().mean()  # ControlNet's own test of its mark
    return 1 if float(off_mark) < 1e-3 else 0


@dataclass
class Target:
    """One distinct cond to patch: its rows tensor, the line the WebUI encoded and the marked line."""

    cond: torch.Tensor  # (rows, dim), the WebUI's cond tensor (written, and remembered in `PENDING`)
    start: int  # where the prompt's rows start in it (`prompt_start`)
    line: str  # the schedule text the WebUI encoded (markers stripped, emphasis syntax kept)
    marked_line: str  # the same text with the user's markers
    images: list[int] = field(default_factory=list)  # positions in the batch of the images that use it

    @property
    def rows(self) -> torch.Tensor:
        """The prompt's rows `(rows, dim)`, a view into `cond`."""
        return self.cond[self.start :]


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
                cond = _rows_of(entry.cond)
                target = targets.setdefault(id(cond), Target(cond, prompt_start(cond), line, marked_line))
                target.images.append(image)
    return list(targets.values())


def needs_core(target: Target, options: FlowOptions) -> bool:
    """Markers only, no markers in the line, no redundant-token removal: nothing to do (no spaCy run)."""
    return options.parse or options.remove_redundant or target.marked_line != target.line


def patch_target(
    target: Target, parts: Sequence[tuple[object, FlowPatcher]], options: FlowOptions
) -> tuple[torch.Tensor, torch.Tensor, list[FlowReport]]:
    """The rows to write `(changed,)` and their values `(changed, dim)` for one cond, and each part's report.

    1. Lay the line out with each part's own tokenizer (rows, emphasis multipliers). The parts follow each
       other along the rows: the first from row 0, the last (if there are two) to the cond's last row; rows
       between (empty chunks the host added to match a longer prompt of the batch) are left alone.
    2. Divide out each row's emphasis factor: the core sees the encoding without emphasis.
    3. Patch every part with the core, one decision per item (the marked plain text says what was marked).
    4. Re-apply the factors to the rows the core changed; every other row keeps its exact bits.
    """
    # 1. Layout: each part's rows, the first from row 0, the second (if any) up to the cond's last row.
    rows, dim = target.rows.shape
    lines = [part.line_layout(target.line) for part, _ in parts]
    sizes = [line.layout.n_rows for line in lines]
    starts = [0, rows - sizes[-1]][: len(parts)]
    room = rows if len(parts) == 1 else starts[1]  # where the first part's rows may run (padding chunks after)
    if len(parts) > 2 or any(part.width > dim for part, _ in parts) or min(starts) < 0 or sizes[0] > room:
        raise MappingError(f"{target.line!r}: {rows} rows of width {dim} for parts of {sizes} rows")
    if (room - sizes[0]) % lines[0].layout.format.rows:
        raise MappingError(f"{target.line!r}: {rows} rows for {len(lines[0].layout.chunks)} chunk(s)")
    pieces = [
        (part, patcher, line, slice(start, start + size), slice(0, part.width))
        for (part, patcher), line, start, size in zip(parts, lines, starts, sizes)
    ]
    marked_plain = plain_text(parts[0][0].fragments(target.marked_line))
    if any(parse_markers(marked_plain).text != line.layout.text for _, _, line, _, _ in pieces):
        raise MappingError(f"{target.marked_line!r}: markers change how the WebUI parses the prompt")
    pieces = [piece for piece in pieces if piece[0].active]
    # 2. Emphasis out.
    scales, joint = [], []
    for part, patcher, line, row_slice, columns in pieces:
        encoding = target.rows[row_slice, columns].float()
        scale = part.row_scale(encoding, line)
        scales.append(scale)
        raw = encoding / torch.where(scale == 0, torch.ones_like(scale), scale)
        joint.append(Part(part.name, patcher, raw, line.layout))
    # 3. Core.
    results = patch_jointly(joint, marked_plain, options)
    # 4. Emphasis back, on the changed rows only, into whole rows of the cond.
    changed_rows, values = [], []
    for (_, _, _, row_slice, columns), scale, piece, result in zip(pieces, scales, joint, results):
        changed = (result.patched != piece.encoding).any(dim=1).nonzero().flatten()
        whole = target.rows[row_slice][changed].float().clone()
        whole[:, columns] = result.patched[changed] * scale[changed]
        changed_rows.append(changed + row_slice.start)
        values.append(whole)
    return torch.cat(changed_rows), torch.cat(values), [result.report for result in results]


def patch_pass(
    c, prompts, marked, steps_candidates, parts: Sequence[tuple[object, FlowPatcher]], options: FlowOptions
) -> PassResult:
    """Patch every distinct cond of `c` once; prompts that cannot be mapped are skipped (in `problems`).

    All values are computed before anything is written, so an error leaves `c` untouched."""
    result = PassResult()
    targets = collect_targets(c, prompts, marked, steps_candidates, result.problems)
    writes = []
    for target in targets:
        if PENDING.is_patched(target.cond) or not needs_core(target, options):
            continue
        try:
            changed, values, reports = patch_target(target, parts, options)
        except MappingError as error:
            result.problems.append(str(error))
            continue
        result.reports += reports
        for image in target.images:  # an item patched in several parts (SD 3.5: CLIP and T5) is named once
            items = result.patched_items.setdefault(image, [])
            for text in (item.text for report in reports for item in report.patched_items):
                if text not in items:
                    items.append(text)
        if len(changed):
            writes.append((target.cond, changed + target.start, values))
    for rows, changed, values in writes:
        PENDING.write(rows, changed, values)
        result.patched_conds += 1
    return result
