"""Stand-in for ``modules/script_callbacks.py`` (the callbacks the glue registers or may meet)."""

from __future__ import annotations

import dataclasses
import inspect
import os

from modules import errors


class CFGDenoiserParams:
    def __init__(
        self, x, image_cond, sigma, sampling_step, total_sampling_steps, text_cond, text_uncond, denoiser=None
    ):
        self.x = x
        self.image_cond = image_cond
        self.sigma = sigma
        self.sampling_step = sampling_step
        self.total_sampling_steps = total_sampling_steps
        self.text_cond = text_cond
        self.text_uncond = text_uncond
        self.denoiser = denoiser


@dataclasses.dataclass
class BeforeTokenCounterParams:
    prompt: str
    steps: int
    styles: list
    is_positive: bool = True


@dataclasses.dataclass
class ScriptCallback:
    script: str
    callback: any
    name: str = "unnamed"


callback_map: dict[str, list[ScriptCallback]] = {
    name: []
    for name in (
        "callbacks_app_started",
        "callbacks_model_loaded",
        "callbacks_ui_tabs",
        "callbacks_ui_settings",
        "callbacks_cfg_denoiser",
        "callbacks_cfg_denoised",
        "callbacks_cfg_after_cfg",
        "callbacks_before_component",
        "callbacks_after_component",
        "callbacks_infotext_pasted",
        "callbacks_script_unloaded",
        "callbacks_before_ui",
        "callbacks_before_token_counter",
    )
}


def add_callback(callbacks, fun, *, name=None, category="unknown", filename=None):
    if filename is None:
        stack = [frame for frame in inspect.stack() if frame.filename != __file__]
        filename = stack[0].filename if stack else "unknown file"
    base = f"base/{os.path.basename(filename)}/{category}" + (f"/{name}" if name is not None else "")
    unique = base
    for index in range(1000):
        if not any(c.name == unique for c in callbacks):
            break
        unique = f"{base}-{index + 1}"
    callbacks.append(ScriptCallback(filename, fun, unique))


def clear_callbacks():
    for callbacks in callback_map.values():
        callbacks.clear()


def _run(category, *args):
    for c in list(callback_map[f"callbacks_{category}"]):
        try:
            c.callback(*args)
        except Exception:
            errors.report(f"Error executing callback {c.name} for {category}", exc_info=True)


def ui_settings_callback():
    _run("ui_settings")


def before_token_counter_callback(params: BeforeTokenCounterParams):
    _run("before_token_counter", params)


def cfg_denoiser_callback(params: CFGDenoiserParams):
    _run("cfg_denoiser", params)


def model_loaded_callback(sd_model):
    _run("model_loaded", sd_model)


def app_started_callback(demo, app):
    _run("app_started", demo, app)


def script_unloaded_callback():
    _run("script_unloaded")


def on_ui_settings(callback, *, name=None):
    """``callback()`` runs before the settings UI is built; add options there with
    ``shared.opts.add_option(key, shared.OptionInfo(...))``."""
    add_callback(callback_map["callbacks_ui_settings"], callback, name=name, category="ui_settings")


def on_before_token_counter(callback, *, name=None):
    """``callback(params: BeforeTokenCounterParams)`` may edit ``params.prompt`` before the UI
    counts tokens."""
    add_callback(callback_map["callbacks_before_token_counter"], callback, name=name, category="before_token_counter")


def on_cfg_denoiser(callback, *, name=None):
    add_callback(callback_map["callbacks_cfg_denoiser"], callback, name=name, category="cfg_denoiser")


def on_model_loaded(callback, *, name=None):
    add_callback(callback_map["callbacks_model_loaded"], callback, name=name, category="model_loaded")


def on_app_started(callback, *, name=None):
    add_callback(callback_map["callbacks_app_started"], callback, name=name, category="app_started")


def on_script_unloaded(callback, *, name=None):
    add_callback(callback_map["callbacks_script_unloaded"], callback, name=name, category="script_unloaded")


def on_infotext_pasted(callback, *, name=None):
    add_callback(callback_map["callbacks_infotext_pasted"], callback, name=name, category="infotext_pasted")
