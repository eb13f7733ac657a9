"""Moved to `flowcore.frontends.cli`: this old path stays importable, as the same module (the `flowcore` command
of an install made before the move starts here)."""

import sys

from flowcore.frontends import cli

sys.modules[__name__] = cli
