"""Moved to `flowcore.detection.representative`: this old path stays importable, as the same module."""

import sys

from flowcore.detection import representative

sys.modules[__name__] = representative
