"""`python -m flowcore ...` runs the `flowcore` command (see `flowcore.frontends.cli`)."""

import sys

from flowcore.frontends.cli import main

sys.exit(main())
