"""Shared fixtures: the real CLIP tokenizer, the real spaCy parser and tiny random-weight encoders."""

from __future__ import annotations

import contextlib
import importlib
import os
import sys

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
if "FLOWCORE_CACHE" not in os.environ:  # calibrations of the tests' encoders: not in the user's cache
    import tempfile

    os.environ["FLOWCORE_CACHE"] = tempfile.mkdtemp(prefix="flowcore-test-cache-")

from flowcore import ClipEncoder, FlowPatcher, SdxlEncoder, load_nlp  # noqa: E402
from flowcore.testing import clip_tokenizer, tiny_clip_text_model  # noqa: E402


@pytest.fixture(autouse=True)
def _real_gradio_outside_the_webui_standin(request):
    """The WebUI stand-in (tests/webui_standin) puts a fake `gradio` into sys.modules, as the WebUI's
    gradio 3 is not installed here; tests of our own Gradio app need the real one back meanwhile."""
    fake = sys.modules.get("gradio")
    standin_test = any(part in ("extension", "webui_standin") for part in request.path.parts)
    if standin_test or fake is None or fake.__name__ != "fake_gradio":
        yield
        return
    del sys.modules["gradio"]
    with contextlib.suppress(ImportError):  # not installed (the `ui` extra): then no test here uses it
        importlib.import_module("gradio")
    try:
        yield
    finally:
        sys.modules["gradio"] = fake


@pytest.fixture(scope="session")
def tokenizer():
    return clip_tokenizer()


@pytest.fixture(scope="session")
def nlp():
    return load_nlp()


@pytest.fixture(scope="session")
def clip_model():
    return tiny_clip_text_model(seed=0)


@pytest.fixture(scope="session")
def clip_encoder(tokenizer, clip_model):
    return ClipEncoder(tokenizer, clip_model)


@pytest.fixture(scope="session")
def sdxl_encoder(tokenizer, clip_model):
    second = tiny_clip_text_model(hidden_size=48, seed=1, with_projection=True)
    return SdxlEncoder(tokenizer, clip_model, tokenizer, second)


@pytest.fixture()
def patcher(clip_encoder, nlp):
    return FlowPatcher(clip_encoder, nlp=nlp)


@pytest.fixture(scope="session")
def minilm_encoder():
    """The trained MiniLM encoder (see `flowcore.testing.minilm_encoder`), loaded once."""
    from flowcore.testing import minilm_encoder

    return minilm_encoder()
