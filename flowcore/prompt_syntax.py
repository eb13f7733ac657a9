"""Moved to `flowcore.prompts.prompt_syntax`: this old path stays importable, as the same module."""

import sys

from flowcore.prompts import prompt_syntax

sys.modules[__name__] = prompt_syntax
