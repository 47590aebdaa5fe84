"""What every view shares: records in (dicts or `Record`s), numbers as text, one record's heading.

What comes in: records as `epbench.core.record.read_records` returns them, or the dicts the run
loop hands over as cells end. What goes out: text.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from epbench.core.record import Record, as_record

AnyRecord = Record | Mapping[str, Any]


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
