"""Moved to `flowcore.patching.interventions`: this old path stays importable, as the same module."""

import sys

from flowcore.patching import interventions

sys.modules[__name__] = interventions
