"""`python -m flowcore ...` runs the `flowcore` command (see `flowcore.cli`)."""

import sys

from flowcore.cli import main

sys.exit(main())
