"""`python -m epbench …` runs the command line (`epbench.cli.main`)."""

import sys

from epbench.cli import main

sys.exit(main())
