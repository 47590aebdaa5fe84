"""Is the coordinator of this worker process still there? Writes consult it before writing.

A worker subprocess of `epbench run` (epbench.run.executors.local) is marked at start-up by its
initializer, which sets the environment variable `WORKER_VARIABLE` to
`<coordinator pid>:<worker pid>` (`mark_worker`). The mark is process state the worker sets once
before any cell runs, read here without any module-level state of its own, so the core does not
import the run layer. A process without the mark (the coordinator itself, the in-process
executor, a Dask worker, a library user) is never an orphan.

    coordinator_alive()   True unless this is a marked worker whose coordinator is gone: for the
                          worker itself, its parent is no longer the coordinator (it was
                          re-parented); for a process the worker started (which inherits the
                          mark), the coordinator's pid no longer exists
    exit_if_orphaned()    end this process at once (`os._exit(ORPHAN_EXIT)`) when the coordinator
                          is gone: what a write path calls first, so that nothing is written
                          after the coordinator died
"""

from __future__ import annotations

import os

WORKER_VARIABLE = "EPBENCH_WORKER_OF"
ORPHAN_EXIT = 70  # the exit status of a worker that found its coordinator gone


def mark_worker(*, coordinator: int) -> None:
    """Mark this process as a worker of the process `coordinator` (its parent, a pid)."""
    os.environ[WORKER_VARIABLE] = f"{coordinator}:{os.getpid()}"


def worker_mark() -> tuple[int, int] | None:
    """(coordinator pid, worker pid) of the mark this process carries, or None."""
    coordinator, _, worker = os.environ.get(WORKER_VARIABLE, "").partition(":")
    try:
        return int(coordinator), int(worker)
    except ValueError:
        return None


def _pid_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process now holds the pid
        return True
    return True


def coordinator_alive() -> bool:
    """False only in a marked worker (or a process it started) whose coordinator is gone."""
    mark = worker_mark()
    if mark is None or os.name != "posix":  # elsewhere the worker's watchdog alone
        return True
    coordinator, worker = mark
    if os.getpid() == worker:
        return os.getppid() == coordinator
    return _pid_exists(coordinator)


def exit_if_orphaned() -> None:
    """Return when the coordinator is alive (or this is no worker); else end this process now,
    without cleanup handlers (they could write), with the status ORPHAN_EXIT."""
    if not coordinator_alive():
        os._exit(ORPHAN_EXIT)
