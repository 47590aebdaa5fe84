"""Entry point (`[project.entry-points.epbench] torch`): registers the torch backend."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import epbench

from .backend import TorchBackend


@epbench.hookimpl
def epbench_register_backends(register: Callable[[Any], None]) -> None:
    register(TorchBackend())
