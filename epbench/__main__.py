"""`python -m epbench …` runs the command line."""

import sys

from epbench.cli.commands import main

sys.exit(main())
