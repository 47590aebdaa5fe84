"""Views of `rtrl` records (epbench.measurements.rtrl, docs/theory.md §6.3): RTRL, BPTT and EP
on the same batch — steady time, memory, and how far RTRL is from Σ_t ∇BPTT.

What comes in: records whose `timings.methods[method]` (method `rtrl`, `bptt`, `ep`) holds
`steady_seconds` and `memory_bytes`, and whose `metrics.rtrl.max_rel_diff` is the largest
relative difference of RTRL's gradient. What goes out: text.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from tabulate import tabulate

from epbench.core.record import Record, metrics_of
from epbench.views.format import AnyRecord, heading, records_in

METHODS = ("rtrl", "bptt", "ep")  # the columns, in the measurement's order


def method_timings(record: Record, method: str) -> Mapping[str, Any]:
    """`timings.methods[method]` of an rtrl record (empty when it has none)."""
    methods = record.timings.get("methods")
    block = methods.get(method) if isinstance(methods, Mapping) else None
    return block if isinstance(block, Mapping) else {}


def _row(r: Record) -> list[Any]:
    row = [r.cell, r.backend, r.dtype, r.status]
    for method in METHODS:
        t = method_timings(r, method)
        seconds, memory = t.get("steady_seconds"), t.get("memory_bytes")
        row.append("—" if seconds is None else f"{seconds * 1e3:.2f}")
        row.append("—" if memory is None else f"{memory / 2**20:.1f}")
    diff = metrics_of(r, "rtrl").get("max_rel_diff")
    return [*row, "—" if diff is None else f"{diff:.1e}"]


def rtrl_table(records: Iterable[AnyRecord]) -> str:
    """One row per `rtrl` record (others are left out): steady milliseconds and MiB of RTRL,
    BPTT and EP, and the largest relative difference RTRL − Σ_t ∇BPTT."""
    rows = [_row(r) for r in records_in(records) if r.measurement == "rtrl"]
    headers = ["cell", "backend", "dtype", "status"]
    for method in METHODS:
        headers += [f"{method} ms", f"{method} MiB"]
    return tabulate(rows, headers=[*headers, "RTRL vs BPTT"], tablefmt="github")


def format_rtrl(record: AnyRecord) -> str:
    """The heading of one rtrl record and its row of `rtrl_table` (or the heading and reason)."""
    r = records_in([record])[0]
    head = heading(r)
    if r.status not in ("ok", "failed") or not r.timings:
        return f"{head}: {r.reason}"
    table = rtrl_table([r])
    return f"{head}\n{table}" + (f"\n{r.reason}" if r.reason else "")
