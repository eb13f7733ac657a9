"""The WebUI script: one always-visible section in txt2img and img2img that patches the conditioning.

Hooks, in the order the WebUI calls them during a generation:
- `process`: read the arguments (UI, API, X/Y/Z overrides), write the infotext, check the model, and
  take part in ADetailer's inpaint passes (`adetailer`).
- `process_batch`: remove the markers from the prompts the WebUI is about to encode (`p.prompts`,
  `p.hr_prompts`); `p.all_prompts` keeps them, so the saved infotext reproduces the image.
- `process_before_every_sampling`: patch the conds of the pass about to run (first pass, hires pass).
- `post_sample` / `postprocess`: put the original rows back, so the WebUI's cond caches stay clean
  (and ADetailer's script list as it was).

Nothing here may fail a generation: every hook catches its errors, logs ONE warning with the reason,
and the image is generated unpatched.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from dataclasses import dataclass, field

from flowcore.detection.progress import CalibrationLog
from flowcore.models.compat import version_problem
from flowcore.patching.options import FlowOptions
from flowcore.patching.patcher import FlowPatcher
from flowcore.prompts.markers import parse_markers, strip_markers

from . import a1111, adetailer, forge, settings
from .args import ARG_TABLE, PREFIX, SPECS, TITLE, FlowArgs, paste_getter
from .conditioning import PENDING, PassResult, patch_pass
from .xyz import XYZ_ATTR

try:
    from modules import scripts
except ImportError:  # imported outside the WebUI (documentation, linters): a stand-in base class
    scripts = None

logger = logging.getLogger("follow_the_flow")

STATE_ATTR = "follow_the_flow_state"
PATCHED_LABEL = "FtF patched"  # infotext: the items patched (informational, not restored)
REFINER_LABEL = "FtF refiner"  # infotext: the refiner's part of the sampling is unpatched
REFINER_NOTE = (
    "the refiner's conds are encoded at the switch, where no script hook runs: from the switch on, the image is "
    "sampled with the refiner's unpatched conds"
)
CUTOFF_LABEL = "Cutoff enabled"  # hnmr293/sd-webui-cutoff's infotext entry, set in its `process`
CUTOFF_NOTE = (
    "Cutoff is on too: each item Follow the Flow patched has its encoding alone on its rows, in place of Cutoff's "
    "there; every other row keeps Cutoff's"
)
SUPPORTED_FAMILIES = ("is_sd1", "is_sd2", "is_sdxl", "is_ssd")
_said: set[str] = set()
# Encoders and their patchers live across generations, keyed by the model and what its text transformers
# compute (a fingerprint of their weights, LoRA merged in; the layers read; the emphasis mode): a repeated
# prompt costs cache lookups only, and each model is calibrated once (then read from the disk cache).
_ENCODERS: OrderedDict[tuple, list[tuple[object, FlowPatcher]]] = OrderedDict()
MAX_ENCODERS = 2


def say_once(key: str, message: str) -> None:
    """A message shown once per WebUI session (unsupported model, Forge), not once per image."""
    if key not in _said:
        _said.add(key)
        logger.warning("%s %s", PREFIX, message)


def is_forge(sd_model) -> bool:
    """Forge's models carry `forge_objects` and encode with Forge's text engines. reForge's carry
    `forge_objects` too, but keep A1111's `cond_stage_model`: they take the A1111 path."""
    if not hasattr(sd_model, "forge_objects"):
        return False
    return not hasattr(getattr(sd_model, "cond_stage_model", None), "tokenize_line")


def unsupported_reason(sd_model) -> str:
    """Why this model cannot be patched, or "" when it can."""
    if version_problem():  # the WebUI's venv holds a version flowcore cannot work with
        return version_problem()
    if sd_model is None:
        return "no model is loaded"
    if is_forge(sd_model):
        if forge.engines(sd_model):
            return ""
        return f"Forge's `{type(sd_model).__name__}` has no text engine flowcore knows; images are unpatched"
    flags = [flag for flag in (*SUPPORTED_FAMILIES, "is_sd3", "is_flux") if hasattr(sd_model, flag)]
    if any(getattr(sd_model, flag, False) for flag in SUPPORTED_FAMILIES):
        return ""
    if not flags and hasattr(getattr(sd_model, "cond_stage_model", None), "tokenize_line"):
        return ""  # a WebUI without family flags: a CLIP model it encodes with tokenize_line
    family = next((flag[3:] for flag in flags if getattr(sd_model, flag, False)), type(sd_model).__name__)
    return f"the model family `{family}` is not supported (SD 1.x, SD 2.x and SDXL are); images are unpatched"


@dataclass
class GenerationState:
    """What the script remembers during one generation (stored on `p`)."""

    args: FlowArgs
    options: FlowOptions
    skip_reason: str = ""
    marked: list[str] | None = None  # this batch's prompts with their markers
    marked_hr: list[str] | None = None
    patched: dict[str, list[str]] = field(default_factory=dict)  # prompt without markers -> items patched
    # image index in the job (p.iteration * p.batch_size + position) -> items patched: another script may write
    # other text into p.all_prompts (Regional Prompter puts its own original prompts back in process_batch)
    patched_at: dict[int, list[str]] = field(default_factory=dict)
    said: set[str] = field(default_factory=set)  # problems already logged in this generation
    owner: int = 0  # id() of the `p` it was made for; a copy of that `p` carries it too

    def note(self, message: str) -> None:
        """Log a problem once per generation (not once per image, pass and sub-prompt)."""
        if message not in self.said:
            self.said.add(message)
            logger.warning("%s %s", PREFIX, message)

    def patched_infotext(self, all_prompts=None, index=0, p=None, **kwargs) -> str | None:
        """The infotext value of one image (the WebUI calls it with `create_infotext`'s locals): the items
        patched in that image's prompt, or None (no entry) where none was."""
        if not all_prompts or not 0 <= index < len(all_prompts):
            return None
        if p is not None and self.patched_at:
            # `index` counts in the job where `all_prompts` is p.all_prompts, else in this batch (`p.prompts`)
            first = 0 if all_prompts is getattr(p, "all_prompts", None) else p.iteration * p.batch_size
            if first + index in self.patched_at:
                return "; ".join(self.patched_at[first + index]) or None
        items = self.patched.get(image_key(all_prompts[index]))
        return "; ".join(items) if items else None


def image_key(prompt: str) -> str:
    """An image's prompt as the WebUI encodes it: no markers, and no extra-network tags (`<lora:name:1>`),
    which the WebUI strips from `p.prompts` before `process_batch` but not from the prompts the infotext reads."""
    from modules import extra_networks

    return extra_networks.parse_prompt(strip_markers(prompt))[0]


def _steps_candidates(p, hires: bool) -> list[tuple[int, int | None]]:
    """The `(base_steps, hires_steps)` the WebUI may have built the conds with (samplers such as DPM2
    take a multiple of the steps); the one whose schedule matches the conds is used."""
    multiplier = int(getattr(p, "step_multiplier", 1) or 1)
    steps = int(p.steps)
    firstpass = int(getattr(p, "firstpass_steps", 0) or steps * multiplier)
    if not hires:
        candidates = [(firstpass, None), (steps * multiplier, None), (steps, None)]
    else:
        hr_steps = int(getattr(p, "hr_second_pass_steps", 0) or steps)
        candidates = [(firstpass, hr_steps * m) for m in dict.fromkeys((multiplier, 1, 2))]
    return list(dict.fromkeys(candidates))


def parts_for(sd_model, opts) -> list[tuple[object, FlowPatcher]]:
    """The parts of the model's conditioning (the host module's: `forge` or `a1111`) with their patchers, as
    the model is now (see `_ENCODERS`)."""
    parts = (forge if is_forge(sd_model) else a1111).parts_for(sd_model, opts)
    key = (id(sd_model), tuple(part.identity() for part in parts))
    if key not in _ENCODERS:
        _ENCODERS[key] = [
            (part, FlowPatcher(part, calibration_progress=CalibrationLog(logger, PREFIX, f"the {part.name} encoder")))
            for part in parts
        ]
        while len(_ENCODERS) > MAX_ENCODERS:
            _ENCODERS.popitem(last=False)
    _ENCODERS.move_to_end(key)
    return _ENCODERS[key]


class _ScriptBase:
    pass


class FollowTheFlowScript(scripts.Script if scripts is not None else _ScriptBase):
    """Follow the Flow: find leaked prompt items and patch them with their isolated encoding."""

    def title(self):
        return TITLE

    def show(self, is_img2img):
        return scripts.AlwaysVisible

    # --- UI ---

    def ui(self, is_img2img):
        """The section: an accordion whose header checkbox enables it. No side effects beyond building
        components (the API calls this again to read the defaults)."""
        import gradio as gr
        from modules.ui_components import InputAccordion

        components = {}
        with InputAccordion(False, label=TITLE, elem_id=self.elem_id("enabled")) as enabled:
            components["enabled"] = enabled
            for spec in ARG_TABLE[1:]:
                value = settings.ui_default(spec)
                elem_id = self.elem_id(spec.field)
                text = {"label": spec.ui_label, "elem_id": elem_id, **({"info": spec.info} if spec.info else {})}
                if spec.kind == "radio":
                    component = gr.Radio(list(spec.choices), value=value, **text)
                elif spec.kind == "slider":
                    component = gr.Slider(spec.minimum, spec.maximum, value=value, step=spec.step, **text)
                else:
                    component = gr.Checkbox(value=value, **text)
                components[spec.field] = component
            gr.Markdown(
                "Mark an item with `~item~` to always patch it, `^item^` to never patch it. "
                "The EOS/padding option `rederive` is not available in the WebUI yet (rows are left as encoded)."
            )
        self.infotext_fields = [(components[spec.field], paste_getter(spec)) for spec in ARG_TABLE]
        self.paste_field_names = [spec.label for spec in ARG_TABLE]
        return [components[spec.field] for spec in ARG_TABLE]

    # --- generation ---

    def process(self, p, *args):
        from modules import shared

        earlier = getattr(p, STATE_ATTR, None)
        if earlier is not None and earlier.owner != id(p):
            # a copy of a `p` already set up: ADetailer re-runs every `process` on one after its inpaint passes.
            # Nothing to redo, and the infotext entries it shares with that `p` must stay.
            return
        setattr(p, STATE_ATTR, None)
        try:
            PENDING.restore_all()  # rows left patched by a generation that failed mid-sampling
            if not adetailer.is_inner(p):
                adetailer.leave(shared.opts)  # put back by a generation that failed before `postprocess`
            for key in [spec.label for spec in ARG_TABLE] + [PATCHED_LABEL, REFINER_LABEL]:
                p.extra_generation_params.pop(key, None)  # the X/Y/Z plot shares this dict between cells
            flow_args = FlowArgs.from_values(args)
            overrides = getattr(p, XYZ_ATTR, None) or {}
            if overrides:
                flow_args = flow_args.replace(**{k: v for k, v in overrides.items() if k in SPECS})
            if not flow_args.enabled:
                return
            state = GenerationState(flow_args, flow_args.flow_options(), owner=id(p))
            state.skip_reason = unsupported_reason(getattr(p, "sd_model", None))
            if state.skip_reason:
                say_once(state.skip_reason, state.skip_reason)
            p.extra_generation_params.update(flow_args.infotext())
            if not state.skip_reason and getattr(p, "refiner_checkpoint_info", None) is not None:
                state.note(REFINER_NOTE)  # Follow the Flow steps aside for the refiner's part, and says so
                p.extra_generation_params[REFINER_LABEL] = "unpatched"
            setattr(p, STATE_ATTR, state)
            adetailer.join(p, shared.opts)  # ADetailer's inpaint passes run this script too
        except Exception as error:  # never fail a generation
            logger.warning("%s disabled for this generation: %s: %s", PREFIX, type(error).__name__, error)
            setattr(p, STATE_ATTR, None)

    def process_batch(self, p, *args, **kwargs):
        state: GenerationState | None = getattr(p, STATE_ATTR, None)
        if state is None:
            return
        try:
            state.marked = list(p.prompts)
            hr_prompts = list(getattr(p, "hr_prompts", None) or [])
            for prompt in dict.fromkeys(state.marked + hr_prompts):
                for warning in parse_markers(prompt).warnings:
                    state.note(warning)
            p.prompts = [strip_markers(prompt) for prompt in p.prompts]
            if hr_prompts:
                state.marked_hr = hr_prompts
                p.hr_prompts = [strip_markers(prompt) for prompt in hr_prompts]
        except Exception as error:
            logger.warning("%s could not remove the markers: %s: %s", PREFIX, type(error).__name__, error)
            state.skip_reason = "marker removal failed"

    def process_before_every_sampling(self, p, *args, **kwargs):
        state: GenerationState | None = getattr(p, STATE_ATTR, None)
        if state is None or state.skip_reason or kwargs.get("c") is None:
            return
        hires = bool(getattr(p, "is_hr_pass", False))
        name = "hires pass" if hires else "first pass"
        try:
            result = self._patch(p, state, kwargs["c"], hires)
        except Exception as error:  # nothing was written: patch_pass writes only after computing everything
            logger.debug("%s %s left unpatched", PREFIX, name, exc_info=True)
            state.note(f"{name} left unpatched: {type(error).__name__}: {error}")
            return
        try:
            self._record(p, state, result, name)
        except Exception as error:  # the images are patched; only the infotext or the report is missing
            logger.debug("%s could not record the %s", PREFIX, name, exc_info=True)
            state.note(f"could not record what the {name} patched: {type(error).__name__}: {error}")

    def _patch(self, p, state: GenerationState, c, hires: bool) -> PassResult:
        from modules import shared

        # 1. The texts the WebUI encoded for this pass, and the same with the user's markers.
        prompts = list(p.hr_prompts if hires else p.prompts)
        marked = state.marked_hr if hires else state.marked
        marked = list(marked) if marked is not None and len(marked) == len(prompts) else prompts
        # 2. The encoder and patcher for the model as it is now (LoRA changes the text encoder's weights).
        parts = parts_for(shared.sd_model, shared.opts)
        # 3. Patch every distinct cond once.
        return patch_pass(c, prompts, marked, _steps_candidates(p, hires), parts, state.options)

    def _record(self, p, state: GenerationState, result: PassResult, name: str) -> None:
        """Remember what each image got (the infotext reads it per image) and log each problem once."""
        for image, items in result.patched_items.items():
            patched = state.patched.setdefault(image_key(p.prompts[image]), [])
            patched += [item for item in items if item not in patched]
            at = state.patched_at.setdefault(p.iteration * p.batch_size + image, [])
            at += [item for item in items if item not in at]
        if any(state.patched.values()):
            p.extra_generation_params[PATCHED_LABEL] = state.patched_infotext
        if any(state.patched_at.values()) and p.extra_generation_params.get(CUTOFF_LABEL):
            state.note(CUTOFF_NOTE)  # both change the same rows: say which one the sampler gets
        if result.problems:  # the same problems come back in every pass and batch: one line per generation
            state.note("in part: " + "; ".join(dict.fromkeys(result.problems)))
        if state.args.show_report:
            lines = [f"Follow the Flow, {name}:"]
            for report in result.reports:
                lines.append(repr(report.text.strip()))  # AND sub-prompts keep the WebUI's leading space
                lines += [f"  {line}" for line in report.summary().splitlines()]
                lines += [f"  warning: {warning}" for warning in report.warnings]
            lines += [f"  unpatched: {problem}" for problem in result.problems]
            if len(lines) == 1:
                lines.append("  nothing to patch")
            p.comment("\n".join(lines))

    def post_sample(self, p, ps, *args):
        PENDING.restore_all()

    def postprocess(self, p, processed, *args):
        PENDING.restore_all()
        state: GenerationState | None = getattr(p, STATE_ATTR, None)
        # not in ADetailer's own passes, nor for the copy of `p` it runs `postprocess` on before them
        if not adetailer.is_inner(p) and (state is None or state.owner == id(p)):
            from modules import shared

            adetailer.leave(shared.opts)
