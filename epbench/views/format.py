"""What every view shares: records in (dicts or `Record`s), numbers as text, one record's heading.

What comes in: records as `epbench.core.record.read_records` returns them, or the dicts the run
loop hands over as cells end. What goes out: text.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from epbench.core.errors import ResultsError
from epbench.core.record import Record, as_record

AnyRecord = Record | Mapping[str, Any]
# What a view raises on a well-typed record whose measurement payload is malformed.
VIEW_ERRORS = (
    TypeError,
    ValueError,
    KeyError,
    AttributeError,
    IndexError,
    ZeroDivisionError,
    OverflowError,
)


def records_in(records: Iterable[AnyRecord]) -> list[Record]:
    """Each record as a `Record` (`as_record`: dicts are upgraded and checked)."""
    return [as_record(r) for r in records]


def num(value: Any, fmt: str = ".4f") -> str:
    """`value` formatted with `fmt`, or — for None."""
    return "—" if value is None else format(value, fmt)


def heading(
    record: Record, *, device: bool = False, seed: bool = True, measurement: bool = False
) -> str:
    """`cell · backend [· device] · dtype [· seed N] · preset P [· measurement] · status`."""
    parts = [str(record.cell), str(record.backend)]
    parts += [record.device] if device else []
    parts.append(str(record.dtype))
    parts += [f"seed {record.seed}"] if seed else []
    parts.append(f"preset {record.preset}")
    parts += [record.measurement] if measurement else []
    return " · ".join([*parts, record.status])


def reason(record: Record, width: int) -> str:
    """The first `width` characters of the record's reason ("" for none)."""
    return (record.reason or "")[:width]


def malformed(record: Record, err: Exception) -> str:
    """The one-line problem of a record a view cannot show (`file:line: …; skipped`)."""
    detail = " ".join(str(err).split())[:120] or type(err).__name__
    return (
        f"{record.where}: {record.measurement} record: expected metrics its view can show, "
        f"found malformed ones ({type(err).__name__}: {detail}); skipped"
    )


def showable(records: Iterable[Record], check: Callable[[Record], Any]) -> list[Record]:
    """The records `check` (a view of one record) does not fail on with a `VIEW_ERRORS`. The
    others are problems, printed on stderr one line each (`malformed`) while some records
    remain; when none remains, a `ResultsError` naming the first (the others printed)."""
    good, problems = [], []
    for record in records:
        try:
            check(record)
        except VIEW_ERRORS as err:
            problems.append(malformed(record, err))
        else:
            good.append(record)
    if good or not problems:
        for problem in problems:
            print(problem, file=sys.stderr)
        return good
    for problem in problems[1:]:
        print(problem, file=sys.stderr)
    more = f" (and {len(problems) - 1} more problems above)" if len(problems) > 1 else ""
    raise ResultsError(f"{problems[0]}{more}; no record left to show")
