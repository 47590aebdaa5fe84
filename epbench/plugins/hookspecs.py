"""The hook specifications. A plugin implements any of them with `@epbench.hookimpl`.

Built-in backends and tasks are registered through these same hooks (entry-point group `epbench`),
so the plugin path is exercised by every run.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pluggy

hookspec = pluggy.HookspecMarker("epbench")
hookimpl = pluggy.HookimplMarker("epbench")


@hookspec
def epbench_register_backends(register: Callable[[Any], None]) -> None:
    """Call `register(backend)` for each `epbench.core.protocols.Backend` this plugin offers."""


@hookspec
def epbench_register_tasks(register: Callable[[Any], None]) -> None:
    """Call `register(path)` for each task file (TOML, `pathlib.Path`) this plugin ships."""


@hookspec
def epbench_register_measurements(register: Callable[[Any], None]) -> None:
    """Call `register(measurement)` for each `epbench.core.measurement.Measurement` this plugin
    offers; a task's `measure` list names them."""


@hookspec
def epbench_register_commands(cli: Any) -> None:
    """Add commands to the `epbench` command line: `cli` is its `click.Group`
    (`@cli.command()` / `cli.add_command(...)`)."""
