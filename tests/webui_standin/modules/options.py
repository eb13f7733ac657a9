"""Stand-in for ``modules/options.py``: OptionInfo, Options (attribute access to settings)."""

from __future__ import annotations


class OptionInfo:
    def __init__(
        self,
        default=None,
        label="",
        component=None,
        component_args=None,
        onchange=None,
        section=None,
        refresh=None,
        comment_before="",
        comment_after="",
        infotext=None,
        restrict_api=False,
        category_id=None,
    ):
        self.default = default
        self.label = label
        self.component = component
        self.component_args = component_args
        self.onchange = onchange
        self.section = section
        self.category_id = category_id
        self.refresh = refresh
        self.do_not_save = False
        self.comment_before = comment_before
        self.comment_after = comment_after
        self.infotext = infotext
        self.restrict_api = restrict_api

    def link(self, label, url):
        self.comment_before += f"[<a href='{url}' target='_blank'>{label}</a>]"
        return self

    def js(self, label, js_func):
        self.comment_before += f"[<a onclick='{js_func}(); return false'>{label}</a>]"
        return self

    def info(self, info):
        self.comment_after += f"<span class='info'>({info})</span>"
        return self

    def html(self, html):
        self.comment_after += html
        return self

    def needs_restart(self):
        self.comment_after += " <span class='info'>(requires restart)</span>"
        return self

    def needs_reload_ui(self):
        self.comment_after += " <span class='info'>(requires Reload UI)</span>"
        return self


class OptionHTML(OptionInfo):
    def __init__(self, text):
        super().__init__(str(text).strip(), label="")
        self.do_not_save = True


def options_section(section_identifier, options_dict):
    """Tag every OptionInfo with its section: ``(id, label)`` or ``(id, label, category)``."""
    for info in options_dict.values():
        if len(section_identifier) == 2:
            info.section = section_identifier
        elif len(section_identifier) == 3:
            info.section = section_identifier[0:2]
            info.category_id = section_identifier[2]
    return options_dict


_BUILTIN = {"data_labels", "data", "restricted_opts", "typemap"}


class Options:
    typemap = {int: float}

    def __init__(self, data_labels: dict[str, OptionInfo], restricted_opts=None):
        self.data_labels = data_labels
        self.data = {k: v.default for k, v in data_labels.items() if not v.do_not_save}
        self.restricted_opts = restricted_opts or set()

    def __setattr__(self, key, value):
        if key in _BUILTIN:
            return object.__setattr__(self, key, value)
        if self.data is not None and (key in self.data or key in self.data_labels):
            info = self.data_labels.get(key)
            if info is not None and info.do_not_save:
                return None
            self.data[key] = value
            return None
        return object.__setattr__(self, key, value)

    def __getattr__(self, item):
        if item in _BUILTIN:
            return object.__getattribute__(self, item)
        data = object.__getattribute__(self, "data")
        if data is not None and item in data:
            return data[item]
        labels = object.__getattribute__(self, "data_labels")
        if item in labels:
            return labels[item].default
        return object.__getattribute__(self, item)

    def set(self, key, value, is_api=False, run_callbacks=True):
        """Set an option and run its onchange; True when the value changed."""
        old = self.data.get(key, None)
        if old == value:
            return False
        info = self.data_labels[key]
        if info.do_not_save:
            return False
        setattr(self, key, value)
        if run_callbacks and info.onchange is not None:
            try:
                info.onchange()
            except Exception:
                setattr(self, key, old)
                raise
        return True

    def get_default(self, key):
        info = self.data_labels.get(key)
        return None if info is None else info.default

    def onchange(self, key, func, call=True):
        self.data_labels[key].onchange = func
        if call:
            func()

    def add_option(self, key, info):
        self.data_labels[key] = info
        if key not in self.data and not info.do_not_save:
            self.data[key] = info.default
