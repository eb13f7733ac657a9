"""Main job: `flowcore compare` on the paper's zebra/crosswalk prompt with Stable Diffusion 1.5.

    python3 tools/dev.py demo                                  # SD 1.5 from the local Hugging Face cache
    python3 tools/dev.py demo --model path/to/v1-5.safetensors # a WebUI checkpoint instead
    python3 tools/dev.py demo --device cuda --steps 30         # any other `flowcore compare` option

Writes `flowcore-out/<prompt>/compare.png` (original and patched image, same seed) and `report.html`.
Nothing is downloaded: where SD 1.5 is not in the cache, this says how to get it and exits with status 1.
"""

from __future__ import annotations

import sys

from flowcore.cli import main

PROMPT = "a crosswalk next to a bus station with a standing zebra"

if __name__ == "__main__":
    sys.exit(main(["compare", PROMPT, *sys.argv[1:]]))
