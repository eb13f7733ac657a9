"""Tiny random-weight pipelines for the pipeline, CLI and app tests, built once per session and saved to disk
in each format users load: a diffusers folder and a single `.safetensors` file in the WebUI's (ldm) layout."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")


@pytest.fixture(scope="session")
def tiny_sd15():
    from flowcore.testing import tiny_sd15_pipeline

    return tiny_sd15_pipeline()


@pytest.fixture(scope="session")
def tiny_sdxl():
    from flowcore.testing import tiny_sdxl_pipeline

    return tiny_sdxl_pipeline()


@pytest.fixture(scope="session")
def sd15_folder(tiny_sd15, tmp_path_factory):
    """The tiny SD 1.5-style pipeline as a diffusers folder."""
    folder = tmp_path_factory.mktemp("models") / "tiny-sd15"
    tiny_sd15.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def sd15_single_file(tiny_sd15, tmp_path_factory):
    """The same weights as one `.safetensors` file with the original (ldm / WebUI) key names."""
    from flowcore.testing import save_single_file

    path = tmp_path_factory.mktemp("models") / "tiny-sd15.safetensors"
    save_single_file(tiny_sd15, path)
    return path


@pytest.fixture(autouse=True)
def one_torch_thread():
    """Tiny models run 10-30x faster on one thread when other processes share the two cores (no OpenMP
    spinning against them); restored after each test."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
