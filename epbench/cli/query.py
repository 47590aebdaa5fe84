"""The commands that hand records over as data: `query` and `export`.

    epbench query RESULTS… "SQL" [--format table|csv|json|markdown]   SQL on the records (DuckDB)
    epbench query RESULTS… NAME                                       a named query
    epbench query --list                                              the named queries
    epbench export RESULTS… OUT [--format parquet|csv]                the flat table to a file

The records of the files and folders are the view `records` (one row per record, flat columns,
the whole record in the JSON column `record`) and `gdu` (one row per GDU record and canonical
name), in an in-memory DuckDB database (epbench.views.query). A bad record line is reported
(`file:line: …`) and the others are still queried; a malformed query is one line, exit 2.
"""

from __future__ import annotations

from pathlib import Path

import click

from epbench.cli.options import OneOf
from epbench.core.errors import EpbenchError
from epbench.core.record import read_records
from epbench.views.query.named import named_queries
from epbench.views.query.output import FORMATS, render

EXPORT_FORMATS = ("parquet", "csv")


def _list() -> str:
    queries = named_queries()
    width = max(map(len, queries), default=0)
    lines = [f"{q.name:<{width}}  {q.description}" for q in queries.values()]
    return "\n".join(lines) + "\n"


@click.command()
@click.argument("args", nargs=-1, metavar='RESULTS… "SQL"|NAME')
@click.option("--format", "fmt", type=OneOf(FORMATS), default="table", show_default=True)
@click.option("--list", "listing", is_flag=True, help="list the named queries and exit")
def query(args: tuple[str, ...], fmt: str, listing: bool) -> int:
    """Run SQL (DuckDB) on the records of result files or folders.

    The last argument is the SQL, or the name of a shipped query (--list). Views: `records`
    (one row per record, flat columns, the JSON column `record`) and `gdu` (per record and
    name; join on `id`). Prints the rows on stdout; returns 0."""
    if listing:
        click.echo(_list(), nl=False)
        return 0
    if len(args) < 2:
        raise click.UsageError('expected RESULTS… followed by "SQL" or a query name (or --list)')
    *paths, sql = args
    named = named_queries()
    if sql in named:
        sql = named[sql].sql
    elif len(sql.split()) < 2:  # one word: a misspelled name rather than SQL
        raise EpbenchError(
            f"query: expected SQL or one of the named queries ({', '.join(named)}), found {sql!r}"
        )
    from epbench.views.query.tables import database, run_query

    records = read_records([Path(p) for p in paths])
    names, rows = run_query(database(records), sql)
    click.echo(render(names, rows, fmt=fmt), nl=False)
    return 0


@click.command()
@click.argument("args", nargs=-1, metavar="RESULTS… OUT")
@click.option(
    "--format",
    "fmt",
    type=OneOf(EXPORT_FORMATS),
    default=None,
    help="parquet or csv (default: from OUT's suffix)",
)
def export(args: tuple[str, ...], fmt: str | None) -> int:
    """Write the records' flat table (the `records` view of `query`) to a Parquet or CSV file.

    Prints the path written and the number of rows; returns 0."""
    if len(args) < 2:
        raise click.UsageError("expected RESULTS… followed by the output file OUT")
    *paths, target = args
    out = Path(target)
    fmt = fmt or out.suffix.lstrip(".").lower()
    if fmt not in EXPORT_FORMATS:
        raise EpbenchError(
            f"OUT {out}: expected a .parquet or .csv file (or --format parquet|csv), "
            f"found the suffix {out.suffix or 'none'!r}"
        )
    from epbench.views.frame import export as write

    records = read_records([Path(p) for p in paths])
    write(records, out=out, fmt=fmt)
    click.echo(f"{out}: {len(records)} records ({fmt})")
    return 0
