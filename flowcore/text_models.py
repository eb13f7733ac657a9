"""Moved to `flowcore.models.text_models`: this old path stays importable, as the same module."""

import sys

from flowcore.models import text_models

sys.modules[__name__] = text_models
