"""How much longer the first `flowcore analyze` with a model takes than the next one: the calibration.

The first automatic detection with a text encoder calibrates it (`flowcore.detection.calibration`, once per encoder) and
caches that on disk; later runs read it. This times the real command, as a user runs it, both ways:

    flowcore analyze "a crosswalk next to a bus station with a standing zebra" --model <SD 1.5 single file>

The checkpoint is SD 1.5's text encoder at its real size (hidden 768, 12 layers, 123M parameters) with random
weights, saved in fp16 as the published checkpoints hold it, under its single-file names
(`cond_stage_model.transformer.*`: the only tensors `analyze` reads), in a temporary folder. Each repeat runs
the command twice as a subprocess: "cold" with an empty temporary `FLOWCORE_CACHE` (it calibrates), then
"cached" with that same folder. Both pay Python's start, the imports, loading the weights and spaCy. The
ratio is taken per repeat and the medians are printed, so that drift in a shared machine's speed falls on both
sides alike. Every run's report (`--json`) must be the same, and only the cold runs may say they calibrate.
Budget (issue 17): cold <= 3x cached on a 2-core CPU.

    python benchmarks/first_run.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from safetensors.torch import save_file

from flowcore.testing import sd15_size_text_model

PROMPT = "a crosswalk next to a bus station with a standing zebra"
BUDGET = 3.0  # cold / cached
CALIBRATING = "Calibrating this text encoder once"  # the command's line on stderr while it calibrates


def save_text_encoder_checkpoint(model: torch.nn.Module, path: Path) -> None:
    """A single-file SD 1.x checkpoint holding only the text encoder's tensors, in fp16, under ldm's names."""
    state = {
        f"cond_stage_model.transformer.text_model.{key.removeprefix('text_model.')}": value.half().contiguous()
        for key, value in model.state_dict().items()
    }
    save_file(state, str(path))


def analyze(checkpoint: Path, cache: Path, *options: str) -> tuple[float, str, str]:
    """Run `flowcore analyze --json` on `checkpoint` with `cache` as `FLOWCORE_CACHE`: seconds, stdout, stderr."""
    env = {**os.environ, "FLOWCORE_CACHE": str(cache), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    command = [sys.executable, "-m", "flowcore", "analyze", PROMPT, "--model", str(checkpoint), "--device", "cpu"]
    started = time.perf_counter()
    done = subprocess.run([*command, "--json", *options], env=env, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - started
    if done.returncode:
        raise SystemExit(f"`flowcore analyze` failed (status {done.returncode}):\n{done.stderr}")
    return seconds, done.stdout, done.stderr


def main(argv: list[str] | None = None) -> dict[str, list[float]]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)

    times: dict[str, list[float]] = {"cold": [], "cached": []}
    reports, problems = set(), []
    with tempfile.TemporaryDirectory(prefix="flowcore-first-run-") as folder:
        # 1. The checkpoint.
        checkpoint = Path(folder) / "text-encoder.safetensors"
        save_text_encoder_checkpoint(sd15_size_text_model(), checkpoint)
        print(f"torch {torch.__version__}, {os.cpu_count()} CPUs; SD 1.5-size CLIP text encoder (random, fp16 file)")
        load_before = os.getloadavg()[0]

        # 2. One run that is not counted (`--mode markers`: no calibration), so that the first timed run does not
        #    also pay for reading the libraries and the checkpoint into the disk cache; then cold, cached, ...
        analyze(checkpoint, Path(folder) / "warm-up", "--mode", "markers")
        for repeat in range(args.repeats):
            cache = Path(folder) / f"cache-{repeat}"
            for which in ("cold", "cached"):
                seconds, report, err = analyze(checkpoint, cache)
                times[which].append(seconds)
                reports.add(report)
                if (CALIBRATING in err) != (which == "cold"):
                    problems.append(f"the {which} run {'did not say' if which == 'cold' else 'said'} it calibrates")

    # 3. The table.
    cold, cached = (statistics.median(times[which]) for which in ("cold", "cached"))
    ratio = statistics.median(c / w for c, w in zip(times["cold"], times["cached"]))
    print(f"{'run':<31} {'median s':>9}  runs (s)")
    for which, label in (("cold", "cold (empty cache, calibrates)"), ("cached", "cached")):
        runs = ", ".join(f"{s:.1f}" for s in times[which])
        print(f"{label:<31} {statistics.median(times[which]):>9.1f}  {runs}")
    print(f"{'calibration (cold - cached)':<31} {cold - cached:>9.1f}")
    print(f"{'cold / cached':<31} {ratio:>8.2f}x  (budget {BUDGET:.0f}x, median of per-repeat ratios)")
    print(f"{'median cold / median cached':<31} {cold / cached:>8.2f}x")
    if len(reports) != 1:
        problems.append(f"the reports differ: {len(reports)} different ones in {2 * args.repeats} runs")
    print(f"reports: {'identical' if len(reports) == 1 else 'DIFFERENT'} in all {2 * args.repeats} runs")
    print(f"load average (1 min, other processes included): {load_before:.1f} before, {os.getloadavg()[0]:.1f} after")
    if problems:
        raise SystemExit("; ".join(problems))
    return times


if __name__ == "__main__":
    main()
