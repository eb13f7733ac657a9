"""What a front end shows while an encoder is calibrated, the one slow step of a first run.

The core only reports a calibration's progress, `(prompts done, prompts in all)`, to the callable given as
`FlowPatcher(calibration_progress=...)`: `(0, total)` before the first prompt is encoded, then after each
batch, `(total, total)` last. These are the front ends' listeners:
- `CalibrationBar`: the command line's (`flowcore analyze`, `compare`, the demo): one line saying what happens
  and a progress bar, on stderr;
- `CalibrationLog`: the hosts' (WebUI, ComfyUI): one info line when a calibration starts, one with its time
  when it is done.
Nothing is shown when the calibration is read from the disk cache.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import TextIO

from flowcore.detection.calibration import cache_dir


class CalibrationBar:
    """A calibration on a terminal: one line, then a tqdm progress bar of the prompts, on `stream` (stderr)."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stderr
        self._bar = None

    def __call__(self, done: int, total: int) -> None:
        from tqdm.auto import tqdm

        if done == 0:
            print(
                f"Calibrating this text encoder once on {total} neutral prompts (cached in {cache_dir()}; later "
                "runs skip this)...",
                file=self.stream,
                flush=True,
            )
            self._bar = tqdm(total=total, unit="prompt", file=self.stream)
            return
        if self._bar is not None:
            self._bar.update(done - self._bar.n)
            if done >= total:
                self._bar.close()
                self._bar = None


class CalibrationLog:
    """A calibration in a host's log: one info line when it starts, one with its time when it is done, each
    starting with `prefix` (the host's tag, such as "[Follow the Flow]")."""

    def __init__(self, logger: logging.Logger, prefix: str, name: str = "the text encoder") -> None:
        self.logger = logger
        self.prefix = prefix
        self.name = name
        self._started = 0.0

    def __call__(self, done: int, total: int) -> None:
        if done == 0:
            self._started = time.perf_counter()
            self.logger.info(
                "%s Calibrating %s once on %d neutral prompts (cached in %s afterwards).",
                self.prefix,
                self.name,
                total,
                cache_dir(),
            )
        elif done >= total:
            self.logger.info("%s Calibrated %s in %.1f s.", self.prefix, self.name, time.perf_counter() - self._started)
