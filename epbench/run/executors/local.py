"""The local executor: cells run in worker subprocesses on this machine, `jobs` at once.

Each slot is a one-process `ProcessPoolExecutor` (spawn context: a fresh interpreter, no state
inherited from the coordinator). A worker is reused by the slot's next cells (imports, compiled
code and datasets are paid once), and replaced when it dies: a cell that crashes its process
(segfault, out-of-memory kill, SIGKILL) breaks only its own slot's pool, so exactly that cell is
recorded `failed` and the others go on. With `jobs` > 1 each worker's BLAS/OpenMP threads are
limited to `cpu_count // jobs` (unless OMP_NUM_THREADS is set), so the workers do not fight for
the cores; timings taken that way share the machine (use `--jobs 1` for speed numbers).

Workers die with their coordinator, however it ends (SIGKILL included), and never write after
it: each worker is marked as the coordinator's (epbench.core.liveness, which the checkpoint
writes consult first), asks Linux for SIGKILL when its parent exits (`prctl(PR_SET_PDEATHSIG)`),
and runs a watchdog thread that ends it when the pipe from the coordinator closes (every
platform). The parent-death signal follows the thread that started the worker: `submit` is
called from the coordinator's main thread (epbench.run.matrix), which lives as long as the run.
"""

from __future__ import annotations

import ctypes
import multiprocessing
import os
import signal
import sys
import threading
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

from epbench.core.liveness import ORPHAN_EXIT, exit_if_orphaned, mark_worker
from epbench.core.measurement import Measurement
from epbench.core.protocols import Backend
from epbench.run.executors.cell import run_cell
from epbench.run.executors.job import CellJob, CellOutcome

THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")
PR_SET_PDEATHSIG = 1  # linux/prctl.h


def die_with_parent() -> bool:
    """Linux: have the kernel SIGKILL this process when its parent exits. Returns whether that
    was set (False elsewhere, or when prctl is not available)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def _watch_parent() -> None:
    """Block until the pipe from the parent closes (the parent is gone), then end this process
    at once, with the status ORPHAN_EXIT."""
    parent = multiprocessing.parent_process()
    if parent is None:
        return
    parent.join()  # waits on the parent's sentinel: the pipe's end of file
    os._exit(ORPHAN_EXIT)


def _start_worker(threads: int | None, coordinator: int) -> None:
    """Runs first in each worker, before any framework is imported: ties the worker's life to
    the `coordinator` (its parent's pid; module doc) and limits its BLAS/OpenMP `threads`."""
    mark_worker(coordinator=coordinator)
    die_with_parent()
    exit_if_orphaned()  # the coordinator died before the parent-death signal was set
    threading.Thread(target=_watch_parent, name="epbench-watchdog", daemon=True).start()
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
        pool = self._pools[slot]
        if pool is None or self._died(slot):
            if pool is not None:
                pool.shutdown(wait=False, cancel_futures=True)
            pool = ProcessPoolExecutor(
                max_workers=1,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=_start_worker,
                initargs=(self.threads, os.getpid()),
            )
            self._pools[slot] = pool
        return pool

    def _died(self, slot: int) -> bool:
        """Whether the slot's worker died running its last cell (its pool is broken)."""
        last = self._futures[slot]
        return (
            last is not None
            and last.done()
            and not last.cancelled()
            and isinstance(last.exception(), BrokenProcessPool)
        )

    def submit(
        self, job: CellJob, *, backend: Backend, measurement: Measurement
    ) -> Future[CellOutcome]:
        """Run `job` in a free slot's worker (backend and measurement are found there by name);
        a slot whose worker died is refilled first, so a dead worker is replaced by the next
        cell whatever the timing."""
        free = [i for i, f in enumerate(self._futures) if f is None or f.done()]
        if not free:
            raise RuntimeError(f"all {self.jobs} local workers are busy")
        slot = min(free, key=lambda i: (not self._died(i), i))
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
