"""The `plot` and `report` subcommands, wired into `epbench.cli.commands` by two calls:

    add_commands(subparsers)      adds the two subcommands to the `epbench` parser
    run_command(args)             runs one of them (returns its exit code), or returns None when
                                  `args.command` is another command

    epbench plot RESULTS… [--out DIR] [--format png|svg|pdf]   figures from records and traces
    epbench report RESULTS… --out DIR [--format png|svg]       Markdown + HTML page with figures

matplotlib is imported only when a figure is drawn; without it `plot` raises `MissingExtraError`
(an `EpbenchError`: the CLI prints one line with `pip install 'epbench[plot]'` and exits with 2),
and `report` writes its tables and says how to get the figures. `main` runs these two commands on
their own (`python -m epbench.cli.figures`), with the same error handling as `epbench.cli.commands.main`.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from epbench.core.errors import EpbenchError
from epbench.core.records import read_records
from epbench.views.plots import FORMATS, figures, require_matplotlib, save

COMMANDS = ("plot", "report")


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    """Add `plot` and `report` to the `epbench` subparsers (dest "command")."""
    plot = subparsers.add_parser(
        "plot", help="draw figures from result files or folders (needs epbench[plot])"
    )
    plot.add_argument("results", nargs="+", type=Path, metavar="RESULTS")
    plot.add_argument("--out", type=Path, default=Path("figures"), help="folder for the figures")
    plot.add_argument("--format", choices=FORMATS, default="png", help="image format")
    report = subparsers.add_parser(
        "report", help="write a Markdown and HTML report with tables and figures"
    )
    report.add_argument("results", nargs="+", type=Path, metavar="RESULTS")
    report.add_argument("--out", type=Path, required=True, help="folder for the page and figures")
    report.add_argument("--format", choices=("png", "svg"), default="png", help="image format")


def cmd_plot(args: argparse.Namespace) -> int:
    require_matplotlib()
    records = read_records(args.results)
    plots, notes = figures(records)
    if not plots:
        raise EpbenchError(
            f"{', '.join(map(str, args.results))}: expected records with status ok (GDU or "
            f"training), found {len(records)} records and nothing to draw"
        )
    for path in save(plots, args.out, fmt=args.format):
        print(path)
    for note in notes:
        print(f"not drawn: {note}", file=sys.stderr)
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from epbench.views.report import write_report

    records = read_records(args.results)
    if not records:
        raise EpbenchError(f"{', '.join(map(str, args.results))}: expected records, found none")
    written = write_report(records, out=args.out, fmt=args.format)
    for note in written["notes"]:
        if note.startswith("figures:"):
            print(f"epbench: warning: {note}", file=sys.stderr)
    print(written["markdown"])
    print(written["html"])
    print(f"{len(written['figures'])} figures in {args.out}")
    return 0


def run_command(args: argparse.Namespace) -> int | None:
    """Run `plot` or `report`; None when `args.command` is not one of them."""
    if getattr(args, "command", None) == "plot":
        return cmd_plot(args)
    if getattr(args, "command", None) == "report":
        return cmd_report(args)
    return None


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="epbench", description="figures and reports")
    add_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    try:
        code = run_command(args)
    except EpbenchError as err:
        print(f"epbench: error: {err}", file=sys.stderr)
        return 2
    return 0 if code is None else code


if __name__ == "__main__":
    sys.exit(main())
