"""A measurement plugin in one file: `residual-curve`, the free phase's residual
‖s_t − s_(t−1)‖ at t = T/8, T/4, T/2 and T on the cell's mini-batch, from the canonical initial
weights. It registers through the `epbench_register_measurements` hook; no core file changes."""

from __future__ import annotations

from typing import Any

import numpy as np
from tabulate import tabulate

import epbench
from epbench.core.measurement import MeasurementFunctions
from epbench.core.params import init_params


def run(cell: Any, backend: Any, batch: tuple, output: Any) -> dict[str, Any]:
    spec = cell.spec
    net = backend.build(spec.model, dtype=cell.dtype, device=cell.device)
    params = net.load(init_params(spec.model, seed=cell.seed, dtype=cell.dtype))
    x = np.asarray(batch[0], dtype=cell.dtype)
    state, done, curve = None, 0, {}
    for t in sorted({max(1, spec.dynamics.T // d) for d in (8, 4, 2, 1)}):
        state, residual = net.free_phase(params, x, steps=t - done, start=state)
        curve[str(t)], done = float(residual), t
    return {"metrics": {"residual_curve": curve}}


def format_record(record: dict[str, Any]) -> str:
    head = f"{record['cell']} · {record['backend']} · {record['status']}"
    if record["status"] != "ok":
        return f"{head}: {record['reason']}"
    curve = record["metrics"]["residual_curve"]
    return head + ": " + ", ".join(f"t={t}: {r:.2e}" for t, r in curve.items())


def table(records: list[dict[str, Any]]) -> str:
    rows = [
        [r["cell"], r["backend"], t, f"{value:.3e}"]
        for r in records
        if r["status"] == "ok"
        for t, value in r["metrics"]["residual_curve"].items()
    ]
    return tabulate(rows, headers=["cell", "backend", "step t", "residual"], tablefmt="github")


@epbench.hookimpl
def epbench_register_measurements(register: Any) -> None:
    register(
        MeasurementFunctions(
            name="residual-curve", inputs="batch", run=run, format=format_record, table=table
        )
    )
