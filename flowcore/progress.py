"""Moved to `flowcore.detection.progress`: this old path stays importable, as the same module."""

import sys

from flowcore.detection import progress

sys.modules[__name__] = progress
