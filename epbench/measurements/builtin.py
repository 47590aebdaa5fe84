"""Registers the suite's own measurements, exactly as a plugin would."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from epbench.plugins.hookspecs import hookimpl


@hookimpl
def epbench_register_measurements(register: Callable[[Any], None]) -> None:
    for measurement in ():
        register(measurement)
