"""Moved to `flowcore.prompts.language`: this old path stays importable, as the same module."""

import sys

from flowcore.prompts import language

sys.modules[__name__] = language
