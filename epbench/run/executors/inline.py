"""The in-process executor: each cell runs in this process when submitted, one after the other.

No isolation (a crash of the backend ends the run); exceptions, `EpbenchError` included, reach the
caller unchanged. For library use, tests with in-process backends, and debugging (`pdb`).
"""

from __future__ import annotations

from concurrent.futures import Future

from epbench.core.measurement import Measurement
from epbench.core.protocols import Backend
from epbench.run.executors.cell import clear_caches, execute
from epbench.run.executors.job import CellJob, CellOutcome


class InlineExecutor:
    name = "inline"
    in_process = True
    terminal = True

    def slots(self) -> int:
        return 1

    def submit(
        self, job: CellJob, *, backend: Backend, measurement: Measurement
    ) -> Future[CellOutcome]:
        """Run `job` with the given objects now; the future is already done."""
        future: Future[CellOutcome] = Future()
        try:
            future.set_result(CellOutcome(records=tuple(execute(job, backend, measurement))))
        except Exception as err:  # the caller decides: EpbenchError stops the run
            future.set_exception(err)
        return future

    def close(self) -> None:
        clear_caches()
