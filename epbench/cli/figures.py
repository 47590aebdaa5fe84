"""The commands that draw: `plot` and `report`.

    epbench plot RESULTS… [--out DIR] [--format png|svg|pdf]   figures from records and traces
    epbench report RESULTS… --out DIR [--format png|svg]       Markdown + HTML page with figures

matplotlib is imported only when a figure is drawn; without it `plot` raises `MissingExtraError`
(an `EpbenchError`: the CLI prints one line with `pip install 'epbench[plot]'` and exits with 2),
and `report` writes its tables and says how to get the figures.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from epbench.cli.options import PATH, OneOf, registry_of
from epbench.core.errors import EpbenchError
from epbench.core.record import read_records
from epbench.views.plots import FORMATS, figures, require_matplotlib, save

RESULTS = click.argument("results", nargs=-1, required=True, type=PATH, metavar="RESULTS…")


@click.command()
@RESULTS
@click.option("--out", type=PATH, default=Path("figures"), show_default=True)
@click.option("--format", "fmt", type=OneOf(FORMATS), default="png", show_default=True)
def plot(results: tuple[Path, ...], out: Path, fmt: str) -> int:
    """Draw figures from result files or folders (needs epbench[plot]).

    Prints the path of each figure written under --out (and, on stderr, what could not be
    drawn); returns 0. Records with nothing to draw are an error (exit 2)."""
    require_matplotlib()
    records = read_records(list(results))
    plots, notes = figures(records)
    if not plots:
        raise EpbenchError(
            f"{', '.join(map(str, results))}: expected records with status ok (GDU or "
            f"training), found {len(records)} records and nothing to draw"
        )
    for path in save(plots, out, fmt=fmt):
        print(path)
    for note in notes:
        print(f"not drawn: {note}", file=sys.stderr)
    return 0


@click.command()
@RESULTS
@click.option("--out", type=PATH, required=True, help="folder for the page and figures")
@click.option("--format", "fmt", type=OneOf(("png", "svg")), default="png", show_default=True)
@click.pass_context
def report(ctx: click.Context, results: tuple[Path, ...], out: Path, fmt: str) -> int:
    """Write a Markdown and HTML report with tables and figures.

    Writes report.md, report.html and the figures under --out and prints their paths (a
    warning on stderr when the figures could not be drawn); returns 0. Each measurement's
    records are shown by its registered views."""
    from epbench.views.report import write_report

    records = read_records(list(results))
    if not records:
        raise EpbenchError(f"{', '.join(map(str, results))}: expected records, found none")
    measurements = registry_of(ctx).get_measurements()
    written = write_report(records, out=out, fmt=fmt, measurements=measurements)
    for note in written["notes"]:
        if note.startswith("figures:"):
            print(f"epbench: warning: {note}", file=sys.stderr)
    print(written["markdown"])
    print(written["html"])
    print(f"{len(written['figures'])} figures in {out}")
    return 0
