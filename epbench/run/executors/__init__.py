"""Executors: where the cells of a matrix run. `epbench.run.matrix.run_matrix` is the coordinator: it
hands each cell to an executor as a `CellJob`, and writes every record itself.

    inline   in this process, one cell after the other: no isolation (library use, debugging)
    local    worker subprocesses on this machine, `jobs` cells at once (the `epbench run`
             default, `--jobs N`, default 1): a cell that crashes its process or leaks memory
             takes down only its own worker, which is replaced; its cell is recorded `failed`
    dask     a Dask distributed cluster (`--scheduler ADDRESS`), or a `LocalCluster` of `jobs`
             single-threaded workers when no address is given; needs the `dask` extra

A `CellJob` is a small picklable description of one cell: the resolved `TaskSpec`, the backend's
NAME, the measurement, the `RunOptions` of its seed, the records file, the coordinator's
environment and plugin selection. `epbench.run.executors.cell.run_cell` runs it in the worker, which
finds the backend by name in its own plugin registry (built once per process from the
coordinator's `EPBENCH_LOAD_PLUGINS` / `EPBENCH_BLOCK_PLUGINS`), loads the data it needs (once
per process) and calls `runner.run_measurement`. Workers of a remote cluster need epbench, the
backends and the data (`--data-dir` / `EPBENCH_DATA`), and see the results folder at the same
path (checkpoints and saved traces are written by the worker).
"""

from __future__ import annotations

import os
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from epbench.core.errors import EpbenchError

if TYPE_CHECKING:  # runner imports this package lazily; no cycle at run time
    from epbench.core.protocols import Backend
    from epbench.core.spec import TaskSpec
    from epbench.run.matrix import RunOptions

EXECUTORS = ("local", "dask", "inline")


@dataclass(frozen=True, kw_only=True)
class CellJob:
    """One cell of the matrix, as a worker needs it (picklable; the backend by name)."""

    index: int  # position in the matrix (labels, task keys)
    spec: TaskSpec
    backend: str
    measure: str
    options: RunOptions  # `seed` is this cell's seed
    records: Path  # the JSONL file; its folder holds checkpoints and saved traces
    env: dict[str, Any] = field(default_factory=dict)  # the coordinator's `environment()`
    select: tuple[str, ...] | None = None  # EPBENCH_LOAD_PLUGINS of the coordinator
    block: tuple[str, ...] = ()  # EPBENCH_BLOCK_PLUGINS of the coordinator

    @property
    def label(self) -> str:
        extra = f" ({self.measure})" if self.measure != "gdu" else ""
        return f"{self.spec.cell} on {self.backend} seed {self.options.seed}{extra}"


@dataclass(frozen=True, kw_only=True)
class CellOutcome:
    """What a worker sends back: the cell's record, or the message of an `EpbenchError` (bad data,
    a refused checkpoint, an unknown backend), which stops the whole run."""

    record: dict[str, Any] | None = None
    error: str | None = None


class Executor(Protocol):
    """Runs cell jobs. `run_matrix` keeps at most `slots()` of them in flight."""

    name: str
    in_process: bool  # cells run in this process (data loaded for the check is reused)
    terminal: bool  # cells can draw their own progress bars on this process's terminal

    def slots(self) -> int:
        """How many cells may run at once now (a cluster's count can grow while it runs)."""
        ...

    def submit(self, job: CellJob, backend: Backend) -> Future[CellOutcome]:
        """Start `job`. `backend` is the coordinator's object of that name: the in-process
        executor runs it; the others find the backend by name in the worker. The future fails
        (any exception) when the worker died or could not run the job at all."""
        ...

    def close(self) -> None:
        """Stop the workers (cells still running are abandoned)."""
        ...


def plugin_knobs() -> tuple[tuple[str, ...] | None, tuple[str, ...]]:
    """(selected, blocked) entry-point names from EPBENCH_LOAD_PLUGINS / EPBENCH_BLOCK_PLUGINS of
    this process (epbench.plugins.manager), to rebuild the same registry in a worker."""

    def names(value: str | None) -> tuple[str, ...] | None:
        if value is None:
            return None
        return tuple(sorted({part.strip() for part in value.split(",") if part.strip()}))

    return names(os.environ.get("EPBENCH_LOAD_PLUGINS")), names(
        os.environ.get("EPBENCH_BLOCK_PLUGINS")
    ) or ()


def make_executor(name: str, *, jobs: int | None = None, scheduler: str | None = None) -> Executor:
    """The executor called `name` (one of `EXECUTORS`): `jobs` cells at once (local; dask
    `LocalCluster` workers; default 1), `scheduler` the address of a running Dask scheduler."""
    if jobs is not None and jobs < 1:
        raise EpbenchError(f"--jobs: expected an integer ≥ 1, found {jobs}")
    if scheduler and name != "dask":
        raise EpbenchError(f"--scheduler: expected --executor dask, found --executor {name}")
    if name == "local":
        from epbench.run.executors.local import LocalExecutor

        return LocalExecutor(jobs=jobs or 1)
    if name == "dask":
        from epbench.run.executors.dask import DaskExecutor

        if scheduler and jobs is not None:
            raise EpbenchError(
                "--jobs: expected no --jobs with --scheduler (the cluster's workers decide), "
                f"found --jobs {jobs}"
            )
        return DaskExecutor(address=scheduler, workers=jobs or 1)
    if name == "inline":
        if jobs not in (None, 1):
            raise EpbenchError(f"--jobs: expected 1 with --executor inline, found {jobs}")
        from epbench.run.executors.inline import InlineExecutor

        return InlineExecutor()
    raise EpbenchError(f"--executor: expected one of {', '.join(EXECUTORS)}, found {name!r}")
