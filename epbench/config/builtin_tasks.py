"""Registers the standard task files, like any plugin would.

They live in `tasks/` at the top of a checkout and are packaged as `epbench/_tasks` in the wheel.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from epbench.plugins.hookspecs import hookimpl


def task_folder() -> Path:
    """The folder of the standard task files, installed or in a checkout."""
    packaged = Path(__file__).resolve().parent.parent / "_tasks"
    return packaged if packaged.is_dir() else Path(__file__).resolve().parents[2] / "tasks"


@hookimpl
def epbench_register_tasks(register: Callable[[Path], None]) -> None:
    for path in sorted(task_folder().glob("*.toml")):
        register(path)
