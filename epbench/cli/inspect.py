"""The commands that show what is installed: `backends`, `tasks` and `plugins`.

epbench backends [--detail]   each backend: framework versions, optional capabilities
                              (epbench.core.protocols.capabilities), with --detail the
                              `ModelSpec` fields it declares (model_fields)
epbench tasks                 task files, their cells (`task[axis=value]`) and presets
epbench plugins [--json]      each registered plugin and the hooks it implements
"""

from __future__ import annotations

import json
from typing import Any

import click
from tabulate import tabulate

from epbench.cli.options import registry_of
from epbench.config.tasks import preset_names, read_task_file, variant_names
from epbench.core.protocols import capabilities
from epbench.plugins.manager import plugin_hooks


@click.command()
@click.option("--detail", is_flag=True, help="also the ModelSpec fields each backend declares")
@click.pass_context
def backends(ctx: click.Context, detail: bool) -> int:
    """List the installed backends: framework versions and optional capabilities.

    Prints one table row per backend (with --detail, its `model_fields` too); returns 0."""
    rows = []
    for name, backend in registry_of(ctx).get_backends().items():
        versions = ", ".join(f"{key} {value}" for key, value in backend.versions().items())
        row = [name, versions, ", ".join(capabilities(backend)) or "-", type(backend).__module__]
        if detail:
            row.append(", ".join(sorted(backend.model_fields)))
        rows.append(row)
    headers = ["backend", "versions", "capabilities", "module"]
    if detail:
        headers.append("model fields")
    print(
        tabulate(rows, headers=headers, tablefmt="github", maxcolwidths=60)
        if rows
        else "no backends installed (pip install backends/epbench-torch)"
    )
    return 0


def _cells(name: str, raw: dict[str, Any], where: str) -> str:
    """The cells of task `name` (its variants as `name[axis=value,…]`), comma-separated."""
    names = []
    for variant in variant_names(raw, where):
        axes = ",".join(f"{axis}={value}" for axis, value in variant)
        names.append(f"{name}[{axes}]" if variant else name)
    return ", ".join(names)


@click.command()
@click.pass_context
def tasks(ctx: click.Context) -> int:
    """List the task files, their cells and presets.

    Prints one table row per registered task; returns 0."""
    rows = []
    for name, path in registry_of(ctx).get_task_paths().items():
        raw = read_task_file(path)
        cells = _cells(name, raw, str(path))
        rows.append([name, cells, ", ".join(preset_names(raw)), raw.get("description", "")])
    print(
        tabulate(
            rows,
            headers=["task", "cells", "presets", "description"],
            tablefmt="github",
            maxcolwidths=[None, 50, None, 60],
        )
    )
    return 0


@click.command()
@click.option("--json", "as_json", is_flag=True, help="print JSON instead of a table")
@click.pass_context
def plugins(ctx: click.Context, as_json: bool) -> int:
    """List the registered plugins and the hooks each implements.

    Prints a table (or, with --json, a JSON list of {name, module, hooks}); returns 0."""
    found = plugin_hooks(registry_of(ctx).pm)
    if as_json:
        print(json.dumps(found, indent=2))
        return 0
    rows = [[p["name"], p["module"], ", ".join(p["hooks"]) or "-"] for p in found]
    print(tabulate(rows, headers=["plugin", "module", "hooks"], tablefmt="github"))
    return 0
