"""The commands that run task cells on backends: `run`, `parity` and `profile`.

    epbench run TASK… [cell options] [matrix options]
        runs each cell on each backend (epbench.run.matrix.run_matrix), prints a per-layer table
        per cell and a summary, appends records; exit 1 when a cell failed or diverged
    epbench parity TASK… --backend REFERENCE,OTHER[,…] [cell options] [--tolerance X]
        the same cells, parameters and batch on several backends: the `parity` measurement
        (epbench.measurements.parity) of each other backend against the reference, through the
        matrix in this process; exit 1 above the tolerance
    epbench profile TASK… [cell options] [--algorithm ep|ep_symmetric|bptt|all] [--steps N]
        where a training step's time goes: the `profile` measurement (cProfile and the
        backend's profiler, under OUT/<machine>/profiles/), through the matrix in this process

The cell options (TASK…, --backend, --preset, --dtype, --device, --seed, --set, --sweep, --out,
--data-dir) are `epbench.cli.options.cell_options`, the matrix options (--save-traces,
--repeat, --seeds, --resume, --retries, --executor, --jobs, --scheduler, --quiet)
`epbench.cli.options.matrix_options`. Giving `parity` and `profile` the matrix options too (an
executor, seeds, --resume) is adding `@matrix_options()` and passing them to `measure_cells`.
"""

from __future__ import annotations

import sys
from typing import Any

import click

from epbench.cli.options import (
    POSITIVE,
    AtLeast,
    CellArgs,
    MatrixArgs,
    OneOf,
    cell_options,
    cells_of,
    matrix_options,
    registry_of,
    run_options,
)
from epbench.core.errors import EpbenchError
from epbench.core.flops import ALGORITHMS
from epbench.core.protocols import Backend
from epbench.run.executors import make_executor
from epbench.run.matrix import run_matrix
from epbench.run.resolve import with_measurement
from epbench.run.store import RecordWriter
from epbench.views.tables import format_record, overview

EVERY_BACKEND = "the backends to run on (default: every installed one)"


@click.command()
@cell_options(backend_help=EVERY_BACKEND)
@matrix_options()
@click.pass_context
def run(ctx: click.Context, cell_args: CellArgs, matrix_args: MatrixArgs) -> int:
    """Run task cells on backends and record the results.

    Prints each cell's table (unless --quiet) and a summary, appends one JSONL record per cell
    under --out; returns 1 when a cell failed or diverged, else 0."""
    registry = registry_of(ctx)
    cells = cells_of(registry, cell_args)
    backends = registry.select_backends(cell_args.backend)
    quiet = matrix_args.quiet
    writer = RecordWriter(cell_args.out)
    measurements = registry.get_measurements()

    def show(record: dict[str, Any]) -> None:
        """Print a finished cell's table on stdout (unless --quiet)."""
        if not quiet:
            print(format_record(record, measurements) + "\n", flush=True)

    def progress(line: str) -> None:
        """Print a progress line of the matrix on stderr (unless --quiet)."""
        if not quiet:
            print(line, file=sys.stderr, flush=True)

    executor = make_executor(
        matrix_args.executor, jobs=matrix_args.jobs, scheduler=matrix_args.scheduler
    )
    try:
        records = run_matrix(
            cells,
            backends,
            options=run_options(cell_args, matrix_args),
            writer=writer,
            executor=executor,
            retries=matrix_args.retries,
            on_record=show,
            progress=progress,
            registry=registry,
        )
    finally:
        executor.close()
    print(overview(records, measurements=measurements))
    print(f"\nrecords appended to {writer.path}" if writer.path.exists() else "\nno new records")
    return 1 if any(r["status"] in ("failed", "diverged") for r in records) else 0


def measure_cells(
    ctx: click.Context,
    cell_args: CellArgs,
    measurement: str,
    backends: list[Backend],
    arguments: dict[str, Any],
) -> tuple[list[dict[str, Any]], RecordWriter]:
    """Run measurement `measurement` (with its `arguments`) on the cells `cell_args` names and
    on `backends`, through the matrix, in this process; returns the records and their writer."""
    registry = registry_of(ctx)
    cells = with_measurement(cells_of(registry, cell_args), measurement)
    options = run_options(cell_args, **arguments)
    writer = RecordWriter(cell_args.out)
    records = run_matrix(cells, backends, options=options, writer=writer, registry=registry)
    return records, writer


@click.command()
@cell_options(backend_help="the reference, then the backends compared with it (default: all)")
@click.option(
    "--tolerance",
    type=POSITIVE,
    help="exit 1 above this relative difference for every quantity (default: per quantity, "
    "from the dtype's rounding and, for EP traces, the cancellation of their β-differences)",
)
@click.pass_context
def parity(ctx: click.Context, cell_args: CellArgs, tolerance: float | None) -> int:
    """Compare backends on the same cells, parameters and batch.

    The first backend is the reference; prints the relative differences of each other one per
    cell and appends their records under --out; returns 1 when one is above the tolerance (or
    was skipped), else 0."""
    backends = registry_of(ctx).select_backends(cell_args.backend)
    if len(backends) < 2:
        raise EpbenchError(
            "--backend: expected two or more backends to compare, found "
            f"{[backend.name for backend in backends]}"
        )
    arguments = {"against": backends[0].name, "tolerance": tolerance}
    records, writer = measure_cells(ctx, cell_args, "parity", backends[1:], arguments)
    print(registry_of(ctx).get_measurement("parity").table(records))
    print(f"\nrecords appended to {writer.path}")
    return 0 if all(r["status"] == "ok" for r in records) else 1


@click.command()
@cell_options(backend_help=EVERY_BACKEND)
@click.option(
    "--algorithm",
    type=OneOf((*ALGORITHMS, "all")),
    default="all",
    show_default=True,
    help="which training step",
)
@click.option("--steps", type=AtLeast(1), default=3, show_default=True, help="profiled steps")
@click.pass_context
def profile(ctx: click.Context, cell_args: CellArgs, algorithm: str, steps: int) -> int:
    """Profile training steps of task cells (cProfile and the backend's profiler).

    Writes the profiles under the records' folder (OUT/<machine>/profiles/) and prints, per
    cell, backend and algorithm, the time per step and the top of the cProfile summary; returns
    0 (1 when a cell failed)."""
    backends = registry_of(ctx).select_backends(cell_args.backend)
    arguments = {"algorithm": algorithm, "steps": steps}
    records, writer = measure_cells(ctx, cell_args, "profile", backends, arguments)
    measurement = registry_of(ctx).get_measurement("profile")
    for record in records:
        print(measurement.format(record) + "\n")
    print(f"records appended to {writer.path}")
    return 1 if any(r["status"] in ("failed", "diverged") for r in records) else 0
