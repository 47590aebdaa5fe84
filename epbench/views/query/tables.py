"""Flat rows (`epbench.views.query.columns`) → Arrow tables and an in-memory DuckDB database.

What comes in: `Record`s. What goes out: a `pyarrow.Table` per view (`arrow_table`) and a DuckDB
connection (`database`) with two views: `records` (one row per record; its `record` column is
DuckDB JSON, `record->>'$.environment.cpu'`) and `gdu` (one row per GDU record and canonical
name; join on `id`). pyarrow and duckdb are imported here only, when a query or an export runs,
so `import epbench` does not pay for them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from epbench.core.errors import EpbenchError
from epbench.core.record import Record
from epbench.views.query.columns import Rows, gdu_rows, record_rows

VIEWS = ("records", "gdu")


def _arrow_type(kind: str) -> Any:
    import pyarrow as pa

    return {
        "str": pa.string(),
        "json": pa.string(),
        "int": pa.int64(),
        "float": pa.float64(),
        "bool": pa.bool_(),
        "time": pa.timestamp("ms", tz="UTC"),  # Parquet keeps ms, not s
    }[kind]


def arrow_table(rows: Rows) -> Any:
    """`rows` as a `pyarrow.Table` of the columns' types (every column present, even when
    empty)."""
    import pyarrow as pa

    schema = pa.schema([(name, _arrow_type(kind)) for name, kind in rows.columns])
    columns = list(zip(*rows.rows, strict=True)) if rows.rows else [()] * len(rows.columns)
    arrays = [
        pa.array(list(values), type=field.type)
        for values, field in zip(columns, schema, strict=True)
    ]
    return pa.Table.from_arrays(arrays, schema=schema)


def database(records: Sequence[Record]) -> Any:
    """An in-memory DuckDB connection with the views `records` and `gdu` of `records` (module
    doc); nothing is written to disk."""
    import duckdb

    con = duckdb.connect(":memory:")
    con.register("records_table", arrow_table(record_rows(records)))
    con.register("gdu_table", arrow_table(gdu_rows(records)))
    con.execute(
        "CREATE VIEW records AS "
        "SELECT * REPLACE (CAST(record AS JSON) AS record) FROM records_table"
    )
    con.execute("CREATE VIEW gdu AS SELECT * FROM gdu_table")
    return con


def run_query(con: Any, sql: str) -> tuple[list[str], list[tuple[Any, ...]]]:
    """The column names and rows `sql` gives on `con`; an `EpbenchError` (one line: DuckDB's own
    first line) when the query is malformed or fails."""
    import duckdb

    try:
        cursor = con.execute(sql)
        if cursor.description is None:
            return [], []
        return [d[0] for d in cursor.description], cursor.fetchall()
    except duckdb.Error as err:
        first = " ".join(str(err).strip().splitlines()[0].split()) if str(err).strip() else ""
        raise EpbenchError(
            f"query: expected SQL over the views {' and '.join(VIEWS)}, found an error: "
            f"{first or type(err).__name__}"
        ) from None
