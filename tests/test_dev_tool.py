"""tools/dev.py's test command: it gets the browser where it can, runs every suite, and never turns a missing
browser into a green run."""

from __future__ import annotations

import importlib.util
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture()
def dev(monkeypatch):
    spec = importlib.util.spec_from_file_location("dev_tool", ROOT / "tools" / "dev.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    calls = []
    monkeypatch.setattr(module, "sh", lambda *args, env=None: calls.append([str(a) for a in args]))
    monkeypatch.setattr(module, "ensure_environment", lambda extras: None)
    monkeypatch.setattr(module, "ensure_host_environment", lambda venv_dir: Path(f"{venv_dir.name}-python"))
    module.calls = calls
    return module


def which(present: set[str]):
    return lambda name: f"/usr/bin/{name}" if name in present else None


def test_root_with_apt_installs_debians_chromium(dev, monkeypatch):
    installed = set()
    monkeypatch.setattr(dev.shutil, "which", lambda name: which({"apt-get"} | installed)(name))
    monkeypatch.setattr(dev.os, "geteuid", lambda: 0)

    def sh(*args, env=None):
        dev.calls.append([str(a) for a in args])
        if "install" in args:
            installed.update({"chromium", "chromedriver"})

    monkeypatch.setattr(dev, "sh", sh)
    assert dev.ensure_browser() == ""
    assert dev.calls[-1][-2:] == ["chromium", "chromium-driver"] and dev.calls[0][1] == "update"


def test_without_root_every_other_suite_runs_then_one_line_says_what_to_install(dev, monkeypatch):
    monkeypatch.setattr(dev.shutil, "which", which({"apt-get"}))
    monkeypatch.setattr(dev.os, "geteuid", lambda: 1000)
    with pytest.raises(SystemExit) as exit_info:
        dev.test([])
    message = str(exit_info.value.code)
    assert "\n" not in message and "sudo apt-get install chromium chromium-driver" in message
    pytest_runs = [call for call in dev.calls if "pytest" in call]
    assert len(pytest_runs) == 3  # the core suite without the browser test, then A1111's and Forge's environments
    assert "tests/test_app_browser.py" in pytest_runs[0]
    assert [run[0] for run in pytest_runs[1:]] == [".venv-webui-python", ".venv-forge-python"]


def test_a_failing_suite_does_not_stop_the_host_suites(dev, monkeypatch):
    monkeypatch.setattr(dev.shutil, "which", which({"chromium", "chromedriver"}))

    def sh(*args, env=None):
        dev.calls.append([str(a) for a in args])
        if "pytest" in args and "-python" not in str(args[0]):
            raise subprocess.CalledProcessError(1, args)

    monkeypatch.setattr(dev, "sh", sh)
    with pytest.raises(SystemExit) as exit_info:
        dev.test([])
    assert exit_info.value.code == 1
    assert {".venv-webui-python", ".venv-forge-python"} <= {call[0] for call in dev.calls}
    assert not any("--deselect" in call for call in dev.calls)  # the browser is there: its test runs


def test_usage_names_the_script_by_its_path():
    completed = subprocess.run(["python3", str(ROOT / "tools" / "dev.py")], capture_output=True, text=True)
    assert completed.returncode == 1 and "usage: python3 tools/dev.py {test|demo|flowcore}" in completed.stderr
