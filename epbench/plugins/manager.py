"""Plugin-manager factory: built-ins plus the distributions of the `epbench` entry-point group.

Knobs (environment):
    EPBENCH_LOAD_PLUGINS   comma-separated entry-point names to load; unset = all, "" = none.
    EPBENCH_BLOCK_PLUGINS  comma-separated entry-point names never to load.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Iterable
from importlib.metadata import entry_points
from typing import Any

import pluggy

from epbench.plugins import hookspecs

GROUP = "epbench"
# The suite's own plugins, registered exactly like third-party ones. Named here, imported by name
# (as llm loads its default plugins): this layer does not depend on the layers that hold them.
BUILTIN_PLUGINS = ("epbench.config.builtin_tasks", "epbench.measurements.builtin")


def _names(value: str | None) -> set[str] | None:
    if value is None:
        return None
    return {part.strip() for part in value.split(",") if part.strip()}


def make_plugin_manager(
    *,
    load_entry_points: bool = True,
    plugins: Iterable[object] = (),
    select: Iterable[str] | None = None,
    block: Iterable[str] = (),
) -> pluggy.PluginManager:
    """A fresh plugin manager with the built-in plugins (`BUILTIN_PLUGINS`), the given in-process
    `plugins`, and (unless
    `load_entry_points` is False) every installed `epbench` entry point that is selected and not
    blocked. Arguments win over the environment knobs."""
    pm = pluggy.PluginManager(GROUP)
    pm.add_hookspecs(hookspecs)
    for name in BUILTIN_PLUGINS:
        pm.register(importlib.import_module(name), name=name)
    for plugin in plugins:
        pm.register(plugin)
    if not load_entry_points:
        return pm
    wanted = set(select) if select is not None else _names(os.environ.get("EPBENCH_LOAD_PLUGINS"))
    blocked = set(block) | (_names(os.environ.get("EPBENCH_BLOCK_PLUGINS")) or set())
    for entry_point in entry_points(group=GROUP):
        if entry_point.name in blocked or (wanted is not None and entry_point.name not in wanted):
            continue
        if pm.get_plugin(entry_point.name) is not None:
            continue
        pm.register(entry_point.load(), name=entry_point.name)
    return pm


def plugin_hooks(pm: pluggy.PluginManager) -> list[dict[str, Any]]:
    """Each plugin registered with `pm`, in registration order: its name, the module it is (or
    the class of the object it is), and the names of the hooks it implements."""
    found = []
    for name, plugin in pm.list_name_plugin():
        callers = pm.get_hookcallers(plugin) or []
        kind = type(plugin)
        module = getattr(plugin, "__name__", None) or f"{kind.__module__}.{kind.__qualname__}"
        hooks = sorted(caller.name for caller in callers)
        found.append({"name": name, "module": module, "hooks": hooks})
    return found
