"""epbench: Equilibrium Propagation against BPTT in convergent RNNs with static input.

`epbench.records(paths)` gives the records of result files and folders as a pandas DataFrame
(epbench.views.frame); it is imported on first use, so `import epbench` stays light.
"""

import importlib
from typing import Any

from epbench.core.version import __version__
from epbench.plugins.hookspecs import hookimpl

__all__ = ["__version__", "hookimpl", "records"]


def __getattr__(name: str) -> Any:
    """`epbench.records`, imported lazily (pandas and pyarrow load only when it is called)."""
    if name == "records":
        # imported by name at first use: the backends import `epbench` (for `hookimpl`) and
        # must not depend on the views (lint-imports), which they never call
        return importlib.import_module("epbench.views.frame").records
    raise AttributeError(f"module 'epbench' has no attribute {name!r}")
