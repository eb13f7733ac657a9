"""Defaults of the section's options, in the WebUI's Settings tab (section "Follow the Flow")."""

from __future__ import annotations

from .args import ARG_TABLE, TITLE, ArgSpec, coerce

SECTION = ("follow_the_flow", TITLE)


def option_key(spec: ArgSpec) -> str:
    return f"follow_the_flow_{spec.field}"


def add_settings() -> None:
    """`on_ui_settings` callback: one setting per option (the header checkbox is always off at start)."""
    import gradio as gr
    from modules import shared

    for spec in ARG_TABLE[1:]:
        if spec.kind == "radio":
            component, component_args = gr.Radio, {"choices": list(spec.choices)}
        elif spec.kind == "slider":
            component, component_args = gr.Slider, {"minimum": spec.minimum, "maximum": spec.maximum, "step": spec.step}
        else:
            component, component_args = None, None
        info = shared.OptionInfo(spec.default, f"Default: {spec.ui_label}", component, component_args, section=SECTION)
        shared.opts.add_option(option_key(spec), info)


def ui_default(spec: ArgSpec):
    """The setting's value, or the table's default where it is unset or invalid."""
    try:
        from modules import shared

        return coerce(spec, getattr(shared.opts, option_key(spec), spec.default))
    except Exception:
        return spec.default
