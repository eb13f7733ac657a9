"""A minimal stand-in for ``gradio`` (used only when real gradio is not installed).

Components keep their constructor arguments (``value``, ``label``, ``elem_id``, ``visible``,
``choices``, ``minimum``/``maximum``/``step``...) as attributes; events are recorded, not run.
Layout blocks are context managers. ``update(**kw)`` returns a dict, as gradio 3 does."""

from __future__ import annotations

created: list = []
"""Every component made (tests can check that ui() has no side effects beyond this)."""


class Block:
    def __init__(self, *args, **kwargs):
        self.elem_id = kwargs.pop("elem_id", None)
        self.elem_classes = kwargs.pop("elem_classes", None)
        self.visible = kwargs.pop("visible", True)
        self.kwargs = kwargs
        self.events: list = []
        created.append(self)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def _event(self, name):
        def register(fn=None, inputs=None, outputs=None, **kwargs):
            self.events.append((name, fn, inputs, outputs, kwargs))
            return self

        return register

    def __getattr__(self, name):
        if name in {"change", "click", "input", "release", "select", "submit", "blur", "then", "upload"}:
            return self._event(name)
        raise AttributeError(name)


class Component(Block):
    def __init__(self, value=None, *, label=None, info=None, interactive=None, **kwargs):
        self.value = value
        self.label = label
        self.info = info
        self.interactive = interactive
        super().__init__(**kwargs)

    def get_block_name(self):
        return type(self).__name__.lower()


class Checkbox(Component):
    def __init__(self, value=False, **kwargs):
        super().__init__(value, **kwargs)


class Slider(Component):
    def __init__(self, minimum=0, maximum=100, value=None, *, step=None, **kwargs):
        self.minimum, self.maximum, self.step = minimum, maximum, step
        super().__init__(minimum if value is None else value, **kwargs)


class Number(Component):
    def __init__(self, value=None, *, minimum=None, maximum=None, step=None, precision=None, **kwargs):
        self.minimum, self.maximum, self.step, self.precision = minimum, maximum, step, precision
        super().__init__(value, **kwargs)


class _WithChoices(Component):
    def __init__(self, choices=None, value=None, *, type="value", **kwargs):
        self.choices = list(choices or [])
        self.type = type
        super().__init__(value, **kwargs)


class Radio(_WithChoices):
    pass


class Dropdown(_WithChoices):
    def __init__(self, choices=None, value=None, *, multiselect=None, **kwargs):
        self.multiselect = multiselect
        super().__init__(choices, value, **kwargs)


class CheckboxGroup(_WithChoices):
    pass


class Textbox(Component):
    def __init__(self, value="", *, lines=1, placeholder=None, **kwargs):
        self.lines, self.placeholder = lines, placeholder
        super().__init__(value, **kwargs)


class Markdown(Component):
    def __init__(self, value="", **kwargs):
        super().__init__(value, **kwargs)


class HTML(Markdown):
    pass


class Button(Component):
    def __init__(self, value="Run", **kwargs):
        super().__init__(value, **kwargs)


class JSON(Component):
    pass


class State(Component):
    pass


class Row(Block):
    pass


class Column(Block):
    pass


class Group(Block):
    pass


class Box(Block):
    pass


class Tab(Block):
    pass


class Blocks(Block):
    pass


class Accordion(Block):
    def __init__(self, label=None, open=True, **kwargs):
        self.label = label
        self.open = open
        super().__init__(**kwargs)


def update(**kwargs):
    return {"__type__": "update", **kwargs}


class Warning:  # noqa: A001 - gradio's name
    def __init__(self, message=""):
        self.message = message


class Info(Warning):
    pass


class blocks:  # noqa: N801 - mirrors ``gradio.blocks`` for ``gr.blocks.Block`` annotations
    Block = Block
