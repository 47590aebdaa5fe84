"""The coordinator of a matrix: task cells × backends × seeds × measurements.

What comes in: task cells (`TaskSpec`s), backends, the `RunOptions` of the run, a `RecordWriter`
and an executor (epbench.run.executors: in this process, local worker subprocesses, or a Dask
cluster). What goes out: one record per cell, written from this process, atomically, as each
cell ends, and returned in matrix order.

`run_matrix` resolves every cell once (epbench.run.resolve), checks that every measurement is
registered and that the data load, hands each cell to the executor as a picklable `CellJob` (the
worker measures it through the registry, epbench.run.dispatch), retries failed cells, skips cells
with an `ok` record on `--resume`, and reports progress. It knows no measurement by name.

Seeds: the canonical parameters come from `init_params(model, seed=seed)`; toy data from
`seed + TOY_DATA_OFFSET` (epbench.measurements.inputs); the random-sign estimator's sign from the
seed (epbench.core.estimators). So EP and BPTT, and every backend, see identical weights and
batches for the same seed.
"""

from __future__ import annotations

import sys
from collections import deque
from collections.abc import Callable, Iterable
from concurrent.futures import FIRST_COMPLETED, Future, wait
from dataclasses import replace
from pathlib import Path
from typing import Any

from epbench.config.tasks import config_hash
from epbench.core.errors import EpbenchError
from epbench.core.measurement import Cell, Output, batches_seeds
from epbench.core.protocols import Backend
from epbench.core.record import cell_key
from epbench.core.spec import TaskSpec
from epbench.measurements.inputs import input_key
from epbench.plugins.registry import Registry
from epbench.run.dispatch import error_line, measure, start_record
from epbench.run.executors.cell import cell_inputs, load_cell_inputs
from epbench.run.executors.inline import InlineExecutor
from epbench.run.executors.job import CellJob, Executor, plugin_knobs
from epbench.run.executors.progress import MatrixProgress
from epbench.run.resolve import RunOptions, resolve_cell, resolve_cells
from epbench.run.store import RecordWriter, environment, ok_records

POLL_SECONDS = 5.0  # how often run_matrix looks for new cluster workers while cells run


def run_measurement(
    name: str,
    spec: TaskSpec,
    backend: Backend,
    inputs: Any = None,
    *,
    options: RunOptions | None = None,
    folder: Path = Path("."),
    env: dict[str, Any] | None = None,
    registry: Registry | None = None,
) -> dict[str, Any]:
    """Measure one cell in this process (library use and tests): measurement `name` of the
    registry on `spec` and `backend` for `options.seed`, with `inputs` (loaded when None and
    the measurement declares some). Saved traces and checkpoints go below `folder`. Returns the
    record, not written."""
    options = options or RunOptions()
    measurement = (registry or Registry()).get_measurement(name)
    cell = resolve_cell(
        spec,
        measurement=name,
        backend=backend.name,
        seed=options.seed,
        options=options,
        progress=None if options.quiet else "lines",
    )
    if inputs is None:
        inputs = load_cell_inputs(measurement.inputs, cell)
    output = Output(folder=folder, traces_folder=folder / "traces", environment=env or {})
    return measure(measurement, cell, backend, inputs, output)


def run_matrix(
    cells: Iterable[TaskSpec],
    backends: Iterable[Backend],
    *,
    options: RunOptions,
    writer: RecordWriter,
    executor: Executor | None = None,
    retries: int = 0,
    on_record: Callable[[dict[str, Any]], None] | None = None,
    progress: Callable[[str], None] | None = None,
    registry: Registry | None = None,
) -> list[dict[str, Any]]:
    """Run every cell on every backend for every seed, each measurement of the cell's task, on
    `executor` (default: in this process, one cell after the other), writing each record to
    `writer` from this process as soon as its cell ends.

    Measurements are looked up in `registry` (default: the installed plugins) and datasets loaded
    here before the first cell runs, so an unknown measurement or a missing dataset stops the run
    before any work. A backend failure inside a cell, or the death of the worker running it, is
    recorded as `failed` and the cell is run again up to `retries` more times (its record says how
    many `attempts`); the matrix goes on. An `EpbenchError` raised in a cell (a refused
    checkpoint, an unknown backend) stops the run.

    With `options.resume`, a cell with an `ok` record in `writer.folder` (same cell, preset,
    configuration hash, measurement, backend, device, dtype and seed: `records.record_key`) is
    not run again, and that record stands in for it. Returns the records in matrix order.
    `progress` gets the lines of `executors.progress.MatrixProgress`, `on_record` each new record.
    """
    specs, backends = list(cells), list(backends)
    registry = registry or Registry()
    measurements = {m: registry.get_measurement(m) for spec in specs for m in spec.measure}
    by_name = {backend.name: backend for backend in backends}
    own = executor is None
    executor = executor if executor is not None else InlineExecutor()
    try:
        parallel = executor.slots() > 1
        quiet = options.quiet or parallel or not executor.terminal
        bars = None if quiet else "bar" if sys.stderr.isatty() else "lines"
        batched = [name for name, m in measurements.items() if batches_seeds(m)]
        matrix = resolve_cells(
            specs, list(by_name), options=options, progress=bars, batched=batched
        )
        _check_data(matrix, measurements, keep=executor.in_process)
        env = {**environment(), "executor": executor.name}
        select, block = plugin_knobs()
        groups = [cell.group for cell in matrix]
        matrix, records = _resume(matrix, ok_records(writer.folder) if options.resume else {})
        jobs = [
            CellJob(index=i, cell=cell, records=writer.path, env=env, select=select, block=block)
            for i, cell in enumerate(matrix)
        ]
        todo = deque(i for i, group in enumerate(groups) if len(records[i]) < len(group))
        terminal = progress is not None and not options.quiet and sys.stderr.isatty()
        meter = MatrixProgress(len(todo), parallel=parallel, emit=progress, bar=terminal)
        have, total = sum(map(len, records)), sum(map(len, groups))
        if progress and have:
            progress(f"{have} of {total} cells have ok records: not run again")
        try:
            _drive(
                executor,
                jobs,
                records,
                todo,
                objects=lambda cell: (by_name[cell.backend], measurements[cell.measurement]),
                writer=writer,
                env=env,
                meter=meter,
                retries=retries,
                on_record=on_record,
            )
        finally:
            meter.close()
        return [records[i][seed] for i, group in enumerate(groups) for seed in group]
    finally:
        if own:
            executor.close()


def _drive(
    executor: Executor,
    jobs: list[CellJob],
    records: list[dict[int, dict[str, Any]]],
    todo: deque[int],
    *,
    objects: Callable[[Cell], tuple[Backend, Any]],
    writer: RecordWriter,
    env: dict[str, Any],
    meter: MatrixProgress,
    retries: int,
    on_record: Callable[[dict[str, Any]], None] | None,
) -> None:
    """Keep the executor's slots busy with the `todo` jobs until every one has its records: write
    each record as its cell ends (into `records[i]`, by seed), retry a failed cell up to
    `retries` more times. `objects(cell)` gives the coordinator's backend and measurement."""
    attempts = [0] * len(jobs)
    running: dict[Future, int] = {}

    def submit(i: int) -> None:
        attempts[i] += 1
        meter.started(jobs[i].label)
        backend, measurement = objects(jobs[i].cell)
        running[executor.submit(jobs[i], backend=backend, measurement=measurement)] = i

    try:
        while todo or running:
            while todo and len(running) < executor.slots():
                submit(todo.popleft())
            finished, _ = wait(running, timeout=POLL_SECONDS, return_when=FIRST_COMPLETED)
            for future in sorted(finished, key=running.__getitem__):
                i = running.pop(future)
                outcome = _cell_records(future, jobs[i], env, executor.in_process)
                failed = any(record["status"] == "failed" for record in outcome)
                if failed and attempts[i] <= retries:
                    meter.ended(jobs[i].label, "failed", retry=f"attempt {attempts[i] + 1}")
                    todo.appendleft(i)
                    continue
                for record in outcome:
                    record["attempts"] = attempts[i]
                    writer.write(record)
                    records[i][record["seed"]] = record
                    if on_record:
                        on_record(record)
                meter.ended(jobs[i].label, _worst(outcome))
    finally:
        for future in running:
            future.cancel()


def _check_data(matrix: list[Cell], measurements: dict[str, Any], *, keep: bool) -> None:
    """Load every dataset the matrix needs once (a DataError stops the run before any cell);
    `keep` them in this process's cache when the cells run here."""
    checked = set()
    for cell in matrix:
        kind = measurements[cell.measurement].inputs
        key = input_key(kind, cell.spec, seed=cell.seed, dtype=cell.dtype, data_dir=cell.data_dir)
        if key is not None and key not in checked:
            checked.add(key)
            (cell_inputs if keep else load_cell_inputs)(kind, cell)


def _key(cell: Cell) -> tuple:
    """`records.record_key` of the record this cell will have."""
    return cell_key(
        cell=cell.spec.cell,
        preset=cell.spec.preset,
        config_hash=config_hash(cell.spec.config),
        measurement=cell.measurement,
        backend=cell.backend,
        device=cell.device,
        dtype=cell.dtype,
        seed=cell.seed,
    )


def _cell_records(
    future: Future, job: CellJob, env: dict[str, Any], in_process: bool
) -> list[dict[str, Any]]:
    """The records a finished cell job gives (one per seed of the cell): the worker's, or
    `failed` ones when the worker died or could not run it. An `EpbenchError` (raised here, or
    sent back as text) stops the run, and so does any other exception of a cell run
    `in_process` (there is no worker to lose).
    """
    try:
        outcome = future.result()
    except EpbenchError:
        raise
    except Exception as err:  # BrokenProcessPool, KilledWorker, a worker's import error, …
        if in_process:
            raise
        reason = f"worker lost: {error_line(err)}"
        return [
            {**start_record(job.cell.one_seed(seed), env), "status": "failed", "reason": reason}
            for seed in job.cell.group
        ]
    if outcome.error is not None:
        raise EpbenchError(outcome.error)
    return list(outcome.records)


def _worst(records: list[dict[str, Any]]) -> str:
    """The status shown for a cell of several seeds: the first that is not `ok`, else ok."""
    return next((r["status"] for r in records if r["status"] != "ok"), "ok")


def _resume(
    matrix: list[Cell], done: dict[tuple, dict[str, Any]]
) -> tuple[list[Cell], list[dict[int, dict[str, Any]]]]:
    """Each cell with only the seeds still to run (`done`: the `ok` records by `_key`), and the
    records that stand in for the others, by seed. A cell left with one seed is a plain one."""
    cells, found = [], []
    for cell in matrix:
        have = {
            seed: done[_key(cell.one_seed(seed))]
            for seed in cell.group
            if _key(cell.one_seed(seed)) in done
        }
        left = tuple(seed for seed in cell.group if seed not in have) or cell.group
        several = left if len(left) > 1 else ()
        cells.append(replace(cell, seed=left[0], seeds=several))
        found.append(have)
    return cells, found
