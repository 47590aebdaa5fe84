"""Records as data: flat rows (`columns`), Arrow tables and an in-memory DuckDB database
(`tables`), the shipped named queries (`named`) and their output as text (`output`).

`epbench query`, `epbench export` and `epbench.records()` are built on these; the heavy libraries
(duckdb, pyarrow, pandas) are imported only inside the functions that need them.
"""
