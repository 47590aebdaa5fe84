"""Views of `convergence` records (epbench.measurements.convergence, docs/theory.md §6.4): the GDU
error of EP against BPTT as the free phase gets longer, beside the residual and the distance to
the fixed point.

What comes in: records whose `metrics` hold the grid `T`, the `K` used per T and per T the lists
`residual`, `distance`, `error`, `min_cosine` and `update_cosine`. What goes out: text, one row
per T.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from tabulate import tabulate

from epbench.core.record import Record
from epbench.views.format import AnyRecord, heading, reason, records_in
from epbench.views.pivot import format_value

COLUMNS = ("residual", "distance", "error", "min_cosine", "update_cosine")
HEADERS = [
    "cell", "backend", "dtype", "seed", "T", "K", "residual", "‖s_T − s_ref‖",
    "rel. error", "min cosine", "update cosine",
]  # fmt: skip


def _rows(r: Record) -> list[list[Any]]:
    """One row per T of one record; one row with the status and reason when it has none."""
    m = r.metrics
    if r.status != "ok" or not m.get("T"):
        return [[r.cell, r.backend, r.dtype, r.seed, r.status, reason(r, 60)]]
    return [
        [r.cell, r.backend, r.dtype, r.seed, T, m["K"][i]]
        + [format_value(m[key][i]) for key in COLUMNS]
        for i, T in enumerate(m["T"])
    ]


def convergence_table(records: Iterable[AnyRecord]) -> str:
    """One row per free-phase length T of every convergence record (module doc)."""
    rows = [row for r in records_in(records) for row in _rows(r)]
    return tabulate(rows, headers=HEADERS, tablefmt="github")


def format_convergence(record: AnyRecord) -> str:
    """Heading and the per-T rows of one convergence record (or its heading and reason)."""
    r = records_in([record])[0]
    head = heading(r)
    if r.status != "ok":
        return f"{head}: {r.reason}"
    rows = [row[4:] for row in _rows(r)]
    table = tabulate(rows, headers=HEADERS[4:], tablefmt="github")
    return (
        f"{head}\n{table}\nrel. error = ‖ΔEP + ∇BPTT‖ / ‖∇BPTT‖ over all parameters and steps; "
        f"s_ref after {r.metrics.get('reference_T')} steps"
    )
