"""Registers the suite's own measurements through the `epbench_register_measurements` hook,
exactly as a plugin would: each is a `MeasurementFunctions` (epbench.core.measurement) of its
module's `run`, the inputs it needs, and the views that show its records."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from epbench.core.measurement import MeasurementFunctions
from epbench.measurements import (
    beta_sweep,
    gdu,
    memory,
    parity,
    profile,
    rtrl,
    speed,
    train,
)
from epbench.plugins.hookspecs import hookimpl
from epbench.views import gdu as gdu_views
from epbench.views import parity as parity_views
from epbench.views import profile as profile_views
from epbench.views import rtrl as rtrl_views
from epbench.views import speed_tables, sweep
from epbench.views import train as train_views

# name, inputs, run, format (one record), table (many records)
_TABLE = (
    ("gdu", "batch", gdu.run, gdu_views.format_gdu, gdu_views.gdu_table),
    ("train", "training", train.run, train_views.format_train, train_views.train_table),
    ("speed", "batch", speed.run, speed_tables.format_speed, speed_tables.speed_table),
    ("memory", "none", memory.run, speed_tables.format_memory, speed_tables.memory_table),
    ("beta-sweep", "batch", beta_sweep.run, sweep.format_sweep, sweep.sweep_table),
    ("rtrl", "batch", rtrl.run, rtrl_views.format_rtrl, rtrl_views.rtrl_table),
    ("parity", "batch", parity.run, parity_views.format_parity, parity_views.parity_table),
    ("profile", "batch", profile.run, profile_views.format_profile, profile_views.profile_table),
)
BUILTIN = tuple(
    MeasurementFunctions(name=name, inputs=inputs, run=run, format=format, table=table)
    for name, inputs, run, format, table in _TABLE
)


@hookimpl
def epbench_register_measurements(register: Callable[[Any], None]) -> None:
    for measurement in BUILTIN:
        register(measurement)
