"""Views of `beta-sweep` records (epbench.measurements.beta_sweep, docs/theory.md §2): how EP's
error against BPTT shrinks with |β|, per estimator.

What comes in: records whose `metrics` hold `residual`, `betas` (the |β| grid) and per
estimator the lists `error[estimator]` (one entry per β) and the log-log `slope[estimator]`.
What goes out: text.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from tabulate import tabulate

from epbench.core.record import Record, metrics_of
from epbench.views.format import AnyRecord, heading, reason, records_in
from epbench.views.pivot import format_value

ESTIMATORS = ("positive", "negative", "symmetric", "holomorphic")  # holomorphic: `holomorphic-N`


def _key(record: Record, estimator: str) -> str:
    """The record's key of a column: `holomorphic-N` for the holomorphic column, else itself."""
    if estimator != "holomorphic":
        return estimator
    return next((k for k in sweep_errors(record) if k.startswith("holomorphic-")), estimator)


def sweep_errors(record: Record) -> Mapping[str, list[float]]:
    """`metrics.error`: estimator → the error at each |β| of the grid."""
    return metrics_of(record, "error")


def sweep_slopes(record: Record) -> Mapping[str, float | None]:
    """`metrics.slope`: estimator → the fitted log-log slope (None where it could not be fit)."""
    return metrics_of(record, "slope")


def _row(r: Record) -> list[Any]:
    betas = r.metrics.get("betas") or []
    row = [r.cell, r.backend, r.dtype, r.seed, r.status, format_value(r.metrics.get("residual"))]
    row.append(f"{betas[0]:g} … {betas[-1]:g} ({len(betas)})" if betas else "—")
    for e in ESTIMATORS:
        errors = sweep_errors(r).get(_key(r, e)) or []
        slope = sweep_slopes(r).get(_key(r, e))
        points = f" (N = {_key(r, e)[12:]})" if _key(r, e).startswith("holomorphic-") else ""
        row.append("—" if slope is None else f"{slope:.3f}{points}")
        row.append(f"{errors[0]:.2e} / {errors[-1]:.2e}" if errors else "—")
    return [*row, reason(r, 50)]


def sweep_table(records: Iterable[AnyRecord]) -> str:
    """One row per beta-sweep record: residual, β range, per estimator the log-log slope of the
    error (expected 1 one-sided, 2 symmetric, N holomorphic with N points: the column names its
    N per row) and the error at the smallest and largest β."""
    headers = ["cell", "backend", "dtype", "seed", "status", "residual", "|β| grid"]
    for e in ESTIMATORS:
        headers += [f"slope {e}", f"error {e} (min β / max β)"]
    rows = [_row(r) for r in records_in(records)]
    return tabulate(rows, headers=[*headers, "reason"], tablefmt="github")


def format_sweep(record: AnyRecord) -> str:
    """Heading and per-β errors of one beta-sweep record (or its heading and reason)."""
    r = records_in([record])[0]
    head = heading(r)
    if r.status != "ok":
        return f"{head}: {r.reason}"
    errors, slopes = sweep_errors(r), sweep_slopes(r)
    estimators = list(errors)
    rows = [
        [f"{beta:g}", *(f"{errors[e][i]:.3e}" for e in estimators)]
        for i, beta in enumerate(r.metrics["betas"])
    ]
    rows.append(["slope", *(format_value(slopes[e]) for e in estimators)])
    table = tabulate(rows, headers=["|β|", *estimators], tablefmt="github")
    return (
        f"{head}\n{table}\nerror = ‖ΔEP + ∇BPTT‖ / ‖∇BPTT‖ over all parameters and steps; "
        f"residual ‖s_T − s_(T−1)‖ = {r.metrics['residual']:.2e}"
    )
