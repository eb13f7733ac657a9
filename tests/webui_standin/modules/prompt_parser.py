"""Stand-in for ``modules/prompt_parser.py`` of the AUTOMATIC1111 WebUI (v1.10.1).

Written from scratch: the WebUI parses prompt editing with a ``lark`` Earley grammar; this module
uses a small hand-written recursive parser that accepts the same language and picks the same
derivation (a bracket construct is preferred over reading ``[`` as a literal character; a stray
``|`` or a dangling backslash makes the whole prompt unparseable, in which case the prompt is one
schedule entry, as in the WebUI). Behaviour was checked against the real module, see README.md.
"""

from __future__ import annotations

import re
from collections import namedtuple
from dataclasses import dataclass

import torch

# --------------------------------------------------------------------------------------------
# prompt editing / alternation: a tiny parser
# --------------------------------------------------------------------------------------------

_NUMBER = re.compile(r"[+-]?(?:\d+(?:\.\d*)?(?:[eE][+-]?\d+)?|\.\d+(?:[eE][+-]?\d+)?)")
_NUMBER_PART = re.compile(r"\s*(" + _NUMBER.pattern + r")\s*")


class _Unparseable(Exception):
    pass


@dataclass
class _Scheduled:
    before: list | None  # nodes shown while step <= when (None: nothing)
    after: list  # nodes shown afterwards
    number: str  # the number as written
    when: int = 0  # filled in by _collect_steps


@dataclass
class _Alternate:
    options: list  # list of node lists, one per "|" option


def _find_close(text: str, start: int) -> int | None:
    """Index of the bracket closing the one at ``start``, honouring nesting and escapes.

    Returns None where brackets inside are unbalanced (then the construct cannot be a nested
    prompt)."""
    pairs = {"(": ")", "[": "]"}
    stack = [pairs[text[start]]]
    i = start + 1
    while i < len(text):
        ch = text[i]
        if ch == "\\":
            if i + 1 >= len(text) or text[i + 1] == "\n":
                return None
            i += 2
            continue
        if ch in pairs:
            stack.append(pairs[ch])
        elif ch in ")]":
            if stack[-1] != ch:
                return None
            stack.pop()
            if not stack:
                return i
        i += 1
    return None


def _split_top(text: str, lo: int, hi: int, seps: str) -> list[tuple[int, str]]:
    """Positions of separator characters in text[lo:hi] outside nested brackets."""
    found = []
    depth = 0
    i = lo
    while i < hi:
        ch = text[i]
        if ch == "\\":
            i += 2
            continue
        if ch in "([":
            depth += 1
        elif ch in ")]":
            depth -= 1
        elif depth == 0 and ch in seps:
            found.append((i, ch))
        i += 1
    return found


def _nested(text: str, lo: int, hi: int) -> list | None:
    """Parse text[lo:hi] as a nested prompt (brackets must form valid constructs)."""
    nodes: list = []
    i = lo
    buf = []
    while i < hi:
        ch = text[i]
        if ch == "\\":
            if i + 1 >= hi or text[i + 1] == "\n":
                return None
            buf.append(text[i : i + 2])
            i += 2
        elif ch in "([":
            close = _find_close(text, i)
            if close is None or close >= hi:
                return None
            node = _bracket(text, i, close) if ch == "[" else _paren(text, i, close)
            if node is None:
                return None
            if buf:
                nodes.append("".join(buf))
                buf = []
            nodes.extend(node) if isinstance(node, list) else nodes.append(node)
            i = close + 1
        elif ch in ")]:|":
            return None
        else:
            buf.append(ch)
            i += 1
    if buf:
        nodes.append("".join(buf))
    return nodes


def _paren(text: str, lo: int, close: int) -> list | None:
    """``(prompt)`` or ``(prompt:prompt)``: kept verbatim, inner constructs still parsed."""
    colons = _split_top(text, lo + 1, close, ":|")
    if any(ch == "|" for _, ch in colons) or len(colons) > 1:
        return None
    cuts = [lo + 1] + [p for p, _ in colons] + [close]
    out: list = ["("]
    for k in range(len(cuts) - 1):
        a = cuts[k] + (1 if k else 0)
        part = _nested(text, a, cuts[k + 1])
        if part is None:
            return None
        if k:
            out.append(":")
        out.extend(part)
    out.append(")")
    return out


def _bracket(text: str, lo: int, close: int):
    """``[prompt]``, ``[a:b:n]``, ``[b:n]`` or ``[a|b|...]``; None where none of them fits."""
    seps = _split_top(text, lo + 1, close, ":|")
    kinds = {ch for _, ch in seps}
    if not seps:
        inner = _nested(text, lo + 1, close)
        return None if inner is None else ["[", *inner, "]"]
    if kinds == {"|"}:
        cuts = [lo] + [p for p, _ in seps] + [close]
        options = []
        for k in range(len(cuts) - 1):
            part = _nested(text, cuts[k] + 1, cuts[k + 1])
            if part is None:
                return None
            options.append(part)
        return _Alternate(options)
    if kinds == {":"} and len(seps) in (1, 2):
        number_match = _NUMBER_PART.fullmatch(text, seps[-1][0] + 1, close)
        if number_match is None:
            return None
        stripped = number_match.group(1)
        if len(seps) == 2:
            before = _nested(text, lo + 1, seps[0][0])
            after = _nested(text, seps[0][0] + 1, seps[1][0])
            if before is None or after is None:
                return None
        else:
            before = None
            after = _nested(text, lo + 1, seps[0][0])
            if after is None:
                return None
        return _Scheduled(before, after, stripped)
    return None


def _parse(text: str, strays: list | None = None) -> list:
    """Top level: like a nested prompt, but ``[ ] ( ) :`` that start no valid construct are
    plain characters. A stray ``|`` or an unfinished escape makes the prompt unparseable."""
    nodes: list = []
    buf = []
    i = 0
    while i < len(text):
        ch = text[i]
        if ch == "\\":
            if i + 1 >= len(text) or text[i + 1] == "\n":
                raise _Unparseable(text)
            buf.append(text[i : i + 2])
            i += 2
            continue
        if ch == "|":
            raise _Unparseable(text)
        if ch in "([":
            close = _find_close(text, i)
            node = None
            if close is not None:
                node = _bracket(text, i, close) if ch == "[" else _paren(text, i, close)
            if node is not None:
                if buf:
                    nodes.append("".join(buf))
                    buf = []
                nodes.extend(node) if isinstance(node, list) else nodes.append(node)
                i = close + 1
                continue
        if strays is not None and ch in "[]():":
            strays.append(i)
        buf.append(ch)
        i += 1
    if buf:
        nodes.append("".join(buf))
    return nodes


def _walk(nodes):
    for node in nodes:
        if isinstance(node, _Scheduled):
            yield node
            if node.before:
                yield from _walk(node.before)
            yield from _walk(node.after)
        elif isinstance(node, _Alternate):
            yield node
            for option in node.options:
                yield from _walk(option)


def _render(nodes, step: int) -> str:
    out = []
    for node in nodes:
        if isinstance(node, str):
            out.append(node)
        elif isinstance(node, _Scheduled):
            chosen = (node.before or []) if step <= node.when else node.after
            out.append(_render(chosen, step))
        else:
            out.append(_render(node.options[(step - 1) % len(node.options)], step))
    return "".join(out)


def get_learned_conditioning_prompt_schedules(prompts, base_steps, hires_steps=None, use_old_scheduling=False):
    """Same contract as the WebUI: for each prompt a list of ``[end_at_step, text]`` pairs.

    >>> g = lambda p: get_learned_conditioning_prompt_schedules([p], 10)[0]
    >>> g("a [b:3]")
    [[3, 'a '], [10, 'a b']]
    """
    if hires_steps is None or use_old_scheduling:
        int_offset, flt_offset, steps = 0, 0, base_steps
    else:
        int_offset, flt_offset, steps = base_steps, 1.0, hires_steps

    def schedule(prompt):
        try:
            nodes = _parse(prompt)
        except _Unparseable:
            return [[steps, prompt]]
        boundaries = {steps}
        for node in _walk(nodes):
            if isinstance(node, _Alternate):
                boundaries.update(range(1, steps + 1))
                continue
            value = float(node.number)
            if use_old_scheduling:
                if value < 1:
                    value *= steps
            elif "." in node.number:
                value = (value - flt_offset) * steps
            else:
                value = value - int_offset
            node.when = min(steps, int(value))
            if node.when >= 1:
                boundaries.add(node.when)
        return [[t, _render(nodes, t)] for t in sorted(boundaries)]

    by_prompt = {prompt: schedule(prompt) for prompt in set(prompts)}
    return [by_prompt[prompt] for prompt in prompts]


# --------------------------------------------------------------------------------------------
# conditioning containers
# --------------------------------------------------------------------------------------------

ScheduledPromptConditioning = namedtuple("ScheduledPromptConditioning", ["end_at_step", "cond"])


class SdConditioning(list):
    """A list of prompts that also carries width, height and whether it is the negative prompt
    (Forge also ``distilled_cfg_scale``; the A1111 class has no such argument)."""

    def __init__(
        self, prompts, is_negative_prompt=False, width=None, height=None, copy_from=None, distilled_cfg_scale=None
    ):
        super().__init__()
        self.extend(prompts)
        source = prompts if copy_from is None else copy_from
        self.is_negative_prompt = is_negative_prompt or getattr(source, "is_negative_prompt", False)
        self.width = width or getattr(source, "width", None)
        self.height = height or getattr(source, "height", None)
        self.distilled_cfg_scale = distilled_cfg_scale or getattr(source, "distilled_cfg_scale", None)


def get_learned_conditioning(
    model, prompts: SdConditioning | list[str], steps, hires_steps=None, use_old_scheduling=False
):
    """One schedule (list of ScheduledPromptConditioning) per prompt; identical prompts share the
    very same list object. All texts of one prompt's schedule are encoded in one model call."""
    schedules = get_learned_conditioning_prompt_schedules(prompts, steps, hires_steps, use_old_scheduling)
    done: dict = {}
    result = []
    for prompt, schedule in zip(prompts, schedules):
        if prompt in done:
            result.append(done[prompt])
            continue
        texts = SdConditioning([text for _, text in schedule], copy_from=prompts)
        conds = model.get_learned_conditioning(texts)
        entries = []
        for index, (end_at_step, _) in enumerate(schedule):
            cond = {key: value[index] for key, value in conds.items()} if isinstance(conds, dict) else conds[index]
            entries.append(ScheduledPromptConditioning(end_at_step, cond))
        done[prompt] = entries
        result.append(entries)
    return result


re_AND = re.compile(r"\bAND\b")
re_weight = re.compile(r"^((?:\s|.)*?)(?:\s*:\s*([-+]?(?:\d+\.?|\d*\.\d+)))?\s*$")


def get_multicond_prompt_list(prompts: SdConditioning | list[str]):
    """Split every prompt at ``AND`` into (text, weight) sub-prompts.

    Returns ``(res_indexes, prompt_flat_list, prompt_indexes)``: per prompt a list of
    ``(index into flat list, weight)``; the flat list of unique sub-prompt texts (an SdConditioning
    carrying the attributes of ``prompts``); and text -> index."""
    res_indexes = []
    prompt_indexes: dict = {}
    flat = SdConditioning(prompts)
    flat.clear()
    for prompt in prompts:
        indexes = []
        for sub in re_AND.split(prompt):
            match = re_weight.search(sub)
            text, weight = match.groups() if match is not None else (sub, 1.0)
            weight = float(weight) if weight is not None else 1.0
            if text not in prompt_indexes:
                prompt_indexes[text] = len(flat)
                flat.append(text)
            indexes.append((prompt_indexes[text], weight))
        res_indexes.append(indexes)
    return res_indexes, flat, prompt_indexes


class ComposableScheduledPromptConditioning:
    def __init__(self, schedules, weight=1.0):
        self.schedules: list[ScheduledPromptConditioning] = schedules
        self.weight: float = weight


class MulticondLearnedConditioning:
    def __init__(self, shape, batch):
        self.shape: tuple = shape
        self.batch: list[list[ComposableScheduledPromptConditioning]] = batch


def get_multicond_learned_conditioning(
    model, prompts, steps, hires_steps=None, use_old_scheduling=False
) -> MulticondLearnedConditioning:
    res_indexes, flat, _ = get_multicond_prompt_list(prompts)
    learned = get_learned_conditioning(model, flat, steps, hires_steps, use_old_scheduling)
    batch = [
        [ComposableScheduledPromptConditioning(learned[i], weight) for i, weight in indexes] for indexes in res_indexes
    ]
    return MulticondLearnedConditioning(shape=(len(prompts),), batch=batch)


class DictWithShape(dict):
    def __init__(self, x, shape=None):
        super().__init__()
        self.update(x)

    @property
    def shape(self):
        return self["crossattn"].shape


def _pick(schedules, current_step):
    for index, entry in enumerate(schedules):
        if current_step <= entry.end_at_step:
            return index
    return 0


def reconstruct_cond_batch(c: list[list[ScheduledPromptConditioning]], current_step):
    """The uncond tensor (or dict) the sampler uses at ``current_step`` (0-based in the sampler)."""
    first = c[0][0].cond
    if isinstance(first, dict):
        res = DictWithShape(
            {k: torch.zeros((len(c),) + v.shape, device=v.device, dtype=v.dtype) for k, v in first.items()}
        )
    else:
        res = torch.zeros((len(c),) + first.shape, device=first.device, dtype=first.dtype)
    for i, schedule in enumerate(c):
        cond = schedule[_pick(schedule, current_step)].cond
        if isinstance(first, dict):
            for k, v in cond.items():
                res[k][i] = v
        else:
            res[i] = cond
    return res


def stack_conds(tensors):
    """Stack (tokens, dim) tensors, padding shorter ones by repeating their last row (tensors of one
    shape, e.g. Forge's 0-d ``guidance`` entries, stack as they are)."""
    if all(t.shape == tensors[0].shape for t in tensors):
        return torch.stack(tensors)
    length = max(t.shape[0] for t in tensors)
    padded = [
        t if t.shape[0] == length else torch.vstack([t, t[-1:].repeat([length - t.shape[0], 1])]) for t in tensors
    ]
    return torch.stack(padded)


def reconstruct_multicond_batch(c: MulticondLearnedConditioning, current_step):
    """``(conds_list, tensor)``: conds_list[i] = [(row in tensor, weight) per AND part]."""
    first = c.batch[0][0].schedules[0].cond
    tensors = []
    conds_list = []
    for parts in c.batch:
        entry = []
        for part in parts:
            entry.append((len(tensors), part.weight))
            tensors.append(part.schedules[_pick(part.schedules, current_step)].cond)
        conds_list.append(entry)
    if isinstance(tensors[0], dict):
        stacked = {k: stack_conds([t[k] for t in tensors]) for k in tensors[0]}
        return conds_list, DictWithShape(stacked)
    return conds_list, stack_conds(tensors).to(device=first.device, dtype=first.dtype)


# --------------------------------------------------------------------------------------------
# emphasis parsing
# --------------------------------------------------------------------------------------------

re_break = re.compile(r"\s*\bBREAK\b\s*", re.S)
_ATTENTION_TOKEN = re.compile(r"\\[()\[\]\\]|\\|[(\[]|:\s*([+-]?[.\d]+)\s*\)|[)\]]|[^\\()\[\]:]+|:")


def parse_prompt_attention(text):
    """Split a prompt into ``[text, weight]`` pairs: ``(x)`` x1.1, ``[x]`` /1.1, ``(x:w)`` xw,
    ``\\(`` etc. literal; ``BREAK`` becomes ``["BREAK", -1]``; neighbours of equal weight merge.

    >>> parse_prompt_attention('an (important) word')
    [['an ', 1.0], ['important', 1.1], [' word', 1.0]]
    """
    res: list[list] = []
    round_open: list[int] = []
    square_open: list[int] = []

    def scale_from(start, factor):
        for entry in res[start:]:
            entry[1] *= factor

    for match in _ATTENTION_TOKEN.finditer(text):
        piece, weight = match.group(0), match.group(1)
        if piece.startswith("\\"):
            res.append([piece[1:], 1.0])
        elif piece == "(":
            round_open.append(len(res))
        elif piece == "[":
            square_open.append(len(res))
        elif weight is not None and round_open:
            scale_from(round_open.pop(), float(weight))
        elif piece == ")" and round_open:
            scale_from(round_open.pop(), 1.1)
        elif piece == "]" and square_open:
            scale_from(square_open.pop(), 1 / 1.1)
        else:
            for k, part in enumerate(re_break.split(piece)):
                if k:
                    res.append(["BREAK", -1])
                res.append([part, 1.0])

    for start in round_open:
        scale_from(start, 1.1)
    for start in square_open:
        scale_from(start, 1 / 1.1)

    if not res:
        res = [["", 1.0]]

    merged = [res[0]]
    for entry in res[1:]:
        if merged[-1][1] == entry[1]:
            merged[-1][0] += entry[0]
        else:
            merged.append(entry)
    return merged
