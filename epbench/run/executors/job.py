"""What travels between the coordinator and an executor: the `CellJob` of one cell, the
`CellOutcome` it gives back, the `Executor` protocol, and the plugin selection a worker rebuilds
its registry from."""

from __future__ import annotations

import os
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from epbench.core.measurement import Cell, Measurement
from epbench.core.protocols import Backend


@dataclass(frozen=True, kw_only=True)
class CellJob:
    """One cell of the matrix, as a worker needs it (picklable; the backend by name)."""

    index: int  # position in the matrix (labels, task keys)
    cell: Cell
    records: Path  # the JSONL file; its folder holds checkpoints and saved traces
    env: dict[str, Any] = field(default_factory=dict)  # the coordinator's `environment()`
    select: tuple[str, ...] | None = None  # EPBENCH_LOAD_PLUGINS of the coordinator
    block: tuple[str, ...] = ()  # EPBENCH_BLOCK_PLUGINS of the coordinator

    @property
    def label(self) -> str:
        return self.cell.label


@dataclass(frozen=True, kw_only=True)
class CellOutcome:
    """What a worker sends back: the cell's records (one per seed of `Cell.group`), or the
    message of an `EpbenchError` (bad data, a refused checkpoint, an unknown backend), which
    stops the whole run."""

    records: tuple[dict[str, Any], ...] = ()
    error: str | None = None


class Executor(Protocol):
    """Runs cell jobs. `run_matrix` keeps at most `slots()` of them in flight."""

    name: str
    in_process: bool  # cells run in this process (data loaded for the check is reused)
    terminal: bool  # cells can draw their own progress bars on this process's terminal

    def slots(self) -> int:
        """How many cells may run at once now (a cluster's count can grow while it runs)."""
        ...

    def submit(
        self, job: CellJob, *, backend: Backend, measurement: Measurement
    ) -> Future[CellOutcome]:
        """Start `job`. `backend` and `measurement` are the coordinator's objects of the cell's
        names: the in-process executor runs them; the others find them by name in the worker
        (a measurement registered in this process only cannot run there). The future fails
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
