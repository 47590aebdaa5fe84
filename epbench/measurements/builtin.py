"""Registers the suite's own measurements through the `epbench_register_measurements` hook,
exactly as a plugin would: each is a `MeasurementFunctions` (epbench.core.measurement) of its
module's `run`, the inputs it needs, and the views that show its records (`views.tables.BUILTIN`,
which `epbench table` also uses without loading any plugin)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from epbench.core.measurement import MeasurementFunctions
from epbench.measurements import (
    beta_sweep,
    convergence,
    gdu,
    gradient_flow,
    memory,
    parity,
    profile,
    rtrl,
    seed_speed,
    speed,
    train,
)
from epbench.plugins.hookspecs import hookimpl
from epbench.views.tables import BUILTIN as VIEWS

# name, inputs, run
_TABLE = (
    ("gdu", "batch", gdu.run),
    ("train", "training", train.run),
    ("speed", "batch", speed.run),
    ("memory", "none", memory.run),
    ("beta-sweep", "batch", beta_sweep.run),
    ("rtrl", "batch", rtrl.run),
    ("parity", "batch", parity.run),
    ("profile", "batch", profile.run),
    ("convergence", "batch", convergence.run),
    ("gradient-flow", "batch", gradient_flow.run),
    ("seed-speed", "batch", seed_speed.run),
)
# name → run_seeds of the measurements that measure a cell's seeds together (SeedBatchedMeasurement)
_SEEDS = {"train": train.run_seeds}
BUILTIN = tuple(
    MeasurementFunctions(
        name=name,
        inputs=inputs,
        run=run,
        format=VIEWS[name].format,
        table=VIEWS[name].table,
        run_seeds=_SEEDS.get(name),
    )
    for name, inputs, run in _TABLE
)


@hookimpl
def epbench_register_measurements(register: Callable[[Any], None]) -> None:
    for measurement in BUILTIN:
        register(measurement)
