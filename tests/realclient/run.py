"""The real-client suite: installs this checkout into a real host, runs the checks, prints one table.

    python3 tests/realclient/run.py --host a1111|forge|comfyui --host-dir DIR [--python PY] [--deps DIR]
        [--models LIST]

Standard library only: the checks that need torch run in the host's own Python. Exit status 0 when every row
passed or was not run (a check the suite has, left out for the reason in its row), 1 when one failed, 2 when none
failed but a host or family is not implemented yet (or an argument is wrong). The README's "Real-client checks"
says which host versions to check out.
"""

from __future__ import annotations

import argparse
import importlib
import shutil
import sys
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from host_common import Row, exit_status, say, table  # noqa: E402

FAMILIES = ("sd15", "sd2", "sdxl", "sd35", "flux-dev", "flux-schnell", "chroma", "lumina2", "qwen-image", "hidream")
HOSTS = {"a1111": "host_a1111", "forge": "host_forge", "comfyui": "host_comfyui"}


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="realclient", description=__doc__.splitlines()[0])
    parser.add_argument("--host", required=True, choices=sorted(HOSTS))
    parser.add_argument(
        "--host-dir", required=True, type=Path, metavar="DIR", help="your checkout of the host (see the README)"
    )
    parser.add_argument(
        "--python", metavar="PY", help="an existing Python of the host's environment (default: make one)"
    )
    parser.add_argument(
        "--deps", type=Path, metavar="DIR", help="the host's GitHub downloads, for a machine without GitHub"
    )
    parser.add_argument(
        "--models",
        metavar="LIST",
        help=f"comma-separated families, of {', '.join(FAMILIES)} (default: all the README claims for the host)",
    )
    args = parser.parse_args(argv)
    args.host_dir = args.host_dir.resolve()
    if not args.host_dir.is_dir():
        parser.error(f"--host-dir {args.host_dir} is not a folder")
    if args.python and not Path(args.python).exists():
        parser.error(f"--python {args.python} does not exist")
    if args.models:
        args.models = [name.strip() for name in args.models.split(",") if name.strip()]
        unknown = [name for name in args.models if name not in FAMILIES]
        if unknown:
            parser.error(f"--models {','.join(unknown)}: not a family (choose from {', '.join(FAMILIES)})")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    module = importlib.import_module(HOSTS[args.host])
    args.models = args.models or list(module.CLAIMED)
    out = args.host_dir / "realclient-out"
    out.mkdir(exist_ok=True)
    for cache in out.glob("flowcore-cache-*"):  # every run calibrates afresh: host and `flowcore analyze` apart
        shutil.rmtree(cache)
    say(f"{args.host} in {args.host_dir}, families {', '.join(args.models)}; logs and images in {out}")
    started = time.perf_counter()
    try:
        rows = module.check(args, out)
    except Exception as error:  # setup failed: one failed row that says where, and the traceback above it
        traceback.print_exc()
        rows = [Row(args.host, ",".join(args.models), "-", "setup", False, detail=f"{type(error).__name__}: {error}")]
    print(table(rows))
    print(f"\n{sum(bool(row.ok) for row in rows)} of {len(rows)} rows passed in {time.perf_counter() - started:.0f} s")
    return exit_status(rows)


if __name__ == "__main__":
    sys.exit(main())
