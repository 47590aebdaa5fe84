"""The worker's side of a cell: `run_cell(job)` runs one `CellJob` in the process it lands in.

What comes in: a `CellJob` (epbench.run.executors). What goes out: a `CellOutcome` holding the
records of `epbench.run.dispatch.measure_cell` (not written: the coordinator writes it), or an
`EpbenchError`'s message. Per process, the plugin registry (`worker_registry`) and the inputs
(`cell_inputs`) are built once and reused by the next cells; the peak memory is reset before
each cell, so a record's `peak_memory_bytes` is that cell's own (Linux; elsewhere the process's
peak so far).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Any

from epbench.core.errors import EpbenchError
from epbench.core.measurement import Cell, Measurement, Output
from epbench.core.process_memory import reset_peak_memory
from epbench.core.protocols import Backend
from epbench.measurements.inputs import input_key, load_inputs
from epbench.plugins.manager import make_plugin_manager
from epbench.plugins.registry import Registry
from epbench.run.dispatch import measure_cell
from epbench.run.executors.job import CellJob, CellOutcome
from epbench.run.store import RecordWriter, worker_environment


@functools.lru_cache(maxsize=4)
def worker_registry(select: tuple[str, ...] | None, block: tuple[str, ...]) -> Registry:
    """This process's registry of the entry points `select`ed (None: all) and not `block`ed."""
    return Registry(make_plugin_manager(select=select, block=block))


@dataclass(frozen=True)
class _Request:
    """Inputs to load; only `key` (`input_key`) takes part in equality and hashing."""

    key: tuple
    kind: str = field(compare=False)
    cell: Cell = field(compare=False)


def load_cell_inputs(kind: str, cell: Cell) -> Any:
    """The inputs of `kind` (`Measurement.inputs`) for `cell`, loaded now."""
    return load_inputs(kind, cell.spec, seed=cell.seed, dtype=cell.dtype, data_dir=cell.data_dir)


def _load(request: _Request) -> Any:
    return load_cell_inputs(request.kind, request.cell)


_training_data = functools.lru_cache(maxsize=2)(_load)  # whole training sets: keep few
_batch = functools.lru_cache(maxsize=64)(_load)  # mini-batches: small


def cell_inputs(kind: str, cell: Cell) -> Any:
    """`load_cell_inputs`, once per process for each `input_key`."""
    key = input_key(kind, cell.spec, seed=cell.seed, dtype=cell.dtype, data_dir=cell.data_dir)
    if key is None:
        return None
    request = _Request(key, kind, cell)
    return _training_data(request) if kind == "training" else _batch(request)


def clear_caches() -> None:
    """Forget this process's inputs and registries (the in-process executor, when closed)."""
    _training_data.cache_clear()
    _batch.cache_clear()
    worker_registry.cache_clear()


def execute(job: CellJob, backend: Backend, measurement: Measurement) -> list[dict[str, Any]]:
    """Measure `job`'s cell with `backend` and `measurement` in this process and return its
    records (one per seed of the cell); the environment is the coordinator's with this
    process's host, CPU, versions and pid."""
    inputs = cell_inputs(measurement.inputs, job.cell)
    writer = RecordWriter.at(job.records)
    output = Output(
        folder=writer.folder,
        traces_folder=writer.traces_folder,
        environment={**job.env, **worker_environment()},
    )
    reset_peak_memory()
    return measure_cell(measurement, job.cell, backend, inputs, output)


def run_cell(job: CellJob) -> CellOutcome:
    """Run `job` in a worker process: its backend and measurement found by name in this
    process's registry."""
    try:
        registry = worker_registry(job.select, job.block)
        backend = registry.get_backend(job.cell.backend)
        measurement = registry.get_measurement(job.cell.measurement)
        return CellOutcome(records=tuple(execute(job, backend, measurement)))
    except EpbenchError as err:  # sent back as text: exception classes need not pickle
        return CellOutcome(error=str(err))
