"""Run options, and the cells of a matrix resolved from them, once, before dispatch.

What comes in: the task cells (`TaskSpec`s, epbench.config.tasks), backend names, seeds, and the
`RunOptions` of one `epbench run`. What goes out: one `Cell` (epbench.core.measurement) per task
cell × backend × seed × measurement (or × the seeds together, for a measurement that batches
them), with dtype (the run's `--dtype`, else the task's), device,
seed, progress and every measurement setting settled, so no layer below works them out again.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from epbench.core.measurement import Cell
from epbench.core.spec import TaskSpec


@dataclass(frozen=True, kw_only=True)
class RunOptions:
    """Settings of one `epbench run` that apply to every cell."""

    device: str = "cpu"
    dtype: str | None = None  # None: the task's own dtype
    seed: int = 0
    seeds: tuple[int, ...] = ()  # run every cell once per seed; empty: (seed,)
    batch_seeds: bool = False  # the seeds of a cell in one job, for measurements that batch them
    data_dir: Path | None = None
    save_traces: bool = False
    repeat: int = 1  # steady-state repetitions timed after the first (warm-up) run
    resume: bool = False  # training: continue from the checkpoints of an interrupted run
    quiet: bool = False  # no progress from the cells (a bar on a terminal, else plain lines)
    arguments: tuple[tuple[str, Any], ...] = ()  # measurement settings (parity's `against`, …)

    def seed_list(self) -> tuple[int, ...]:
        return tuple(self.seeds) or (self.seed,)


def resolve_cell(
    spec: TaskSpec,
    *,
    measurement: str,
    backend: str,
    seed: int,
    options: RunOptions,
    progress: str | None,
) -> Cell:
    """The `Cell` of one task cell × backend × seed × measurement (module doc)."""
    return Cell(
        spec=spec,
        measurement=measurement,
        backend=backend,
        device=options.device,
        dtype=options.dtype or spec.dtype,
        seed=seed,
        data_dir=options.data_dir,
        save_traces=options.save_traces,
        repeat=options.repeat,
        resume=options.resume,
        progress=progress,
        arguments=options.arguments,
    )


def resolve_cells(
    specs: list[TaskSpec],
    backends: list[str],
    *,
    options: RunOptions,
    progress: str | None,
    batched: Collection[str] = (),
) -> list[Cell]:
    """Every cell of the matrix in order: task cell, then backend, then seed, then measurement.
    With `options.batch_seeds` and several seeds, a measurement named in `batched`
    (`epbench.core.measurement.SeedBatchedMeasurement`) gets one cell for all of them, at the
    first seed's place, with `Cell.seeds` set."""
    seeds = options.seed_list()
    together = options.batch_seeds and len(seeds) > 1

    def cell(spec: TaskSpec, backend: str, seed: int, measurement: str) -> Cell:
        one = resolve_cell(
            spec,
            measurement=measurement,
            backend=backend,
            seed=seed,
            options=options,
            progress=progress,
        )
        return replace(one, seeds=seeds) if together and measurement in batched else one

    return [
        cell(spec, backend, seed, measurement)
        for spec in specs
        for backend in backends
        for seed in seeds
        for measurement in spec.measure
        if not (together and measurement in batched and seed != seeds[0])
    ]


def with_measurement(specs: list[TaskSpec], name: str) -> list[TaskSpec]:
    """The task cells with their `measure` list replaced by measurement `name` alone: how
    `epbench parity` and `epbench profile` run the cells of any task through the matrix, e.g.
    `run_matrix(with_measurement(cells, "parity"), others, options=RunOptions(...,
    arguments=(("against", reference.name), ("tolerance", tolerance))), writer=writer)` or
    `arguments=(("algorithm", "all"), ("steps", 5))` for "profile"."""
    return [replace(spec, measure=(name,)) for spec in specs]
