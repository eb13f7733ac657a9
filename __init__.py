"""ComfyUI's entry point: ComfyUI imports `custom_nodes/<this repository>/__init__.py` and reads its node mappings.

The node pack lives in `comfyui_nodes/`, the core in `flowcore/`. Nothing else imports this file: the WebUIs
load `scripts/`, `pip install` packages `flowcore/` only, pytest collects `tests/`. Importing it installs
nothing and changes no `sys.path`: the core is imported from this repository under its own name `flowcore`
(unless a `flowcore` is imported already).
"""

import importlib.util
import sys
from pathlib import Path


def _import_flowcore() -> None:
    if "flowcore" in sys.modules:
        return
    folder = Path(__file__).resolve().parent / "flowcore"
    spec = importlib.util.spec_from_file_location(
        "flowcore", folder / "__init__.py", submodule_search_locations=[str(folder)]
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules["flowcore"] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules["flowcore"]
        raise


if __package__:  # imported as a package (ComfyUI), not run as a file
    _import_flowcore()
    from .comfyui_nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS

    __all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS"]
