"""The commands that print tables from records: `table` and `compare`.

epbench table RESULTS… [--detail] [--against paper]   tables from result files or folders
epbench table RESULTS… --pivot KEY [--metric M]       one metric, the values of KEY as columns
epbench compare OLD NEW [--threshold 0.10] [--memory]
    speed records of two runs (files or folders) side by side: samples/s, NEW/OLD ratios;
    exit 1 when a case got slower by more than the threshold (or was lost; or, with
    --memory, needs more memory), else 0 (epbench.views.compare)
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from epbench.cli.options import PATH, POSITIVE, OneOf, registry_of
from epbench.core.record import read_records
from epbench.views.compare import THRESHOLD, compare_speed, compare_table, regressions
from epbench.views.equivalence import DEFAULT_MARGIN
from epbench.views.pivot import METRICS as PIVOT_METRICS
from epbench.views.pivot import pivot_table
from epbench.views.tables import AGAINST, BUILTIN, format_record, overview


@click.command()
@click.argument("results", nargs=-1, required=True, type=PATH, metavar="RESULTS…")
@click.option("--detail", is_flag=True, help="per-layer table of each record")
@click.option(
    "--against",
    type=OneOf(AGAINST),
    help="training records beside the paper's reported errors (docs/theory.md §5, Table 1)",
)
@click.option(
    "--margin",
    type=POSITIVE,
    default=DEFAULT_MARGIN,
    show_default=True,
    help="equivalence margin of EP − BPTT test error, percent points (with --against paper)",
)
@click.option(
    "--pivot",
    metavar="KEY",
    help="one table with the values of KEY as columns: a record field (depth, estimator, "
    "angle, backend), a variant axis, or a config path (dynamics.estimator)",
)
@click.option(
    "--metric",
    default="cosine",
    show_default=True,
    metavar="NAME",
    help=f"what --pivot shows: {', '.join(PIVOT_METRICS)}, or a dotted path into the records "
    "(metrics.gdu.W0_1.rmse)",
)
@click.pass_context
def table(
    ctx: click.Context,
    results: tuple[Path, ...],
    detail: bool,
    against: str | None,
    margin: float,
    pivot: str | None,
    metric: str,
) -> int:
    """Print tables from result files or folders.

    Reads the records under RESULTS and prints their overview (or, with --pivot, one metric
    against the values of KEY; with --detail, each record's own table first); returns 0."""
    records = read_records(list(results))
    # the plugins' views only for measurements the suite does not show itself (loading the
    # plugins imports the backends' frameworks)
    plugins = {r.measurement for r in records} - set(BUILTIN)
    measurements = registry_of(ctx).get_measurements() if plugins else None
    if detail:
        for record in records:
            print(format_record(record, measurements) + "\n")
    if pivot:
        print(pivot_table(records, key=pivot, metric=metric))
        return 0
    print(overview(records, measurements=measurements, against=against, margin=margin))
    return 0


@click.command()
@click.argument("old", type=PATH, metavar="OLD")
@click.argument("new", type=PATH, metavar="NEW")
@click.option(
    "--threshold",
    type=POSITIVE,
    default=THRESHOLD,
    show_default=True,
    help="flag a case slower by more than this fraction",
)
@click.option("--memory", is_flag=True, help="also flag cases whose peak memory grew as much")
def compare(old: Path, new: Path, threshold: float, memory: bool) -> int:
    """Compare the speed records of two runs; exit 1 on a regression.

    OLD and NEW are results files or folders (before, after). Prints one row per case; returns
    1 when a case regressed (slower by more than the threshold, lost, or with --memory needing
    more memory), else 0."""
    rows = compare_speed(
        read_records([old]), read_records([new]), threshold=threshold, memory=memory
    )
    print(compare_table(rows))
    bad = regressions(rows)
    if bad:
        print(
            f"\n{len(bad)} of {len(rows)} cases regressed (threshold {threshold:.0%})",
            file=sys.stderr,
        )
        return 1
    print(f"\nno regression (threshold {threshold:.0%})")
    return 0
