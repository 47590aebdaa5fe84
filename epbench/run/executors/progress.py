"""Progress of a matrix, as lines for `run_matrix`'s `progress` callback (stderr in the CLI).

One cell at a time, each cell is announced as it starts (its own progress bars follow):

    [3/12] toy on torch seed 1 · 0:04 elapsed · ~0:12 left

Several at once (per-cell bars are off), each cell is reported as it ends, with the matrix counts:

    [5/12 done · 2 running · 1 failed · 0:32 elapsed · ~0:45 left] toy on torch seed 1: ok

The estimate is the elapsed time per finished cell times the cells left.
"""

from __future__ import annotations

import time
from collections.abc import Callable


def clock_text(seconds: float) -> str:
    """`m:ss`, or `h:mm:ss` from one hour on."""
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


class MatrixProgress:
    """Counts cells done / running / failed out of `total` and emits the lines above."""

    def __init__(
        self,
        total: int,
        *,
        parallel: bool,
        emit: Callable[[str], None] | None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.total, self.parallel, self.emit, self.clock = total, parallel, emit, clock
        self.done = self.running = self.failed = 0
        self.since = clock()

    def _times(self) -> str:
        elapsed = self.clock() - self.since
        text = f"{clock_text(elapsed)} elapsed"
        if 0 < self.done < self.total:
            text += f" · ~{clock_text(elapsed / self.done * (self.total - self.done))} left"
        return text

    def note(self, line: str) -> None:
        if self.emit:
            self.emit(line)

    def started(self, label: str) -> None:
        self.running += 1
        if not self.parallel:
            self.note(f"[{self.done + 1}/{self.total}] {label} · {self._times()}")

    def ended(self, label: str, status: str, *, retry: str | None = None) -> None:
        """A cell ended with `status`; `retry` (e.g. "attempt 2 of 3") when it runs again."""
        self.running -= 1
        if retry:
            self.note(f"{label}: {status}, trying again ({retry})")
            return
        self.done += 1
        self.failed += status == "failed"
        if self.parallel:
            counts = (
                f"{self.done}/{self.total} done · {self.running} running · "
                f"{self.failed} failed · {self._times()}"
            )
            self.note(f"[{counts}] {label}: {status}")
