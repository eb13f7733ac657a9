"""Moved to `flowcore.prompts.segmentation`: this old path stays importable, as the same module."""

import sys

from flowcore.prompts import segmentation

sys.modules[__name__] = segmentation
