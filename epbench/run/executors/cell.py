"""The worker's side of a cell: `run_cell(job)` runs one `CellJob` in the process it lands in.

What comes in: a `CellJob` (epbench.run.executors). What goes out: a `CellOutcome` holding the
record of `runner.run_measurement` (not written: the coordinator writes it), or an `EpbenchError`'s
message. Per process, the plugin registry (`worker_registry`) and the datasets (`cell_inputs`) are
built once and reused by the next cells; the peak memory is reset before each cell, so a record's
`peak_memory_bytes` is that cell's own (Linux; elsewhere the process's peak so far).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from epbench.core.errors import EpbenchError
from epbench.core.process_memory import reset_peak_memory
from epbench.core.protocols import Backend
from epbench.core.records import RecordWriter, worker_environment
from epbench.core.spec import TaskSpec
from epbench.measurements.training import load_training_data
from epbench.plugins.manager import make_plugin_manager
from epbench.plugins.registry import Registry
from epbench.run.executors import CellJob, CellOutcome
from epbench.run.matrix import BATCH_MEASUREMENTS, load_batch, run_measurement


@functools.lru_cache(maxsize=4)
def worker_registry(select: tuple[str, ...] | None, block: tuple[str, ...]) -> Registry:
    """This process's registry of the entry points `select`ed (None: all) and not `block`ed."""
    return Registry(make_plugin_manager(select=select, block=block))


@dataclass(frozen=True)
class _Request:
    """Inputs to load; only `key` (`input_key`) takes part in equality and hashing."""

    key: tuple
    spec: TaskSpec = field(compare=False)
    measure: str = field(compare=False)
    seed: int = field(compare=False)
    dtype: str = field(compare=False)
    data_dir: Path | None = field(compare=False)


def input_key(
    spec: TaskSpec, measure: str, *, seed: int, dtype: str, data_dir: Path | None
) -> tuple | None:
    """What the inputs of `measure` on `spec` depend on; None when it takes none. Cells with the
    same key share one load (per process, and in the coordinator's data check)."""
    if measure == "train":
        return ("train", spec.data.source, spec.data.subset, spec.model.outputs, dtype, data_dir)
    if measure in BATCH_MEASUREMENTS:
        shape = (spec.model.inputs, spec.model.outputs)
        toy_seed = seed if spec.data.source == "toy" else None
        return ("batch", spec.data, shape, dtype, data_dir, toy_seed)
    return None


def load_inputs(
    spec: TaskSpec, measure: str, *, seed: int, dtype: str, data_dir: Path | None
) -> Any:
    """The inputs `run_measurement` takes for `measure`: the `TrainingData` of `train`, the
    `load_batch` mini-batch of the `BATCH_MEASUREMENTS`, None for the others."""
    if measure == "train":
        return load_training_data(spec, dtype=dtype, data_dir=data_dir)
    if measure in BATCH_MEASUREMENTS:
        return load_batch(spec, seed=seed, dtype=dtype, data_dir=data_dir)
    return None


def _load(request: _Request) -> Any:
    return load_inputs(
        request.spec,
        request.measure,
        seed=request.seed,
        dtype=request.dtype,
        data_dir=request.data_dir,
    )


_training_data = functools.lru_cache(maxsize=2)(_load)  # whole training sets: keep few
_batch = functools.lru_cache(maxsize=64)(_load)  # mini-batches: small


def cell_inputs(
    spec: TaskSpec, measure: str, *, seed: int, dtype: str, data_dir: Path | None
) -> Any:
    """`load_inputs`, once per process for each `input_key`."""
    key = input_key(spec, measure, seed=seed, dtype=dtype, data_dir=data_dir)
    if key is None:
        return None
    request = _Request(key, spec, measure, seed, dtype, data_dir)
    return _training_data(request) if key[0] == "train" else _batch(request)


def clear_caches() -> None:
    """Forget this process's datasets and registries (the in-process executor, when closed)."""
    _training_data.cache_clear()
    _batch.cache_clear()
    worker_registry.cache_clear()


def execute(job: CellJob, backend: Backend) -> dict[str, Any]:
    """Run `job` on `backend` in this process and return its record; the environment is the
    coordinator's with this process's host, CPU, versions and pid."""
    options = job.options
    dtype = options.dtype or job.spec.dtype
    inputs = cell_inputs(
        job.spec, job.measure, seed=options.seed, dtype=dtype, data_dir=options.data_dir
    )
    env = {**job.env, **worker_environment()}
    reset_peak_memory()
    writer = RecordWriter.at(job.records)
    return run_measurement(job.measure, job.spec, backend, inputs, options, writer, env)


def run_cell(job: CellJob) -> CellOutcome:
    """Run `job` in a worker process: its backend found by name in this process's registry."""
    try:
        backend = worker_registry(job.select, job.block).get_backend(job.backend)
        return CellOutcome(record=execute(job, backend))
    except EpbenchError as err:  # sent back as text: exception classes need not pickle
        return CellOutcome(error=str(err))
