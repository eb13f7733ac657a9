"""Moved to `flowcore.patching.joint`: this old path stays importable, as the same module."""

import sys

from flowcore.patching import joint

sys.modules[__name__] = joint
