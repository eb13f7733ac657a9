"""Axes for the WebUI's built-in X/Y/Z plot: on/off, mode and sensitivity (from `args.ARG_TABLE`).

An axis writes its value on `p` (a fresh dict, since the plot makes shallow copies of `p`); the script
reads it in `process` and it wins over the UI's value.
"""

from __future__ import annotations

import logging

from .args import ARG_TABLE, PREFIX, ArgSpec

logger = logging.getLogger("follow_the_flow")
XYZ_ATTR = "follow_the_flow_xyz"


def find_xyz_module():
    from modules import scripts

    return next((d.module for d in scripts.scripts_data if d.script_class.__module__ == "xyz_grid.py"), None)


def _apply(field: str):
    def apply(p, x, xs):
        setattr(p, XYZ_ATTR, {**(getattr(p, XYZ_ATTR, None) or {}), field: x})

    return apply


def _axis(module, spec: ArgSpec):
    label = f"{PREFIX} {spec.axis}"
    if spec.kind in ("accordion", "checkbox"):
        boolean_choice = getattr(module, "boolean_choice", None)
        choices = boolean_choice(reverse=True) if boolean_choice else (lambda: ["False", "True"])
        return module.AxisOption(label, str, _apply(spec.field), choices=choices)
    if spec.kind == "slider":
        return module.AxisOption(label, float, _apply(spec.field))
    return module.AxisOption(label, str, _apply(spec.field), choices=lambda: list(spec.choices))


def register_axes() -> int:
    """Add the axes (once); returns how many were added. Fails soft with a prefixed message."""
    try:
        module = find_xyz_module()
        if module is None:
            logger.warning("%s the X/Y/Z plot script was not found; no axes added.", PREFIX)
            return 0
        existing = {option.label for option in module.axis_options}
        added = [_axis(module, spec) for spec in ARG_TABLE if spec.axis and f"{PREFIX} {spec.axis}" not in existing]
        module.axis_options.extend(added)
        return len(added)
    except Exception as error:
        logger.warning("%s could not add X/Y/Z plot axes: %s: %s", PREFIX, type(error).__name__, error)
        return 0
