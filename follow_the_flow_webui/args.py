"""The script's arguments: one dataclass, and ONE table that drives the UI, the infotext, the paste fields,
the API argument order and the X/Y/Z axes (a test checks that they agree).

API users pass the arguments positionally, in table order, under
`"alwayson_scripts": {"Follow the Flow": {"args": [True, "Automatic", 0.5, "leave", False, False, False]}}`
(a partial list is allowed: the rest keep their defaults, so lists written before an argument was added at the
end still work). New arguments are only ever added at the end.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, fields

from flowcore.patching.options import AUTO, EVERY, MARKERS, TAIL_CHOICES, FlowOptions

logger = logging.getLogger("follow_the_flow")

TITLE = "Follow the Flow"
PREFIX = "[Follow the Flow]"
MODE_AUTO = "Automatic"
MODE_MARKERS = "Markers only"
MODE_EVERY = "Every item"
MODE_CHOICES = (MODE_AUTO, MODE_MARKERS, MODE_EVERY)
CORE_MODES = {MODE_AUTO: AUTO, MODE_MARKERS: MARKERS, MODE_EVERY: EVERY}  # UI label -> `FlowOptions.mode`
# Short forms API users may send (the core's names, and "all").
ALIASES = {"auto": MODE_AUTO, "markers": MODE_MARKERS, "every": MODE_EVERY, "all": MODE_EVERY}


@dataclass(frozen=True)
class ArgSpec:
    """One argument: its dataclass field, infotext label, UI component kind, default and UI text."""

    field: str
    label: str  # infotext key; also the paste field name
    kind: str  # "accordion" (the header checkbox), "checkbox", "radio" or "slider"
    default: object
    ui_label: str
    choices: tuple = ()
    minimum: float = 0.0
    maximum: float = 1.0
    step: float = 0.05
    axis: str = ""  # the X/Y/Z plot axis name ("" for none)
    info: str = ""  # the line shown under the component


ARG_TABLE: tuple[ArgSpec, ...] = (
    ArgSpec("enabled", TITLE, "accordion", False, TITLE, axis="Enabled"),
    ArgSpec(
        "mode",
        "FtF mode",
        "radio",
        MODE_AUTO,
        "Which items to patch",
        choices=MODE_CHOICES,
        axis="Mode",
        info="Automatic: the items found leaked. Markers only: only ~marked~ items. Every item: every item but "
        "^kept^ ones and quality/style tags, each from its own encoding (exact, per item, what Cutoff approximates).",
    ),
    ArgSpec(
        "sensitivity",
        "FtF sensitivity",
        "slider",
        0.5,
        "Sensitivity (higher patches more items)",
        axis="Sensitivity",
        info="How many unrelated items get patched anyway, the same on every model: none at 0, about 1 in 30 "
        "at 0.25, 1 in 10 at 0.5, 1 in 3 at 0.75, all at 1. Each model is calibrated once on neutral prompts.",
    ),
    ArgSpec("tail", "FtF tail", "radio", "leave", "EOS/padding rows", choices=TAIL_CHOICES),
    ArgSpec("remove_redundant", "FtF remove redundant", "checkbox", False, "Remove redundant tokens"),
    ArgSpec("show_report", "FtF report", "checkbox", False, "Show a report under the image"),
    ArgSpec(
        "patch_style_tags",
        "FtF patch style tags",
        "checkbox",
        False,
        "Also patch quality/style tags",
        info="masterpiece, best quality, bokeh, 85mm, trending on artstation, ... (flowcore/data/style_tags.txt; "
        "add your own with FLOWCORE_STYLE_TAGS). Off: they are never patched, only scored.",
    ),
)
SPECS = {spec.field: spec for spec in ARG_TABLE}


@dataclass(frozen=True)
class FlowArgs:
    """The script's arguments, in the order of `ARG_TABLE` (the order of `ui()` and of the API)."""

    enabled: bool = False
    mode: str = MODE_AUTO
    sensitivity: float = 0.5
    tail: str = "leave"
    remove_redundant: bool = False
    show_report: bool = False
    patch_style_tags: bool = False

    @classmethod
    def from_values(cls, values, warn: bool = True) -> FlowArgs:
        """From positional script args (UI or API; a partial list keeps the defaults). Invalid values are
        reported with their field and replaced by the default."""
        kwargs = {}
        for spec, value in zip(ARG_TABLE, values):
            try:
                kwargs[spec.field] = coerce(spec, value)
            except (TypeError, ValueError) as error:
                if warn:
                    logger.warning("%s `%s`: %s; using %r.", PREFIX, spec.field, error, spec.default)
        return cls(**kwargs)

    def replace(self, **changes) -> FlowArgs:
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        for name, value in changes.items():
            values[name] = coerce(SPECS[name], value)
        return FlowArgs(**values)

    def flow_options(self) -> FlowOptions:
        return FlowOptions(
            mode=CORE_MODES[self.mode],
            sensitivity=float(self.sensitivity),
            tail=self.tail,
            remove_redundant=bool(self.remove_redundant),
            patch_style_tags=bool(self.patch_style_tags),
        )

    def infotext(self) -> dict[str, object]:
        """What the infotext records: the enabled state, and every option that differs from its default."""
        if not self.enabled:
            return {}
        params: dict[str, object] = {TITLE: True}
        for spec in ARG_TABLE[1:]:
            value = getattr(self, spec.field)
            if value != spec.default:
                params[spec.label] = value
        return params


def _as_bool(value) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    raise ValueError(f"must be True or False but is {value!r}")


def coerce(spec: ArgSpec, value):
    """`value` (from the UI, the API or pasted infotext, where everything is a string) as the field's type."""
    if spec.kind in ("accordion", "checkbox"):
        return _as_bool(value)
    if spec.kind == "slider":
        number = float(value)
        if not spec.minimum <= number <= spec.maximum:
            raise ValueError(f"must be between {spec.minimum} and {spec.maximum} but is {value!r}")
        return number
    text = ALIASES.get(str(value).strip().lower(), str(value).strip())
    for choice in spec.choices:
        if text.lower() == choice.lower():
            return choice
    raise ValueError(f"must be one of {list(spec.choices)} but is {value!r}")


def paste_getter(spec: ArgSpec):
    """The function the WebUI calls with the parsed infotext (a dict of strings) to restore one component.

    The header checkbox is turned off for infotext without our key; the options are set (to their default
    where the infotext leaves them out) only when the infotext has our key, and left alone otherwise.
    """

    def get(params: dict):
        if spec.kind == "accordion":
            return coerce(spec, params.get(spec.label, False))
        if TITLE not in params:
            return None
        return coerce(spec, params.get(spec.label, spec.default))

    get.__name__ = f"follow_the_flow_paste_{spec.field}"
    return get


def from_infotext(params: dict) -> FlowArgs:
    """The arguments an image was made with, from its parsed infotext."""
    if TITLE not in params:
        return FlowArgs()
    return FlowArgs(**{spec.field: paste_getter(spec)(params) for spec in ARG_TABLE})
