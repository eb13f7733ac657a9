"""Moved to `flowcore.models.pipelines`: this old path stays importable, as the same module."""

import sys

from flowcore.models import pipelines

sys.modules[__name__] = pipelines
