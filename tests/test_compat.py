"""The version guard the WebUI and ComfyUI glue consult: which installed versions flowcore cannot work with."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from flowcore.models import compat

ROOT = Path(__file__).resolve().parent.parent


def versions(**found):
    return lambda name: found.get(name)


def test_only_versions_older_than_the_minimum_are_unsupported():
    installed = versions(transformers="4.29.2", torch="2.13.0+cpu", numpy="1.23.0", spacy="3.8.0rc1")
    assert compat.unsupported_versions(installed) == ["transformers 4.29.2 (flowcore needs >= 4.30)"]


def test_a_missing_package_or_an_unreadable_version_is_not_reported():
    assert compat.unsupported_versions(versions(torch="1.13.1", numpy="not a version")) == [
        "torch 1.13.1 (flowcore needs >= 2.0)"
    ]


def test_this_environment_is_supported():
    assert compat.unsupported_versions() == [] and compat.version_problem() == ""


def test_the_minimums_are_pyproject_tomls_lower_bounds():
    tomllib = pytest.importorskip("tomllib")
    dependencies = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    bounds = dict(re.fullmatch(r"([a-z-]+)>=([\d.]+)", dependency).groups() for dependency in dependencies)
    assert bounds == compat.MINIMUM_VERSIONS
