"""Stand-in for ``modules/errors.py``: the WebUI logs exceptions from script hooks and carries on.

Every report is recorded in ``reported`` so tests can assert that nothing failed silently."""

from __future__ import annotations

import sys
import traceback

reported: list[tuple[str, BaseException | None]] = []


def report(message, *, exc_info=False):
    exc = sys.exc_info()[1] if exc_info else None
    reported.append((message, exc))
    print("*** " + message, file=sys.stderr)
    if exc is not None:
        traceback.print_exc(file=sys.stderr)


def display(e, task, *, full_traceback=False):
    reported.append((f"{task}: {e}", e))
    print(f"{task or 'error'}: {type(e).__name__}: {e}", file=sys.stderr)


def print_error_explanation(message):
    print(message, file=sys.stderr)
