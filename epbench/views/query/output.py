"""Query results → text: a table (the default), CSV, JSON (a list of objects) or Markdown.

What comes in: column names and rows (`epbench.views.query.tables.run_query`). What goes out:
one string, ending in a newline.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Sequence
from datetime import datetime
from typing import Any

FORMATS = ("table", "csv", "json", "markdown")


def _plain(value: Any) -> Any:
    """A JSON-ready value: datetimes in ISO 8601, non-finite floats as None, DuckDB JSON text
    parsed back."""
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    return value


def render(names: Sequence[str], rows: Sequence[Sequence[Any]], *, fmt: str = "table") -> str:
    """The rows in `fmt` (one of FORMATS)."""
    if fmt == "csv":
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(names)
        writer.writerows(rows)
        return buffer.getvalue()
    if fmt == "json":
        objects = [dict(zip(names, map(_plain, row), strict=True)) for row in rows]
        return json.dumps(objects, indent=2, ensure_ascii=False) + "\n"
    from tabulate import tabulate

    style = "github" if fmt == "markdown" else "simple"
    shown = [["—" if v is None else v for v in row] for row in rows]
    return tabulate(shown, headers=list(names), tablefmt=style, disable_numparse=False) + "\n"
