"""The Dask executor: cells run on a Dask distributed cluster (the `dask` extra).

    epbench run … --executor dask --scheduler tcp://host:8786   a running cluster
    epbench run … --executor dask --jobs 4                       a LocalCluster of 4 workers

Each cell is one Dask task running `epbench.run.executors.cell.run_cell` on a `CellJob`. The
scheduler's `distributed.scheduler.allowed-failures` (default 3) decides how often a task whose
worker died is tried again on another worker before its future fails with `KilledWorker`; the
coordinator then records the cell `failed` (and retries it `--retries` times). Start the workers
of your own cluster with one thread each (`dask worker ADDRESS --nthreads 1`, or `cores` =
`processes` in dask-jobqueue), so that cells do not share a process or time each other.
"""

from __future__ import annotations

import logging
import uuid
from concurrent.futures import Future
from typing import Any

from epbench.core.errors import EpbenchError
from epbench.core.measurement import Measurement
from epbench.core.protocols import Backend
from epbench.run.executors.cell import run_cell
from epbench.run.executors.job import CellJob, CellOutcome


def _distributed() -> Any:
    try:
        import distributed
    except ImportError:
        raise EpbenchError(
            "--executor dask: expected the dask extra (pip install 'epbench[dask]'), "
            "found no 'distributed' module"
        ) from None
    return distributed


class DaskExecutor:
    name = "dask"
    in_process = False
    terminal = False  # workers log elsewhere: no per-cell progress bars

    def __init__(self, *, address: str | None = None, workers: int = 1) -> None:
        """Connect to the scheduler at `address`, or start a `LocalCluster` of `workers`
        single-threaded worker processes (closed again by `close`)."""
        distributed = _distributed()
        self._cluster = None
        self._pending: dict[Future, Any] = {}
        if address is None:
            self._cluster = distributed.LocalCluster(
                n_workers=workers,
                threads_per_worker=1,
                processes=True,
                dashboard_address=None,
                silence_logs=logging.ERROR,
            )
            address = self._cluster.scheduler_address
        try:
            self.client = distributed.Client(address, set_as_default=False, timeout=30)
        except OSError as err:
            self.close()
            raise EpbenchError(
                f"--scheduler: expected a Dask scheduler at {address}, found none ({err})"
            ) from None

    def slots(self) -> int:
        """The cluster's worker threads now (at least 1: jobs wait for workers to join)."""
        return max(1, sum(self.client.nthreads().values()))

    def submit(
        self, job: CellJob, *, backend: Backend, measurement: Measurement
    ) -> Future[CellOutcome]:
        """Send `job` to the cluster (backend and measurement are found by name on the worker)."""
        remote = self.client.submit(
            run_cell, job, key=f"epbench-cell-{job.index}-{uuid.uuid4().hex[:8]}", pure=False
        )
        future: Future[CellOutcome] = Future()
        future.set_running_or_notify_cancel()
        self._pending[future] = remote  # a Dask future dropped by everyone cancels its task

        def settle(done: Any) -> None:  # runs in the client's thread
            self._pending.pop(future, None)
            try:
                future.set_result(done.result())
            except BaseException as err:  # KilledWorker, CancelledError, an import failure …
                future.set_exception(err)

        remote.add_done_callback(settle)
        return future

    def close(self) -> None:
        client = getattr(self, "client", None)
        if client is not None:
            if self._pending:
                client.cancel(list(self._pending.values()))
            client.close()
        if self._cluster is not None:
            self._cluster.close()
            self._cluster = None
