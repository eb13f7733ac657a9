"""The oldest versions of its dependencies flowcore works with, checked where nothing else checks them.

`pip install flowcore` enforces the ranges in `pyproject.toml`; the WebUI extension and the ComfyUI nodes do not
go through pip: they import flowcore from the checkout inside the host's own environment. There, the glue asks
`version_problem()` before it patches, and on an unsupported version logs one warning and leaves images
unpatched. `MINIMUM_VERSIONS` holds the same lower bounds as `pyproject.toml` (a test checks they agree).
"""

from __future__ import annotations

import importlib.metadata
from collections.abc import Callable
from functools import cache

from packaging.version import InvalidVersion, Version

MINIMUM_VERSIONS = {"torch": "2.0", "numpy": "1.23", "spacy": "3.5", "transformers": "4.30", "safetensors": "0.3"}


def installed_version(name: str) -> str | None:
    """The installed version of distribution `name`, or None when it is not installed."""
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def unsupported_versions(version_of: Callable[[str], str | None] = installed_version) -> list[str]:
    """`"transformers 4.25.1 (flowcore needs >= 4.30)"` for each dependency installed at a version older than
    flowcore works with. A missing one is not listed: importing flowcore, or the spaCy lookup, says so."""
    found = []
    for name, minimum in MINIMUM_VERSIONS.items():
        version = version_of(name)
        if version is None:
            continue
        try:
            too_old = Version(version).release < Version(minimum).release
        except InvalidVersion:
            continue
        if too_old:
            found.append(f"{name} {version} (flowcore needs >= {minimum})")
    return found


@cache
def version_problem() -> str:
    """One sentence naming this environment's unsupported versions, or "" when there are none (read once per
    process: versions do not change under a running host)."""
    outdated = unsupported_versions()
    if not outdated:
        return ""
    return f"unsupported versions: {', '.join(outdated)}; images are unpatched until they are upgraded"
