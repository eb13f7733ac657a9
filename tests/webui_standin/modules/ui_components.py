"""Stand-in for ``modules/ui_components.py``: ``InputAccordion`` (a hidden checkbox whose value is
the open state of an accordion) and the small Form* wrappers."""

from __future__ import annotations

import gradio as gr


class InputAccordion(gr.Checkbox):
    """``with InputAccordion(False, label="...") as enabled:`` -- the returned object is the
    checkbox (an input whose value is True when the accordion is open)."""

    global_index = 0

    def __init__(self, value, **kwargs):
        self.accordion_id = kwargs.get("elem_id")
        if self.accordion_id is None:
            self.accordion_id = f"input-accordion-{InputAccordion.global_index}"
            InputAccordion.global_index += 1
        super().__init__(value, **{**kwargs, "elem_id": f"{self.accordion_id}-checkbox", "visible": False})
        self.accordion = gr.Accordion(
            **{
                **kwargs,
                "elem_id": self.accordion_id,
                "label": kwargs.get("label", "Accordion"),
                "elem_classes": ["input-accordion"],
                "open": value,
            }
        )

    def extra(self):
        return gr.Column(elem_id=self.accordion_id + "-extra", elem_classes="input-accordion-extra", min_width=0)

    def __enter__(self):
        self.accordion.__enter__()
        return self

    def __exit__(self, exc_type, exc_val, exc_tb):
        self.accordion.__exit__(exc_type, exc_val, exc_tb)

    def get_block_name(self):
        return "checkbox"


class FormRow(gr.Row):
    pass


class FormColumn(gr.Column):
    pass


class FormGroup(gr.Group):
    pass


class FormHTML(gr.HTML):
    pass


class ToolButton(gr.Button):
    pass
