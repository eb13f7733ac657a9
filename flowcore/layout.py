"""Moved to `flowcore.encoders.layout`: this old path stays importable, as the same module."""

import sys

from flowcore.encoders import layout

sys.modules[__name__] = layout
