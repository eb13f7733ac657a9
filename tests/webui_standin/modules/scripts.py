"""Stand-in for ``modules/scripts.py``: ``Script``, ``AlwaysVisible``, ``scripts_data`` and a
``ScriptRunner`` that builds the UI (slicing ``args_from``/``args_to``) and calls the hooks the way
the WebUI does: only scripts that override a hook are called, each with
``p.script_args[args_from:args_to]``, and an exception in a hook is reported
(``modules.errors.reported``) instead of failing the generation."""

from __future__ import annotations

import importlib.util
import inspect
import os
import re
from collections import namedtuple

from modules import errors

AlwaysVisible = object()


class PostSampleArgs:
    def __init__(self, samples):
        self.samples = samples


class PostprocessImageArgs:
    def __init__(self, image):
        self.image = image


class PostprocessBatchListArgs:
    def __init__(self, images):
        self.images = images


class Script:
    name = None
    section = None
    filename = None
    args_from = None
    args_to = None
    alwayson = False
    is_txt2img = False
    is_img2img = False
    tabname = None
    group = None
    create_group = True
    infotext_fields = None
    paste_field_names = None
    api_info = None
    on_before_component_elem_id = None
    on_after_component_elem_id = None
    setup_for_ui_only = False
    controls = None

    def title(self):
        raise NotImplementedError()

    def ui(self, is_img2img):
        pass

    def show(self, is_img2img):
        return True

    def run(self, p, *args):
        pass

    def setup(self, p, *args):
        pass

    def before_process(self, p, *args):
        pass

    def process(self, p, *args):
        pass

    def before_process_batch(self, p, *args, **kwargs):
        pass

    def after_extra_networks_activate(self, p, *args, **kwargs):
        pass

    def process_before_every_sampling(self, p, *args, **kwargs):
        pass

    def process_batch(self, p, *args, **kwargs):
        pass

    def postprocess_batch(self, p, *args, **kwargs):
        pass

    def postprocess_batch_list(self, p, pp, *args, **kwargs):
        pass

    def post_sample(self, p, ps, *args):
        pass

    def postprocess_image(self, p, pp, *args):
        pass

    def postprocess(self, p, processed, *args):
        pass

    def before_hr(self, p, *args):
        pass

    def before_component(self, component, **kwargs):
        pass

    def after_component(self, component, **kwargs):
        pass

    def describe(self):
        return ""

    def elem_id(self, item_id):
        need_tabname = self.show(True) == self.show(False)
        tabkind = "img2img" if self.is_img2img else "txt2img"
        tabname = f"{tabkind}_" if need_tabname else ""
        title = re.sub(r"[^a-z_0-9]", "", re.sub(r"\s", "_", self.title().lower()))
        return f"script_{tabname}{title}_{item_id}"


ScriptFile = namedtuple("ScriptFile", ["basedir", "filename", "path"])
ScriptClassData = namedtuple("ScriptClassData", ["script_class", "path", "basedir", "module"])

scripts_data: list[ScriptClassData] = []
postprocessing_scripts_data: list = []
loaded_scripts: dict = {}


def load_module(path):
    """Load a script file the way the WebUI does: module name = the file's base name
    (``"xyz_grid.py"``), not registered in ``sys.modules``."""
    spec = importlib.util.spec_from_file_location(os.path.basename(path), path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    loaded_scripts[path] = module
    return module


def register_scripts_from_module(module, path=None, basedir=None):
    path = path or getattr(module, "__file__", None) or module.__name__
    for value in list(module.__dict__.values()):
        if inspect.isclass(value) and issubclass(value, Script) and value is not Script:
            scripts_data.append(ScriptClassData(value, path, basedir or os.path.dirname(path), module))


def load_script_file(path):
    module = load_module(path)
    register_scripts_from_module(module, path)
    return module


def wrap_call(func, filename, funcname, *args, default=None, **kwargs):
    try:
        return func(*args, **kwargs)
    except Exception:
        errors.report(f"Error calling: {filename}/{funcname}", exc_info=True)
    return default


class ScriptRunner:
    def __init__(self):
        self.scripts: list[Script] = []
        self.selectable_scripts: list[Script] = []
        self.alwayson_scripts: list[Script] = []
        self.titles: list[str] = []
        self.title_map: dict = {}
        self.infotext_fields: list = []
        self.paste_field_names: list = []
        self.inputs: list = [None]

    def initialize_scripts(self, is_img2img):
        self.scripts.clear()
        self.alwayson_scripts.clear()
        self.selectable_scripts.clear()
        for data in scripts_data:
            try:
                script = data.script_class()
            except Exception:
                errors.report(f"Error # failed to initialize Script {data.module}: ", exc_info=True)
                continue
            script.filename = data.path
            script.is_txt2img = not is_img2img
            script.is_img2img = is_img2img
            script.tabname = "img2img" if is_img2img else "txt2img"
            visibility = script.show(script.is_img2img)
            if visibility == AlwaysVisible:
                self.scripts.append(script)
                self.alwayson_scripts.append(script)
                script.alwayson = True
            elif visibility:
                self.scripts.append(script)
                self.selectable_scripts.append(script)

    def create_script_ui(self, script):
        import gradio as gr

        script.args_from = len(self.inputs)
        script.args_to = len(self.inputs)
        with gr.Blocks():
            controls = wrap_call(script.ui, script.filename, "ui", script.is_img2img)
        script.controls = controls
        if controls is None:
            return
        script.name = wrap_call(script.title, script.filename, "title", default=script.filename).lower()
        if script.infotext_fields is not None:
            self.infotext_fields += script.infotext_fields
        if script.paste_field_names is not None:
            self.paste_field_names += script.paste_field_names
        self.inputs += controls
        script.args_to = len(self.inputs)

    def setup_ui(self):
        """Build every script's UI: alwayson scripts first, then position 0 (the script
        dropdown), then selectable scripts; returns ``inputs``."""
        self.inputs = [None]
        titles = [wrap_call(s.title, s.filename, "title") or s.filename for s in self.scripts]
        self.title_map = {t.lower(): s for t, s in zip(titles, self.scripts)}
        self.titles = [wrap_call(s.title, s.filename, "title") for s in self.selectable_scripts]
        for script in self.alwayson_scripts:
            self.create_script_ui(script)
        self.inputs[0] = "script_list"
        for script in self.selectable_scripts:
            self.create_script_ui(script)
        return self.inputs

    def default_script_args(self):
        """What the API starts from (``init_default_script_args``): 0 at position 0, then every
        script's ``ui()`` values -- ``ui()`` is called again (twice per script in the WebUI)."""
        import gradio as gr

        last = max([1] + [s.args_to for s in self.scripts if s.args_to is not None])
        args = [None] * last
        args[0] = 0
        with gr.Blocks():
            for script in self.scripts:
                if script.ui(script.is_img2img):
                    args[script.args_from : script.args_to] = [c.value for c in script.ui(script.is_img2img)]
        return args

    def script(self, title):
        return self.title_map.get(title.lower())

    def run(self, p, *args):
        index = args[0]
        if not index:
            return None
        script = self.selectable_scripts[index - 1]
        return script.run(p, *args[script.args_from : script.args_to])

    def ordered_scripts(self, method_name):
        return [
            s
            for s in self.alwayson_scripts
            if getattr(type(s), method_name, None) is not getattr(Script, method_name, None)
        ]

    def _call(self, method_name, p, *extra, **kwargs):
        for script in self.ordered_scripts(method_name):
            try:
                script_args = p.script_args[script.args_from : script.args_to]
                getattr(script, method_name)(p, *extra, *script_args, **kwargs)
            except Exception:
                errors.report(f"Error running {method_name}: {script.filename}", exc_info=True)

    def setup_scrips(self, p, *, is_ui=True):
        for script in self.ordered_scripts("setup"):
            if not is_ui and script.setup_for_ui_only:
                continue
            try:
                script.setup(p, *p.script_args[script.args_from : script.args_to])
            except Exception:
                errors.report(f"Error running setup: {script.filename}", exc_info=True)

    def before_process(self, p):
        self._call("before_process", p)

    def process(self, p):
        self._call("process", p)

    def before_process_batch(self, p, **kwargs):
        self._call("before_process_batch", p, **kwargs)

    def after_extra_networks_activate(self, p, **kwargs):
        self._call("after_extra_networks_activate", p, **kwargs)

    def process_batch(self, p, **kwargs):
        self._call("process_batch", p, **kwargs)

    def process_before_every_sampling(self, p, **kwargs):
        self._call("process_before_every_sampling", p, **kwargs)

    def before_hr(self, p):
        self._call("before_hr", p)

    def post_sample(self, p, ps):
        self._call("post_sample", p, ps)

    def postprocess_batch(self, p, images, **kwargs):
        for script in self.ordered_scripts("postprocess_batch"):
            try:
                script.postprocess_batch(p, *p.script_args[script.args_from : script.args_to], images=images, **kwargs)
            except Exception:
                errors.report(f"Error running postprocess_batch: {script.filename}", exc_info=True)

    def postprocess_batch_list(self, p, pp, **kwargs):
        self._call("postprocess_batch_list", p, pp, **kwargs)

    def postprocess_image(self, p, pp):
        self._call("postprocess_image", p, pp)

    def postprocess(self, p, processed):
        self._call("postprocess", p, processed)


scripts_txt2img: ScriptRunner | None = None
scripts_img2img: ScriptRunner | None = None
