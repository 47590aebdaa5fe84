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
    """Call `register(backend)` for each `epbench.protocols.Backend` this plugin offers."""


@hookspec
def epbench_register_tasks(register: Callable[[Any], None]) -> None:
    """Call `register(path)` for each task file (TOML, `pathlib.Path`) this plugin ships."""
