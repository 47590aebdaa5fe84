"""epbench-numpy-example: the example third-party backend of epbench (pure numpy, P setting).

epbench finds this package through the entry point in its pyproject.toml,

    [project.entry-points.epbench]
    numpy-example = "epbench_numpy_example"

loads it as a pluggy plugin, and calls the one hook below.
"""

from __future__ import annotations

from collections.abc import Callable

import epbench

from .network import NumpyBackend, NumpyNetwork

__all__ = ["NumpyBackend", "NumpyNetwork", "epbench_register_backends"]


@epbench.hookimpl
def epbench_register_backends(register: Callable[[object], None]) -> None:
    """Offer one backend, named "numpy-example"."""
    register(NumpyBackend())
