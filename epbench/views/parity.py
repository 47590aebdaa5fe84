"""Views of `parity` records (epbench.measurements.parity): two backends on the same cell.

What comes in: records with `reference` (the first backend), `backend` (the one compared) and
`metrics.parity.per_group[group]`, the largest relative difference per compared quantity.
What goes out: text.
"""

from __future__ import annotations

from collections.abc import Iterable

from tabulate import tabulate

from epbench.core.record import metrics_of
from epbench.views.format import AnyRecord, heading, num, reason, records_in

GROUPS = ("free states", "EP traces", "BPTT traces", "EP step", "BPTT step")


def parity_table(records: Iterable[AnyRecord]) -> str:
    """One row per compared pair: the largest relative difference per compared quantity, and
    the largest difference as a share of its tolerance (above 1: a failure)."""
    rows = []
    for r in records_in(records):
        per_group = metrics_of(r, "parity").get("per_group") or {}
        rows.append(
            [r.cell, r.dtype, f"{r.reference} ↔ {r.backend}"]
            + [num(per_group.get(g), ".1e") for g in GROUPS]
            + [num(metrics_of(r, "parity").get("worst_share"), ".2f"), r.status, reason(r, 50)]
        )
    headers = ["cell", "dtype", "backends", *GROUPS, "worst / tolerance", "status", "reason"]
    return tabulate(rows, headers=headers, tablefmt="github")


def format_parity(record: AnyRecord) -> str:
    """The heading of one parity record and its row of `parity_table`."""
    r = records_in([record])[0]
    return f"{heading(r)}\n{parity_table([r])}"
