"""Views of `gradient-flow` records (epbench.measurements.gradient_flow, docs/theory.md §6.4): the
spectral radius ρ of the free dynamics at s_T, the decay rate of BPTT's state gradients and of
EP's neuron traces per step back in time, and whether the free phase converged at all.

What comes in: records whose `metrics` hold `converged`, `why`, `residual`, `rho`, `bptt_rate`,
`rate_error`, `ep_rate` and `gdu_error`. What goes out: text.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from tabulate import tabulate

from epbench.core.record import Record
from epbench.views.format import AnyRecord, heading, reason, records_in
from epbench.views.pivot import format_value

HEADERS = [
    "cell", "backend", "dtype", "seed", "status", "converged", "residual", "ρ",
    "BPTT rate", "|rate − ρ| / ρ", "EP rate", "GDU error", "why / reason",
]  # fmt: skip


def _row(r: Record) -> list[Any]:
    m = r.metrics
    converged = "—" if "converged" not in m else ("yes" if m["converged"] else "no")
    values = [m.get(k) for k in ("residual", "rho", "bptt_rate", "rate_error", "ep_rate")]
    why = m.get("why") or reason(r, 60)
    return [
        r.cell, r.backend, r.dtype, r.seed, r.status, converged,
        *(format_value(v) for v in values), format_value(m.get("gdu_error")), why[:60],
    ]  # fmt: skip


def gradient_flow_table(records: Iterable[AnyRecord]) -> str:
    """One row per gradient-flow record: convergence, ρ, the fitted BPTT decay rate and its
    relative distance to ρ, EP's rate, the GDU error (— where not applicable) and why a free phase
    did not converge."""
    rows = [_row(r) for r in records_in(records)]
    return tabulate(rows, headers=HEADERS, tablefmt="github")


def format_gradient_flow(record: AnyRecord) -> str:
    """Heading and the one-line finding of one gradient-flow record (or its reason)."""
    r = records_in([record])[0]
    head = heading(r)
    if r.status != "ok":
        return f"{head}: {r.reason}"
    m = r.metrics
    if not m.get("converged"):
        return f"{head}: not convergent ({m.get('why')}); ρ at s_T = {format_value(m.get('rho'))}"
    return (
        f"{head}: ρ = {format_value(m.get('rho'))}, ‖∇BPTT_s(t)‖ decays at "
        f"{format_value(m.get('bptt_rate'))} per step (|rate − ρ| / ρ = "
        f"{format_value(m.get('rate_error'))}), EP traces at {format_value(m.get('ep_rate'))}"
    )
