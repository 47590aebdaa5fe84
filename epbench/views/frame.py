"""Records as a pandas DataFrame, and their export to Parquet or CSV.

    import epbench
    df = epbench.records("results")          # one row per record, flat columns
    df.groupby(["cell", "backend"]).ep_test.mean()

What comes in: result files and folders (read by `epbench.core.record.read_records`: a bad line is
reported on stderr, `file:line: …`, and the other records are kept), or records. What goes out: a
DataFrame with the columns of `epbench.views.query.columns.record_rows` (the same as the
`records` view of `epbench query`), or a file. pandas and pyarrow are imported only here.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from epbench.core.errors import EpbenchError
from epbench.core.paths import make_folder
from epbench.core.record import Record, read_records
from epbench.views.query.columns import record_rows
from epbench.views.query.tables import arrow_table

EXPORT_FORMATS = ("parquet", "csv")
Paths = str | os.PathLike[str] | Iterable[str | os.PathLike[str]]


def _paths(paths: Paths) -> list[Path]:
    if isinstance(paths, (str, os.PathLike)):
        return [Path(paths)]
    return [Path(p) for p in paths]


def frame_of(records: Sequence[Record]) -> Any:
    """The records as a DataFrame (module doc)."""
    return arrow_table(record_rows(records)).to_pandas()


def records(paths: Paths) -> Any:
    """`pandas.DataFrame` of the records in `paths` (a file or folder, or several): one row per
    record, in file then line order. Raises `ResultsError` when no record is found."""
    return frame_of(read_records(_paths(paths)))


def export(found: Sequence[Record], *, out: Path, fmt: str) -> Path:
    """Write the records' flat table to `out` as Parquet or CSV (`fmt`); returns `out`.
    The file is written beside its final name and renamed into place, so a failed export
    leaves no partial file."""
    if fmt not in EXPORT_FORMATS:
        raise EpbenchError(f"--format: expected one of {', '.join(EXPORT_FORMATS)}, found {fmt!r}")
    out = Path(out)
    make_folder(out.parent, option="OUT")
    part = out.with_name(f".{out.name}.part")
    table = arrow_table(record_rows(found))
    try:
        if fmt == "parquet":
            import pyarrow.parquet as pq

            pq.write_table(table, part)
        else:
            table.to_pandas().to_csv(part, index=False)
        os.replace(part, out)
    except OSError as err:
        raise EpbenchError(
            f"OUT {out}: expected a file that can be written, found {err.strerror or err}"
        ) from None
    finally:
        part.unlink(missing_ok=True)
    return out
