"""Progress of a matrix, as lines for `run_matrix`'s `progress` callback (stderr in the CLI).

One cell at a time, each cell is announced as it starts (its own progress bars follow):

    [3/12] toy on torch seed 1 · 0:04 elapsed · ~0:12 left

Several at once (per-cell bars are off), each cell is reported as it ends, with the matrix counts:

    [5/12 done · 2 running · 1 failed · 0:32 elapsed · ~0:45 left] toy on torch seed 1: ok

The estimate is the elapsed time per finished cell times the cells left.

On a terminal (`bar=True`) the display goes through tqdm, like the training bars: one cell at a
time, the announcement is printed above the cell's own bars (`tqdm.write`); several at once, a
matrix bar (cells done of the total, with the counts and the cell that ended) stays at the
bottom and the lines above are printed above it. Otherwise the plain lines go to `emit`.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Any


def clock_text(seconds: float) -> str:
    """`m:ss`, or `h:mm:ss` from one hour on."""
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def _matrix_bar(total: int) -> Any:
    """The tqdm bar of a matrix run on a terminal (cells done out of `total`), on stderr."""
    from tqdm import tqdm

    return tqdm(total=total, desc="matrix", unit="cell", file=sys.stderr, dynamic_ncols=True)


class MatrixProgress:
    """Counts cells done / running / failed out of `total` and emits the lines above (through
    tqdm when `bar`, on a terminal; module doc). `close()` ends the bar."""

    def __init__(
        self,
        total: int,
        *,
        parallel: bool,
        emit: Callable[[str], None] | None,
        bar: bool = False,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.total, self.parallel, self.emit, self.clock = total, parallel, emit, clock
        self.done = self.running = self.failed = 0
        self.since = clock()
        self.bar = _matrix_bar(total) if bar and parallel and emit else None
        self.through_tqdm = bar

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()

    def _times(self) -> str:
        elapsed = self.clock() - self.since
        text = f"{clock_text(elapsed)} elapsed"
        if 0 < self.done < self.total:
            text += f" · ~{clock_text(elapsed / self.done * (self.total - self.done))} left"
        return text

    def note(self, line: str) -> None:
        if self.emit and self.through_tqdm:
            from tqdm import tqdm

            tqdm.write(line, file=sys.stderr)
        elif self.emit:
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
            if self.bar is not None:
                self.bar.update(1)
                self.bar.set_postfix_str(f"{self.running} running · {self.failed} failed")
