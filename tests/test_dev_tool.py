"""tools/dev.py: it gets the browser where it can, runs every suite and ends with one line per suite and the
verdict, never turns a missing browser into a green run, installs each venv from its lock (again when the lock
changes), and picks the torch build that fits the machine."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def load_dev():
    spec = importlib.util.spec_from_file_location("dev_tool", ROOT / "tools" / "dev.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


@pytest.fixture()
def dev(monkeypatch):
    module = load_dev()
    calls = []

    def run_and_tail(*args, env=None):
        calls.append([str(a) for a in args])
        return 0, "1 passed in 0.01s"

    monkeypatch.setattr(module, "sh", lambda *args, env=None, log=None: calls.append([str(a) for a in args]))
    monkeypatch.setattr(module, "run_and_tail", run_and_tail)
    monkeypatch.setattr(module, "ensure_environment", lambda: None)
    monkeypatch.setattr(module, "ensure", lambda env: Path(f"{env.path.name}-python"))
    monkeypatch.setattr(
        module, "versions", lambda python: f"transformers {'4.30.2' if 'webui' in str(python) else '5.25.0'}"
    )
    module.calls = calls
    return module


def which(present: set[str]):
    return lambda name: f"/usr/bin/{name}" if name in present else None


def test_root_with_apt_installs_debians_chromium_without_recommends_into_a_log(dev, monkeypatch, capsys):
    installed = set()
    monkeypatch.setattr(dev.shutil, "which", lambda name: which({"apt-get"} | installed)(name))
    monkeypatch.setattr(dev.os, "geteuid", lambda: 0)
    logs = []

    def sh(*args, env=None, log=None):
        dev.calls.append([str(a) for a in args])
        logs.append(log)
        if "install" in args:
            installed.update({"chromium", "chromedriver"})

    monkeypatch.setattr(dev, "sh", sh)
    assert dev.ensure_browser() == ""
    assert dev.calls[-1][-3:] == ["--no-install-recommends", "chromium", "chromium-driver"]
    assert "update" in dev.calls[0] and logs == [dev.APT_LOG, dev.APT_LOG]
    assert capsys.readouterr().out.count("\n") == 1  # one line says what was installed


def test_without_root_every_other_suite_runs_then_one_line_says_what_to_install(dev, monkeypatch, capsys):
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
    assert "tests/test_tokenizer_families.py" in pytest_runs[1]  # GenericEncoder under the hosts' transformers
    assert "verdict: INCOMPLETE (the browser test did not run)" in capsys.readouterr().out


def test_a_failing_suite_does_not_stop_the_others_and_the_summary_names_it(dev, monkeypatch, capsys):
    monkeypatch.setattr(dev.shutil, "which", which({"chromium", "chromedriver"}))

    def run_and_tail(*args, env=None):
        dev.calls.append([str(a) for a in args])
        if "pytest" in args and "-python" not in str(args[0]):
            return 1, "2 failed, 418 passed in 960.00s"
        return 0, "230 passed in 120.00s" if "pytest" in args else "All checks passed!"

    monkeypatch.setattr(dev, "run_and_tail", run_and_tail)
    with pytest.raises(SystemExit) as exit_info:
        dev.test([])
    assert exit_info.value.code == 1
    assert {".venv-webui-python", ".venv-forge-python"} <= {call[0] for call in dev.calls}
    assert not any("--deselect" in call for call in dev.calls)  # the browser is there: its test runs
    summary = capsys.readouterr().out.split("---- tools/dev.py: summary ----\n")[1].splitlines()
    assert summary[0] == "lint ruff check: All checks passed!"
    assert summary[2] == "suite main (.venv: transformers 5.25.0): 2 failed, 418 passed in 960.00s [exit status 1]"
    assert summary[3] == "suite webui (.venv-webui: transformers 4.30.2): 230 passed in 120.00s"
    assert summary[-1] == "verdict: FAILED (suite main)" and len(summary) == 6


def test_a_host_venv_that_fails_to_install_is_a_failed_suite_and_the_next_host_still_runs(dev, monkeypatch, capsys):
    monkeypatch.setattr(dev.shutil, "which", which({"chromium", "chromedriver"}))

    def ensure(env):
        if env.name == "webui":
            raise subprocess.CalledProcessError(2, ["uv"])
        return Path(f"{env.path.name}-python")

    monkeypatch.setattr(dev, "ensure", ensure)
    with pytest.raises(SystemExit) as exit_info:
        dev.test([])
    assert exit_info.value.code == 2 and [call[0] for call in dev.calls if "pytest" in call][-1] == ".venv-forge-python"
    assert "suite webui (.venv-webui): install failed [exit status 2]" in capsys.readouterr().out


def test_run_and_tail_echoes_the_output_and_returns_pytests_last_line(capsys):
    dev = load_dev()
    script = "print('tests/test_a.py ..F'); print(); print('\\x1b[31m===== 1 failed, 2 passed in 0.12s =====\\x1b[0m')"
    returncode, last = dev.run_and_tail(sys.executable, "-c", script + "; raise SystemExit(1)")
    assert (returncode, last) == (1, "1 failed, 2 passed in 0.12s")
    assert "tests/test_a.py ..F" in capsys.readouterr().out


def test_commands_are_echoed_quoted(capsys):
    dev = load_dev()
    dev.sh(sys.executable, "-c", "pass", "a (zebra:1.3) on a crosswalk")
    assert capsys.readouterr().out.split("\n")[0].endswith("-c pass 'a (zebra:1.3) on a crosswalk'")


def test_lock_pins_keep_every_exact_pin_but_torch_and_the_checkout():
    compiled = (
        "-e .\naccelerate==1.16.0 ; python_full_version >= '3.11'\n    # via flowcore\ntorch==2.13.0\n"
        "Flowcore==0.1.0\nnvidia-cublas==13.1.1.3 ; sys_platform == 'linux'\n"
    )
    assert load_dev().lock_pins(compiled) == [
        "accelerate==1.16.0 ; python_full_version >= '3.11'",
        "nvidia-cublas==13.1.1.3 ; sys_platform == 'linux'",
    ]


def test_uv_gets_pips_package_sources():
    dev = load_dev()
    listing = (
        ":env:.find-links='/opt/wheels'\nglobal.extra-index-url='file:///a/simple file:///b/simple'\n"
        "global.find-links='/opt/wheels'\nglobal.index-url='https://mirror/simple'\n"
    )
    settings = dev.parse_pip_config(listing)
    assert settings["find-links"] == ["/opt/wheels", "/opt/wheels"]
    dev.pip_settings = lambda: settings
    assert dev.uv_source_args() == (
        "--index-strategy",
        "unsafe-best-match",
        "--index-url",
        "https://mirror/simple",
        "--extra-index-url",
        "file:///a/simple",
        "--extra-index-url",
        "file:///b/simple",
        "--find-links",
        "/opt/wheels",
    )
    assert dev.uv_source_args(index_only=True)[2:] == ("--index-url", "https://mirror/simple")


def test_a_changed_lock_resyncs_an_installed_venv_with_the_torch_build_it_has(tmp_path, monkeypatch):
    dev = load_dev()
    monkeypatch.setattr(dev, "LOCKS", tmp_path)
    calls, choices = [], []
    monkeypatch.setattr(dev, "sh", lambda *args, env=None, log=None: calls.append([str(a) for a in args]))
    monkeypatch.setattr(dev, "ensure_uv", lambda: Path("uv"))
    monkeypatch.setattr(dev, "uv_source_args", lambda index_only=False: ())
    build = dev.TorchBuild("torch==2.13.0+cpu", ("--extra-index-url", "https://cpu"), "CPU-only")
    monkeypatch.setattr(dev, "choose_torch", lambda: choices.append(build) or build)
    env = dev.Env("main", tmp_path / ".venv", (), ".[dev]")
    env.python.parent.mkdir(parents=True)
    env.python.touch()
    env.lock.write_text("numpy==2.4.6\n")
    dev.ensure(env)
    assert any("--constraint" in call and str(env.lock) in call for call in calls)
    calls.clear()
    dev.ensure(env)
    assert calls == []  # installed from this lock already
    env.lock.write_text("numpy==2.4.7\n")
    dev.ensure(env)
    (install, *_) = [call for call in calls if "torch==2.13.0+cpu" in call]
    assert "https://cpu" in install and len(choices) == 1  # the build was chosen once, then read from the stamp


@pytest.mark.parametrize(
    ("gpu", "cpu_index", "configured", "requirement", "why"),
    [
        (True, True, True, "torch==2.13.0", "an NVIDIA GPU is present"),
        (False, True, False, "torch==2.13.0+cpu", "CPU-only: no NVIDIA GPU (https://download.pytorch.org"),
        (False, False, True, "torch==2.13.0+cpu", "CPU-only: no NVIDIA GPU (the wheel from pip's"),
        (False, False, False, "torch==2.13.0", "the default build, with CUDA's libraries"),
    ],
)
def test_the_torch_build_fits_the_machine(tmp_path, monkeypatch, gpu, cpu_index, configured, requirement, why):
    dev = load_dev()
    monkeypatch.setattr(dev.sys, "platform", "linux")
    monkeypatch.setattr(dev.shutil, "which", which({"nvidia-smi"} if gpu else set()))
    monkeypatch.setattr(dev, "NVIDIA_DRIVER", tmp_path / "no-driver")
    monkeypatch.setattr(dev, "reachable", lambda url: cpu_index)
    monkeypatch.setattr(dev, "configured_cpu_wheel", lambda: configured)
    build = dev.choose_torch()
    assert build.requirement == requirement and why in build.why
    assert ("--extra-index-url" in build.index_args) == (requirement.endswith("+cpu") and cpu_index)


def test_usage_names_the_script_by_its_path():
    completed = subprocess.run(["python3", str(ROOT / "tools" / "dev.py")], capture_output=True, text=True)
    assert completed.returncode == 1
    assert "usage: python3 tools/dev.py {test|demo|flowcore|lock|newest|realclient}" in completed.stderr
