"""What every host's checks share (standard library only): result rows and their table, a server started and
stopped by its PID, HTTP, `pip freeze`, random checkpoints, `flowcore analyze`, and the short calibration of the
*Automatic* rows (also imported inside the hosts' own processes: ComfyUI's checks, Forge's probe)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
NOT_IMPLEMENTED = None  # a row's `ok` for a family or host the suite cannot check yet


class _NotRun:
    """A row's `ok` for a check the suite has but did not run, for the reason in the row's detail (a measured cost,
    a file no family has). Falsy, so it never counts as passed; it never fails a run either."""

    def __bool__(self) -> bool:
        return False

    def __repr__(self) -> str:
        return "NOT_RUN"


NOT_RUN = _NotRun()


@dataclass
class Row:
    """One check of one host and family; `ok` is True, False, `NOT_IMPLEMENTED` or `NOT_RUN`."""

    host: str
    family: str
    model_type: str
    check: str
    ok: bool | None
    max_diff: float | None = None
    peak_mb: float | None = None
    seconds: float | None = None
    detail: str = ""


def checked_row(host: str, family: str, detected: str, check: str, function, server: Server) -> Row:
    """Run one check (`function() -> (ok, max difference, detail)`) and time it; an exception fails only this row,
    with its message, so the next rows still run."""
    began = time.perf_counter()
    try:
        ok, diff, detail = function()
    except Exception as error:
        ok, diff, detail = False, None, f"{type(error).__name__}: {error}"
    return Row(host, family, detected, check, ok, diff, server.peak_mb(), time.perf_counter() - began, detail)


def _number(value: float | None) -> str:
    if value is None:
        return "-"
    return "0" if value == 0 else f"{value:.2g}" if abs(value) < 0.01 else f"{value:.3g}"


def table(rows: list[Row]) -> str:
    """The rows as one text table, then each row's detail."""
    header = ("host", "family", "detected", "check", "result", "max diff", "peak MB", "s")
    cells = [
        (
            row.host,
            row.family,
            row.model_type,
            row.check,
            _result(row),
            _number(row.max_diff),
            "-" if row.peak_mb is None else f"{row.peak_mb:.0f}",
            "-" if row.seconds is None else f"{row.seconds:.1f}",
        )
        for row in rows
    ]
    widths = [max(len(str(line[n])) for line in [header, *cells]) for n in range(len(header))]
    lines = [" | ".join(str(cell).ljust(width) for cell, width in zip(line, widths)) for line in [header, *cells]]
    lines.insert(1, "-+-".join("-" * width for width in widths))
    details = [f"{n + 1:>3}. {row.check}: {row.detail}" for n, row in enumerate(rows) if row.detail]
    not_run = [str(n + 1) for n, row in enumerate(rows) if row.ok is NOT_RUN]
    summary = []
    if not_run:
        failed = sum(row.ok is False for row in rows)
        summary = [
            "",
            f"{len(not_run)} rows NOT RUN (rows {', '.join(not_run)}; reasons in their details): "
            + (f"{failed} other rows failed" if failed else "no row that ran failed, but these checks are not shown"),
        ]
    return "\n".join(lines + ["", "details:", *details, *summary])


def _result(row: Row) -> str:
    if row.ok is NOT_RUN:
        return "not run"
    return "PASS" if row.ok else "not implemented" if row.ok is NOT_IMPLEMENTED else "FAIL"


def exit_status(rows: list[Row]) -> int:
    """0 when every row passed or was not run (`NOT_RUN`, said in the table's summary), 1 when one failed, 2 when
    none failed but some are not implemented yet."""
    if any(row.ok is False for row in rows) or not rows:
        return 1
    return 2 if any(row.ok is NOT_IMPLEMENTED for row in rows) else 0


def say(message: str) -> None:
    print(f"[realclient] {message}", file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def host_env(**extra: str) -> dict[str, str]:
    """The environment of every host process: one thread (steady, reproducible images), offline hub."""
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    env.update(extra)
    return env


def _short(part: str) -> str:
    """A command's part as the progress lines show it (an inline script by its first line)."""
    return part if len(part) <= 120 and "\n" not in part else part.strip().splitlines()[0][:60] + " ..."


def run(command: list[str], log: Path, **kwargs) -> subprocess.CompletedProcess:
    """Runs `command` to the end with its output appended to `log`; raises on a non-zero exit."""
    say(" ".join(_short(str(part)) for part in command))
    with open(log, "a", encoding="utf-8") as out:
        out.write(f"\n$ {' '.join(str(part) for part in command)}\n")
        out.flush()
        return subprocess.run(command, stdout=out, stderr=subprocess.STDOUT, check=True, **kwargs)


class Server:
    """A host server started as one process (its PID kept) and stopped by that PID, its output in `log`."""

    def __init__(self, command: list[str], cwd: Path, env: dict[str, str], log: Path) -> None:
        self.log = log
        say(f"starting {' '.join(command)} (log: {log})")
        with open(log, "w", encoding="utf-8") as out:
            self.process = subprocess.Popen(command, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT)
        self.pid = self.process.pid

    def wait_ready(self, url: str, timeout: float = 300) -> None:
        """Polls `url` until it answers; raises if the server exits or the time runs out."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the server exited with status {self.process.returncode}; see {self.log}")
            try:
                urllib.request.urlopen(url, timeout=5).read()
                return
            except OSError:
                time.sleep(1)
        raise TimeoutError(f"{url} did not answer within {timeout:.0f} s; see {self.log}")

    def peak_mb(self) -> float | None:
        """The server's peak resident memory so far (VmHWM)."""
        try:
            status = Path(f"/proc/{self.pid}/status").read_text()
        except OSError:
            return None
        line = next((line for line in status.splitlines() if line.startswith("VmHWM:")), None)
        return int(line.split()[1]) / 1024 if line else None

    def stop(self) -> None:
        """SIGTERM to our PID, SIGKILL after 30 s."""
        if self.process.poll() is None:
            os.kill(self.pid, signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                os.kill(self.pid, signal.SIGKILL)
                self.process.wait()
        say(f"server {self.pid} stopped")


def http_json(url: str, data: dict | None = None, timeout: float = 60):
    """GET (or POST `data` as JSON) and decode the JSON answer (None for an empty body)."""
    body = None if data is None else json.dumps(data).encode()
    request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        raw = response.read()
    return json.loads(raw) if raw.strip() else None


def pip_freeze(python: str, save: Path) -> dict[str, str]:
    """`pip freeze` of an environment (also written to `save`) as {normalised name: requirement}."""
    out = subprocess.run([python, "-m", "pip", "freeze"], capture_output=True, text=True, check=True).stdout
    save.write_text(out, encoding="utf-8")
    packages = {}
    for line in out.splitlines():
        name = line.split("==")[0].split(" @ ")[0].strip().lower().replace("_", "-")
        if name and not line.startswith("#"):
            packages[name] = line.strip()
    return packages


def freeze_row(host: str, family: str, before: dict[str, str], after: dict[str, str], seconds: float) -> Row:
    """Installing changed no package the environment had: every line of `before` is still in `after`."""
    changed = [f"{before[name]} -> {after.get(name, 'removed')}" for name in before if after.get(name) != before[name]]
    added = sorted(set(after) - set(before))
    detail = f"{len(before)} packages before, {len(added)} added ({', '.join(added[:6])}{', ...' if added else ''})"
    detail += f"; changed: {changed}" if changed else "; none changed or removed"
    return Row(
        host,
        family,
        "-",
        "install changed no host package (pip freeze)",
        not changed,
        len(changed),
        None,
        seconds,
        detail,
    )


ATOL = 1e-5  # a patched row against the host's encode of the item alone, for rows whose values stay under 1


def tolerance(scale: float) -> float:
    """How far a patched row may be from the host's encode of the item alone: `ATOL` times the largest |value| of
    the item's rows (at least `ATOL`). float32 rounding grows with the values: SDXL's OpenCLIP-G rows (its
    penultimate layer, no final norm) reach the tens, where CLIP-L's final-norm rows stay near 1."""
    return ATOL * max(1.0, scale)


# *Automatic* with T5-XXL calibrates on this many of the built-in prompts (`short_calibration`), in ComfyUI and
# Forge: the full calibration (182 prompts and their items) takes hours on this CPU; the row extrapolates it
T5_CALIBRATION_PROMPTS = 12


def short_calibration(calibration, count: int) -> tuple[int, int]:
    """Makes the core's `calibration` module (the one the node pack or extension imported, in the host's own
    process) calibrate on `count` of its built-in calibration prompts, spread evenly over the file (sentences and
    tag lists), for the *Automatic* rows of encoders whose full calibration takes hours on this CPU (T5-XXL, the 2-8B
    language models). The row then runs *Automatic* end to end inside the host (calibration through the host's own
    encoder, scores, patching) and times the calibration, to extrapolate the full one. The cache key hashes the
    prompts, so this calibration is never taken for the full one. Returns (count, full count)."""
    prompts = calibration.calibration_prompts()
    subset = prompts[:: max(1, len(prompts) // count)][:count]
    calibration.calibration_prompts = lambda: list(subset)
    return len(subset), len(prompts)


def full_calibration_estimate(calibrated_s: float, count: int, total: int) -> str:
    """The full calibration's time, extrapolated from `calibrated_s` on `count` of its `total` prompts."""
    return f"the full one is estimated at {calibrated_s * total / count / 60:.0f} min on this CPU"


def calibration_timing(first_s: float, again_s: float, count: int, total: int) -> str:
    """What a row on a short calibration says: the first *Automatic* call (calibration included) against the same
    call again (calibrated), and the full calibration extrapolated from the difference."""
    calibrated = max(0.0, first_s - again_s)
    return (
        f"calibrated on {count} of {total} prompts: first Automatic call {first_s:.0f} s, again {again_s:.0f} s, so "
        f"about {calibrated:.0f} s of calibration; {full_calibration_estimate(calibrated, count, total)}"
    )


def random_checkpoint(python: str, family: str, folder: Path, log: Path) -> tuple[Path, Path]:
    """The family's random checkpoint and LoRA from `tools/random_checkpoint.py` (made once, then reused)."""
    checkpoint, lora = folder / f"{family}-random.safetensors", folder / f"{family}-random-lora.safetensors"
    if not (checkpoint.exists() and lora.exists()):
        folder.mkdir(parents=True, exist_ok=True)
        tool = REPO / "tools" / "random_checkpoint.py"
        run([python, str(tool), "--family", family, "--out", str(folder), "--lora"], log, env=host_env())
    return checkpoint, lora


def link(source: Path, folder: Path) -> Path:
    """Links `source` into one of the host's model folders (replacing a link of the same name)."""
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / source.name
    if target.is_symlink() or target.exists():
        target.unlink()
    target.symlink_to(source.resolve())
    return target


def flowcore_python() -> str:
    """The Python that runs `flowcore analyze`: this checkout's `.venv` (made by `tools/dev.py`), else this one."""
    venv = REPO / ".venv" / "bin" / "python"
    return str(venv) if venv.exists() else sys.executable


def analyze(checkpoint: Path, prompt: str, sensitivity: float, cache: Path, log: Path) -> dict:
    """`flowcore analyze --json` on the checkpoint's text encoder, with its own calibration cache."""
    command = [flowcore_python(), "-m", "flowcore", "analyze", "--json", "--model", str(checkpoint)]
    command += ["--sensitivity", str(sensitivity), prompt]
    say(" ".join(command))
    done = subprocess.run(
        command, capture_output=True, text=True, cwd=REPO, env=host_env(FLOWCORE_CACHE=str(cache)), check=False
    )
    with open(log, "a", encoding="utf-8") as out:
        out.write(f"\n$ {' '.join(command)}\n{done.stderr}")
    if done.returncode != 0:
        raise RuntimeError(f"flowcore analyze exited with {done.returncode}: {done.stderr.strip()[-300:]}")
    return json.loads(done.stdout)


def checkout_files() -> list[str]:
    """The files a clone of this checkout has (tracked and not ignored, uncommitted ones included)."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO,
        capture_output=True,
        check=True,
    ).stdout.decode()
    return [name for name in listed.split("\0") if name and (REPO / name).is_file()]


def script_listed(url: str, options: dict) -> tuple[bool, None, str]:
    """The WebUI's `/sdapi/v1/script-info` lists our txt2img script as always-on (A1111 and Forge alike)."""
    scripts = http_json(f"{url}/sdapi/v1/script-info")
    ours = [s for s in scripts if s["name"] == "follow the flow" and not s["is_img2img"]]
    ok = bool(ours) and ours[0]["is_alwayson"]
    labels = [arg.get("label") for arg in ours[0]["args"]] if ours else []
    return ok, None, f"checkpoint {options.get('sd_model_checkpoint')}; script args {labels}"
