"""Stand-in for the WebUI's ``launch.py`` as seen by an extension's ``install.py``.

``is_installed(package)`` answers like the WebUI's (distribution metadata, then ``find_spec``);
``run_pip(command, desc=None, live=...)`` only records the call in ``pip_calls``."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import sys

python = sys.executable
index_url = ""
pip_calls: list[tuple[str, str | None]] = []
run_calls: list[tuple[str, str | None]] = []


def is_installed(package):
    try:
        dist = importlib.metadata.distribution(package)
    except importlib.metadata.PackageNotFoundError:
        try:
            spec = importlib.util.find_spec(package)
        except ModuleNotFoundError:
            return False
        return spec is not None
    return dist is not None


def run(command, desc=None, errdesc=None, custom_env=None, live=False):
    run_calls.append((command, desc))
    return ""


def run_pip(command, desc=None, live=False):
    """The WebUI runs ``"<python>" -m pip <command> --prefer-binary`` with desc ``"Installing <desc>"``."""
    pip_calls.append((command, desc))
    return run(f'"{python}" -m pip {command} --prefer-binary', desc=f"Installing {desc}")
