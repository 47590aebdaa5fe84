"""`epbench …` — the command line, a click group (as llm and datasette are built).

    epbench backends                     installed backends: versions, capabilities
    epbench tasks                        task files, their cells and presets
    epbench plugins                      registered plugins and the hooks they implement
    epbench run TASK… [options]          run cells, print tables, append JSONL records
    epbench parity TASK… --backend a,b   the same cells on several backends, differences
    epbench profile TASK… [--algorithm]  where a training step's time goes (cProfile, profiler)
    epbench table RESULTS… [--against paper]   tables from records (files or folders)
    epbench table RESULTS… --pivot KEY [--metric M]   one metric, the values of KEY as columns
    epbench compare OLD NEW              speed records before/after; exit 1 on a regression
    epbench plot RESULTS… [--out DIR]    figures (needs the `plot` extra: matplotlib)
    epbench report RESULTS… --out DIR    one Markdown + HTML page with tables and figures
    epbench query RESULTS… "SQL"|NAME    SQL on the records (DuckDB); `--list` the named ones
    epbench export RESULTS… OUT          the records' flat table as Parquet or CSV

One module per group of commands: `inspect` (backends, tasks, plugins), `run` (run, parity,
profile), `tables` (table, compare), `figures` (plot, report), `query` (query, export);
`options` holds what they share and `group` the group itself (`make_cli`), its plugin commands
and its one-line errors.

`cli` is a group built at import (`make_cli()`); `main(argv)` runs a fresh one and returns the
exit code. Bad input (unknown names, invalid task files, malformed data, bad options) prints one
line and exits with 2.
"""

from __future__ import annotations

from epbench.cli.group import EpbenchGroup, main, make_cli

cli: EpbenchGroup = make_cli()

__all__ = ["EpbenchGroup", "cli", "main", "make_cli"]
