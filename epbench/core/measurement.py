"""The measurement, the suite's central concept: what one cell of the matrix measures.

A measurement is registered through the `epbench_register_measurements` hook (the built-ins in
`epbench.measurements.builtin`, exactly as a plugin would) and named in a task's `measure` list.
The matrix (epbench.run.matrix) resolves each cell once into a `Cell` — dtype, device, seed and
every setting settled — loads the inputs the measurement declares (`inputs`), calls `run` in the
worker that holds the cell, and writes the record `run` returns. Views ask the measurement how its
records are shown (`format` for one record, `table` for many).

    inputs   "batch"     the cell's mini-batch (x, y) as numpy arrays of the cell's dtype
             "training"  the training and test sets (`epbench.measurements.training.TrainingData`)
             "none"      nothing: the measurement loads what it needs itself
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from epbench.core.protocols import Backend
from epbench.core.record import Record
from epbench.core.spec import TaskSpec

INPUTS = ("batch", "training", "none")


@dataclass(frozen=True, kw_only=True)
class Cell:
    """One resolved cell: a task cell, one measurement, one backend, one seed, with everything the
    measurement needs settled once, before dispatch (`epbench.run.resolve.resolve_cells`).

    progress   how long measurements show progress: None (quiet), "bar" (a terminal) or "lines".
    arguments  measurement-specific settings of the run (`argument`), e.g. parity's `against`.
    seeds      the seeds measured together in this cell (`SeedBatchedMeasurement`), `seed` first;
               empty for a cell of one seed. `group` is the seeds of the cell either way.
    """

    spec: TaskSpec
    measurement: str
    backend: str
    device: str
    dtype: str
    seed: int
    data_dir: Path | None = None
    save_traces: bool = False
    repeat: int = 1
    resume: bool = False
    progress: str | None = None
    arguments: tuple[tuple[str, Any], ...] = ()
    seeds: tuple[int, ...] = ()

    @property
    def group(self) -> tuple[int, ...]:
        """The seeds this cell measures: `seeds`, or (`seed`,)."""
        return self.seeds or (self.seed,)

    def one_seed(self, seed: int) -> Cell:
        """This cell for `seed` alone (what a record of a batched cell describes)."""
        return replace(self, seed=seed, seeds=())

    def argument(self, name: str, default: Any = None) -> Any:
        """The run-level setting `name` of this cell's measurement, or `default`."""
        return dict(self.arguments).get(name, default)

    @property
    def label(self) -> str:
        extra = f" ({self.measurement})" if self.measurement != "gdu" else ""
        seeds = f"seeds {','.join(map(str, self.seeds))}" if self.seeds else f"seed {self.seed}"
        return f"{self.spec.cell} on {self.backend} {seeds}{extra}"


@dataclass(frozen=True, kw_only=True)
class Output:
    """Where a cell's measurement may write beside the records, and the environment its record
    carries. `folder` is the records file's folder (checkpoints go below it), `traces_folder`
    the folder of this run's saved traces."""

    folder: Path
    traces_folder: Path
    environment: Mapping[str, Any] = field(default_factory=dict)


@runtime_checkable
class Measurement(Protocol):
    """What a measurement plugin registers."""

    name: str
    inputs: str  # one of INPUTS

    def run(self, cell: Cell, backend: Backend, inputs: Any, output: Output) -> Record:
        """Measure `cell` on `backend` and return its record (written by the matrix). A backend
        failure is caught and returned as a `failed` record; an `EpbenchError` stops the run."""
        ...

    def format(self, record: Record) -> str:
        """The text `epbench run` prints when one record of this measurement arrives."""
        ...

    def table(self, records: Sequence[Record]) -> str:
        """The table `epbench table` and the report show for these records (all of this
        measurement)."""
        ...


@runtime_checkable
class SeedBatchedMeasurement(Protocol):
    """Optional: a measurement that measures several seeds of a cell in one call (`train` trains
    them as one batched network where the backend can, `epbench.core.protocols.SeedNetwork`).
    The matrix then hands it one `Cell` whose `seeds` hold them all."""

    def run_seeds(self, cell: Cell, backend: Backend, inputs: Any, output: Output) -> list[Record]:
        """One record's fields per seed of `cell.group`, in that order (as `run` returns)."""
        ...


def batches_seeds(measurement: Measurement) -> bool:
    """Whether `measurement` measures the seeds of a cell together (`SeedBatchedMeasurement`)."""
    return isinstance(measurement, SeedBatchedMeasurement) and measurement.run_seeds is not None


@dataclass(frozen=True, kw_only=True)
class MeasurementFunctions:
    """A `Measurement` made of plain functions (how the built-ins are declared)."""

    name: str
    inputs: str
    run: Callable[[Cell, Backend, Any, Output], Record]
    format: Callable[[Record], str]
    table: Callable[[Sequence[Record]], str]
    description: str = ""
    run_seeds: Callable[[Cell, Backend, Any, Output], list[Record]] | None = None
