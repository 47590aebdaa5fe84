"""The local executor: cells run in worker subprocesses on this machine, `jobs` at once.

Each slot is a one-process `ProcessPoolExecutor` (spawn context: a fresh interpreter, no state
inherited from the coordinator). A worker is reused by the slot's next cells (imports, compiled
code and datasets are paid once), and replaced when it dies: a cell that crashes its process
(segfault, out-of-memory kill, SIGKILL) breaks only its own slot's pool, so exactly that cell is
recorded `failed` and the others go on. With `jobs` > 1 each worker's BLAS/OpenMP threads are
limited to `cpu_count // jobs` (unless OMP_NUM_THREADS is set), so the workers do not fight for
the cores; timings taken that way share the machine (use `--jobs 1` for speed numbers).
"""

from __future__ import annotations

import multiprocessing
import os
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

from epbench.core.measurement import Measurement
from epbench.core.protocols import Backend
from epbench.run.executors.cell import run_cell
from epbench.run.executors.job import CellJob, CellOutcome

THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


def _start_worker(threads: int | None) -> None:
    """Runs first in each worker, before any framework is imported."""
    if threads is not None and "OMP_NUM_THREADS" not in os.environ:
        for variable in THREAD_VARIABLES:
            os.environ.setdefault(variable, str(threads))


class LocalExecutor:
    name = "local"
    in_process = False
    terminal = True  # workers inherit this process's stderr

    def __init__(self, *, jobs: int = 1) -> None:
        self.jobs = jobs
        self.threads = max(1, (os.cpu_count() or 1) // jobs) if jobs > 1 else None
        self._pools: list[ProcessPoolExecutor | None] = [None] * jobs
        self._futures: list[Future | None] = [None] * jobs

    def slots(self) -> int:
        return self.jobs

    def _pool(self, slot: int) -> ProcessPoolExecutor:
        """The slot's pool; a new one when it has none yet or its worker died."""
        pool, last = self._pools[slot], self._futures[slot]
        broken = (
            last is not None
            and not last.cancelled()
            and isinstance(last.exception(), BrokenProcessPool)
        )
        if pool is None or broken:
            if pool is not None:
                pool.shutdown(wait=False, cancel_futures=True)
            pool = ProcessPoolExecutor(
                max_workers=1,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=_start_worker,
                initargs=(self.threads,),
            )
            self._pools[slot] = pool
        return pool

    def submit(
        self, job: CellJob, *, backend: Backend, measurement: Measurement
    ) -> Future[CellOutcome]:
        """Run `job` in a free slot's worker (backend and measurement are found there by name)."""
        free = [i for i, f in enumerate(self._futures) if f is None or f.done()]
        if not free:
            raise RuntimeError(f"all {self.jobs} local workers are busy")
        slot = free[0]
        future = self._pool(slot).submit(run_cell, job)
        self._futures[slot] = future
        return future

    def close(self) -> None:
        """Shut the workers down; a worker still running a cell (the run was stopped) is
        terminated rather than waited for."""
        for pool, future in zip(self._pools, self._futures, strict=True):
            if pool is None:
                continue
            if future is not None and not future.done():
                terminate = getattr(pool, "terminate_workers", None)  # Python ≥ 3.14
                if terminate is not None:
                    terminate()
                else:  # older Pythons have no public way to stop a busy worker
                    for process in list((getattr(pool, "_processes", None) or {}).values()):
                        process.terminate()
            pool.shutdown(wait=True, cancel_futures=True)
        self._pools = [None] * self.jobs
        self._futures = [None] * self.jobs
