"""The named queries that ship with the suite: one `.sql` file each in `epbench/views/query/sql/`,
its first line a comment (`-- what it shows`).

What comes in: nothing (the files are package data). What goes out: `{name: NamedQuery}`, sorted
by name (`epbench query --list`; `epbench query RESULTS… NAME` runs one).
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources


@dataclass(frozen=True, kw_only=True)
class NamedQuery:
    """A shipped query: its name (the file's stem), what it shows, its SQL."""

    name: str
    description: str
    sql: str


def named_queries() -> dict[str, NamedQuery]:
    """Every shipped query by name (module doc)."""
    folder = resources.files("epbench.views.query") / "sql"
    found = {}
    for entry in sorted(folder.iterdir(), key=lambda e: e.name):
        if not entry.name.endswith(".sql"):
            continue
        sql = entry.read_text(encoding="utf-8")
        first = sql.splitlines()[0] if sql.strip() else ""
        name = entry.name.removesuffix(".sql")
        found[name] = NamedQuery(name=name, description=first.lstrip("- ").strip(), sql=sql)
    return found
