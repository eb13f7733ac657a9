"""Stand-in for the WebUI's built-in ``scripts/xyz_grid.py`` (only what extensions touch).

Loaded like the WebUI loads scripts (module name ``"xyz_grid.py"``, found through
``modules.scripts.scripts_data``). Extensions append ``AxisOption`` objects to ``axis_options``."""

from __future__ import annotations

import copy

from modules import processing, scripts


def apply_field(field):
    def fun(p, x, xs):
        setattr(p, field, x)

    return fun


def apply_override(field, boolean: bool = False):
    def fun(p, x, xs):
        if boolean:
            x = x.lower() == "true"
        p.override_settings[field] = x

    return fun


def boolean_choice(reverse: bool = False):
    def choice():
        return ["False", "True"] if reverse else ["True", "False"]

    return choice


def format_value_add_label(p, opt, x):
    if isinstance(x, float):
        x = round(x, 8)
    return f"{opt.label}: {x}"


def format_value(p, opt, x):
    if isinstance(x, float):
        x = round(x, 8)
    return x


def do_nothing(p, x, xs):
    pass


def format_nothing(p, opt, x):
    return ""


class AxisOption:
    def __init__(
        self,
        label,
        type,
        apply,
        format_value=format_value_add_label,
        confirm=None,
        cost=0.0,
        choices=None,
        prepare=None,
    ):
        self.label = label
        self.type = type
        self.apply = apply
        self.format_value = format_value
        self.confirm = confirm
        self.cost = cost
        self.prepare = prepare
        self.choices = choices


class AxisOptionImg2Img(AxisOption):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.is_img2img = True


class AxisOptionTxt2Img(AxisOption):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.is_img2img = False


axis_options = [
    AxisOption("Nothing", str, do_nothing, format_value=format_nothing),
    AxisOption("Seed", int, apply_field("seed")),
    AxisOption("Steps", int, apply_field("steps")),
    AxisOptionTxt2Img("Hires steps", int, apply_field("hr_second_pass_steps")),
    AxisOption("CFG Scale", float, apply_field("cfg_scale")),
    AxisOption(
        "Prompt S/R", str, lambda p, x, xs: setattr(p, "prompt", p.prompt.replace(xs[0], x)), format_value=format_value
    ),
    AxisOption("Clip skip", int, apply_override("CLIP_stop_at_last_layers")),
]


def run_axis(p, opt: AxisOption, values):
    """One cell per value like the real grid: ``pc = copy(p)`` (a shallow copy: the same
    ``extra_generation_params`` dict, script args and cond caches), ``opt.apply(pc, x, xs)``,
    ``process_images(pc)``. Returns the Processed of every cell."""
    results = []
    for x in values:
        pc = copy.copy(p)
        pc.styles = pc.styles[:]
        opt.apply(pc, x, values)
        results.append(processing.process_images(pc))
    return results


class Script(scripts.Script):
    def title(self):
        return "X/Y/Z plot"

    def show(self, is_img2img):
        return True

    def ui(self, is_img2img):
        return []
