"""Executors: where the cells of a matrix run. `epbench.run.matrix.run_matrix` is the coordinator:
it hands each cell to an executor as a `CellJob`, and writes every record itself.

    inline   in this process, one cell after the other: no isolation (library use, debugging)
    local    worker subprocesses on this machine, `jobs` cells at once (the `epbench run`
             default, `--jobs N`, default 1): a cell that crashes its process or leaks memory
             takes down only its own worker, which is replaced; its cell is recorded `failed`;
             the workers die with the coordinator (even on SIGKILL) and never write after it
    dask     a Dask distributed cluster (`--scheduler ADDRESS`), or a `LocalCluster` of `jobs`
             single-threaded workers when no address is given; needs the `dask` extra

A `CellJob` is a small picklable description of one cell: the resolved `Cell`
(epbench.core.measurement: task cell, measurement and backend by NAME, dtype, device, seed, …),
the records file, the coordinator's environment and plugin selection.
`epbench.run.executors.cell.run_cell` runs it in the worker, which finds the backend and the
measurement by name in its own plugin registry (built once per process from the coordinator's
`EPBENCH_LOAD_PLUGINS` / `EPBENCH_BLOCK_PLUGINS`), loads the inputs the measurement declares
(once per process) and measures the cell (epbench.run.dispatch). Workers of a remote cluster need
epbench, the backends and the data (`--data-dir` / `EPBENCH_DATA`), and see the results folder at
the same path (checkpoints and saved traces are written by the worker).
"""

from __future__ import annotations

from epbench.core.errors import EpbenchError
from epbench.run.executors.inline import InlineExecutor
from epbench.run.executors.job import Executor
from epbench.run.executors.local import LocalExecutor

EXECUTORS = ("local", "dask", "inline")


def make_executor(name: str, *, jobs: int | None = None, scheduler: str | None = None) -> Executor:
    """The executor called `name` (one of `EXECUTORS`): `jobs` cells at once (local; dask
    `LocalCluster` workers; default 1), `scheduler` the address of a running Dask scheduler."""
    if jobs is not None and jobs < 1:
        raise EpbenchError(f"--jobs: expected an integer ≥ 1, found {jobs}")
    if scheduler and name != "dask":
        raise EpbenchError(f"--scheduler: expected --executor dask, found --executor {name}")
    if name == "local":
        return LocalExecutor(jobs=jobs or 1)
    if name == "dask":
        from epbench.run.executors.dask import DaskExecutor  # the optional `dask` extra

        if scheduler and jobs is not None:
            raise EpbenchError(
                "--jobs: expected no --jobs with --scheduler (the cluster's workers decide), "
                f"found --jobs {jobs}"
            )
        return DaskExecutor(address=scheduler, workers=jobs or 1)
    if name == "inline":
        if jobs not in (None, 1):
            raise EpbenchError(f"--jobs: expected 1 with --executor inline, found {jobs}")
        return InlineExecutor()
    raise EpbenchError(f"--executor: expected one of {', '.join(EXECUTORS)}, found {name!r}")
