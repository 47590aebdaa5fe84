"""Records → flat rows: one row per record, one column per common field, named metric and timing,
and the whole record as JSON for the rest (what `epbench query`, `epbench.records()` and
`epbench export` share).

What comes in: `Record`s (`epbench.core.record.load_records`). What goes out: `Rows`, plain Python
(no DataFrame library here): the column names and their types in a fixed order (`COLUMNS`, then
one column per variant axis, per speed and per training algorithm found), and per record a tuple
of values (None where a record has no such value). The per-name GDU numbers come as rows of their
own (`gdu_rows`), one per record and canonical name. The named metrics are those of
`epbench table --pivot --metric` (`epbench.views.pivot.METRICS`), so both give the same numbers.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from epbench.core.errors import EpbenchError
from epbench.core.params import layer_of
from epbench.core.record import Record, metrics_of
from epbench.views.format import VIEW_ERRORS
from epbench.views.gdu import per_name
from epbench.views.pivot import METRICS

# Column types: "str", "int", "float", "bool", "time" (a UTC timestamp), "json" (the record).
Column = tuple[str, str]


def _env(key: str) -> Callable[[Record], Any]:
    return lambda r: r.environment.get(key)


def _timing(key: str) -> Callable[[Record], Any]:
    return lambda r: r.timings.get(key)


def _started(record: Record) -> datetime | None:
    """The record's `started` stamp (`2026-12-03T12:55:39Z`) as an aware datetime, or None."""
    try:
        return datetime.strptime(record.started or "", "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    except ValueError:
        return None


# The common fields: (column, type, value of a record).
FIELDS: tuple[tuple[str, str, Callable[[Record], Any]], ...] = (
    ("file", "str", lambda r: r.file),
    ("line", "int", lambda r: r.line),
    ("status", "str", lambda r: r.status),
    ("reason", "str", lambda r: r.reason),
    ("task", "str", lambda r: r.task),
    ("cell", "str", lambda r: r.cell),
    ("preset", "str", lambda r: r.preset),
    ("measurement", "str", lambda r: r.measurement),
    ("backend", "str", lambda r: r.backend),
    ("reference", "str", lambda r: r.reference),
    ("device", "str", lambda r: r.device),
    ("dtype", "str", lambda r: r.dtype),
    ("estimator", "str", lambda r: r.estimator),
    ("depth", "int", lambda r: r.depth),
    ("angle", "float", lambda r: r.angle),
    ("beta", "float", lambda r: r.beta_used),
    ("seed", "int", lambda r: r.seed),
    ("attempts", "int", lambda r: r.attempts),
    ("config_hash", "str", lambda r: r.config_hash),
    ("started", "time", _started),
    ("commit", "str", _env("commit")),
    ("dirty", "bool", _env("dirty")),
    ("machine", "str", _env("machine")),
    ("host", "str", _env("host")),
    ("python", "str", _env("python")),
    ("epbench", "str", _env("epbench")),
    ("executor", "str", _env("executor")),
    ("steady_seconds", "float", _timing("steady_seconds")),
    ("first_seconds", "float", _timing("first_seconds")),
    ("peak_memory_bytes", "float", lambda r: r.peak_memory_bytes),
    ("parity_max", "float", lambda r: metrics_of(r, "parity").get("max")),
)
# Per algorithm of a speed or training record: (payload key, column suffix).
PER_ALGORITHM = {
    "speed": (("step_seconds", "step_seconds"), ("samples_per_s", "samples_per_s")),
    "train": (("samples_per_s", "samples_per_s"), ("epochs_done", "epochs")),
}
GDU_COLUMNS: tuple[Column, ...] = (
    ("id", "int"),
    ("name", "str"),
    ("layer", "int"),
    ("rmse", "float"),
    ("rmse_std", "float"),
    ("cosine", "float"),
    ("sign", "float"),
    ("rel_error", "float"),
)


@dataclass(frozen=True, kw_only=True)
class Rows:
    """A table: its columns `(name, type)` and its rows (tuples in column order)."""

    columns: tuple[Column, ...]
    rows: tuple[tuple[Any, ...], ...]

    @property
    def names(self) -> list[str]:
        return [name for name, _ in self.columns]


def column_name(text: str) -> str:
    """A SQL-friendly column name: `dynamics.estimator` → `dynamics_estimator`."""
    return re.sub(r"\W+", "_", text).strip("_").lower() or "_"


def _number(value: Any, kind: str) -> Any:
    """`value` when it is of the column's kind (ints and floats for a float column), else None:
    a malformed payload gives an empty entry, never a wrong type."""
    if value is None:
        return None
    if kind == "bool":
        return value if isinstance(value, bool) else None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return value if kind in ("str", "time") and not isinstance(value, bool) else None
    return float(value) if kind == "float" else int(value) if kind == "int" else None


def _safe(get: Callable[[Record], Any], record: Record) -> Any:
    try:
        return get(record)
    except VIEW_ERRORS:
        return None


def _algorithms(records: Sequence[Record]) -> list[tuple[str, str, str, str]]:
    """(measurement, algorithm, payload key, column) of every per-algorithm number found."""
    found: dict[tuple[str, str, str, str], None] = {}
    for record in records:
        for section, keys in PER_ALGORITHM.items():
            payload = metrics_of(record, section) if record.measurement == section else {}
            for algorithm, numbers in payload.items():
                if isinstance(numbers, Mapping):
                    for key, suffix in keys:
                        found[(section, algorithm, key, f"{section}_{algorithm}_{suffix}")] = None
    return list(found)


def record_rows(records: Iterable[Record]) -> Rows:
    """One row per record (module doc): `id` (0-based, in file then line order), the common
    fields, the variant axes (`variant_<axis>`, as text), the named metrics, the per-algorithm
    numbers of speed and training records, and `record`: the record's JSON."""
    records = list(records)
    axes = list(dict.fromkeys(axis for r in records for axis in r.variant))
    per_algorithm = _algorithms(records)
    columns: list[Column] = [("id", "int"), *((name, kind) for name, kind, _ in FIELDS)]
    columns += [(f"variant_{column_name(axis)}", "str") for axis in axes]
    columns += [(name, "float") for name in METRICS]
    columns += [(column, "float") for *_, column in per_algorithm]
    columns.append(("record", "json"))
    rows = []
    for i, r in enumerate(records):
        row: list[Any] = [i, *(_number(_safe(get, r), kind) for _, kind, get in FIELDS)]
        row += [None if r.variant.get(a) is None else str(r.variant[a]) for a in axes]
        row += [_number(_safe(get, r), "float") for _, get in METRICS.values()]
        row += [
            _number(metrics_of(r, s).get(alg, {}).get(key), "float")
            if r.measurement == s and isinstance(metrics_of(r, s).get(alg), Mapping)
            else None
            for s, alg, key, _ in per_algorithm
        ]
        row.append(json.dumps(r.to_dict(), sort_keys=True, allow_nan=True))
        rows.append(tuple(row))
    return Rows(columns=tuple(columns), rows=tuple(rows))


def _layer(name: str) -> int | None:
    try:
        return layer_of(name)
    except EpbenchError:  # not a canonical name
        return None


def gdu_rows(records: Iterable[Record]) -> Rows:
    """One row per GDU record and canonical name (`id` joins `record_rows`' `id`): its layer and
    numbers (docs/theory.md §4: RMSE, cosine and sign of the totals, relative error)."""
    rows = []
    for i, record in enumerate(records):
        if record.measurement != "gdu":
            continue
        for name, numbers in per_name(record).items():
            if not isinstance(numbers, Mapping):
                continue
            values = [_number(numbers.get(key), kind) for key, kind in GDU_COLUMNS[3:]]
            rows.append((i, name, _layer(name), *values))
    return Rows(columns=GDU_COLUMNS, rows=tuple(rows))
