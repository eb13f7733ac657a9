"""Fixtures for the ComfyUI node tests: the stand-in (see comfy_standin/README.md) and its CLIP objects."""

from __future__ import annotations

import comfy_standin  # noqa: F401 - puts the stand-in's `comfy` and `nodes` on sys.path
import pytest
import torch

from comfyui_nodes import conditioning


@pytest.fixture(scope="session")
def clips():
    """One CLIP object per family, built once (tests clone them where they change them)."""
    return {family: comfy_standin.make_clip(family, seed=index) for index, family in enumerate(comfy_standin.FAMILIES)}


@pytest.fixture(autouse=True)
def _one_thread():
    """These tests run many tiny forward calls (calibrations): one thread keeps them fast on a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture()
def calibrated(monkeypatch):
    """Give the node's patchers these calibrations (by part name) instead of measuring their own."""
    given = {}
    real = conditioning.FlowPatcher
    monkeypatch.setattr(
        conditioning, "FlowPatcher", lambda part, **kwargs: real(part, calibration=given.get(part.name), **kwargs)
    )
    conditioning._PATCHERS.clear()
    yield given
    conditioning._PATCHERS.clear()
