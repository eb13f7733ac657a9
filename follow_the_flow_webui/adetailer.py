"""ADetailer (Bing-su/adetailer): Follow the Flow takes part in its inpaint passes.

ADetailer inpaints each detected region with an img2img of its own (`p._ad_inner` is set on it) that gets a copy
of the generation's script arguments but, with its setting "Apply only selected scripts to ADetailer"
(`ad_only_selected_scripts`, on by default), only the always-on scripts whose file name (without `.py`) is in
its setting `ad_script_names`. Left out of that list, an empty ADetailer prompt (the image's own prompt, markers
and all) would be encoded with the markers as text and unpatched, and an ADetailer prompt of its own never
segmented. So for each generation Follow the Flow is enabled in, its script name is added to that setting, and
the setting is put back as it was when the generation ends (or, after a failed one, when the next one starts).
"""

from __future__ import annotations

SCRIPT_NAMES = "ad_script_names"
ONLY_SELECTED = "ad_only_selected_scripts"
SCRIPT_NAME = "follow_the_flow"  # ADetailer matches a script by its file's stem: scripts/follow_the_flow.py
TITLE = "ADetailer"

_saved: list[tuple[bool, object]] = []  # (the key was in the settings, its value) while joined


def is_inner(p) -> bool:
    """Whether `p` is one of ADetailer's own inpaint passes."""
    return bool(getattr(p, "_ad_inner", False))


def _has_adetailer(p) -> bool:
    runner = getattr(p, "scripts", None)
    return any(script.title() == TITLE for script in getattr(runner, "alwayson_scripts", None) or [])


def join(p, opts) -> bool:
    """Add Follow the Flow to the scripts ADetailer runs in its passes of this generation, where ADetailer is
    loaded and would leave it out; returns whether the setting was changed (`leave` puts it back)."""
    if is_inner(p):  # ADetailer's own pass: the list it was built with must stay until the generation ends
        return False
    leave(opts)
    if not _has_adetailer(p) or not opts.data.get(ONLY_SELECTED, True):
        return False
    label = getattr(opts, "data_labels", {}).get(SCRIPT_NAMES)
    current = opts.data.get(SCRIPT_NAMES, getattr(label, "default", None))  # ADetailer's own fallback
    if not isinstance(current, str) or SCRIPT_NAME in (name.strip() for name in current.split(",")):
        return False
    _saved.append((SCRIPT_NAMES in opts.data, opts.data.get(SCRIPT_NAMES)))
    opts.data[SCRIPT_NAMES] = f"{current},{SCRIPT_NAME}" if current.strip() else SCRIPT_NAME
    return True


def leave(opts) -> None:
    """Put ADetailer's script list back as it was before `join`."""
    while _saved:
        present, value = _saved.pop()
        if present:
            opts.data[SCRIPT_NAMES] = value
        else:
            opts.data.pop(SCRIPT_NAMES, None)
