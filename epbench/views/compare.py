"""Regression gate over speed records: `epbench compare OLD NEW`.

A *case* is one (cell, backend, device, dtype, algorithm) of a `speed` record with status ok
(epbench.measurements.speed); when a side holds several records of a case, the last one read
counts (files in name order, lines in order: the latest run). For every case of OLD:

    time ratio     NEW step_seconds / OLD step_seconds (> 1: slower)
    memory ratio   NEW peak_memory_bytes / OLD peak_memory_bytes
    verdict        "slower" when the time ratio exceeds 1 + threshold, "faster" below
                   1 / (1 + threshold), else "same"; with `memory=True` also "more memory" when
                   the memory ratio exceeds 1 + threshold; "missing" when NEW has no ok record
                   of the case; "config differs" (a note, not a regression) when the two records
                   were measured with different resolved configurations; "OLD time zero" /
                   "OLD time missing" / "OLD time invalid" (and NEW's; with `memory=True` the
                   same of the peak memory) when a side has no positive number to compare: no
                   ratio, never "same".

A regression is a slower case, a case with more memory (when gated on memory), a missing one, or
one that could not be compared (a zero or missing time, or memory when gated on it);
`compare` exits with 1 when there is one, so CI can adopt it as a gate.

What comes in: records (`Record`s or dicts). What goes out: rows (dicts) and their table.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

from tabulate import tabulate

from epbench.core.errors import EpbenchError
from epbench.core.record import Record, metrics_of
from epbench.views.format import AnyRecord, records_in, showable
from epbench.views.speed_tables import LABELS

THRESHOLD = 0.10
REGRESSIONS = ("slower", "more memory", "missing")
UNCOMPARABLE = (
    " zero",
    " missing",
    " invalid",
)  # endings of the verdicts of a side with no positive number
FIELDS = ("cell", "backend", "device", "dtype", "algorithm")  # what identifies a case


def speed_cases(records: Iterable[AnyRecord]) -> dict[tuple, dict[str, Any]]:
    """{(cell, backend, device, dtype, algorithm): {"step_seconds", "samples_per_s",
    "peak_memory_bytes", "config_hash"}} of the ok speed records; the last record wins."""
    cases: dict[tuple, dict[str, Any]] = {}
    for r in showable(records_in(records), speed_payload):
        if r.measurement != "speed" or r.status != "ok":
            continue
        for algorithm, m in metrics_of(r, "speed").items():
            key = (r.cell, r.backend, r.device, r.dtype, algorithm)
            cases[key] = {
                "step_seconds": m.get("step_seconds"),
                "samples_per_s": m.get("samples_per_s"),
                "peak_memory_bytes": m.get("peak_memory_bytes"),
                "config_hash": r.config_hash,
            }
    return cases


def speed_payload(record: Record) -> None:
    """Raise a ValueError when an ok speed record's `metrics.speed` is not one object per
    algorithm whose `step_seconds`, `samples_per_s` and `peak_memory_bytes` are numbers (or
    absent): such a record is reported and skipped (`showable`), not compared."""
    if record.measurement != "speed" or record.status != "ok":
        return
    for algorithm, block in metrics_of(record, "speed").items():
        if not isinstance(block, Mapping):
            raise ValueError(f"metrics.speed.{algorithm}: expected an object, found {block!r}")
        for key in ("step_seconds", "samples_per_s", "peak_memory_bytes"):
            value = block.get(key)
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, int | float)
            ):
                raise ValueError(
                    f"metrics.speed.{algorithm}.{key}: expected a number, found {value!r}"
                )


def _positive(value: Any) -> bool:
    return isinstance(value, int | float) and math.isfinite(value) and value > 0


def _ratio(new: float | None, old: float | None) -> float | None:
    """NEW / OLD, or None unless both are finite numbers > 0."""
    return new / old if _positive(new) and _positive(old) else None


def _uncomparable(old: dict[str, Any], new: dict[str, Any], *, memory: bool) -> list[str]:
    """The verdicts of a case whose step time (or, with `memory`, peak memory) is zero or
    missing (or negative, not finite, not a number: "invalid") on a side: "OLD time zero",
    "NEW memory missing", …"""
    fields = {"time": "step_seconds", **({"memory": "peak_memory_bytes"} if memory else {})}
    verdicts = []
    for side, values in (("OLD", old), ("NEW", new)):
        for what, name in fields.items():
            value = values.get(name)
            if not _positive(value):
                problem = "missing" if value is None else "zero" if value == 0 else "invalid"
                verdicts.append(f"{side} {what} {problem}")
    return verdicts


def compare_speed(
    old: Iterable[AnyRecord],
    new: Iterable[AnyRecord],
    *,
    threshold: float = THRESHOLD,
    memory: bool = False,
) -> list[dict[str, Any]]:
    """One row per case of `old` (module doc), then the cases only `new` has ("new")."""
    if not _positive(threshold):
        raise EpbenchError(f"--threshold: expected a finite number > 0, found {threshold}")
    before, after = speed_cases(old), speed_cases(new)
    if not before:
        raise EpbenchError("OLD: expected ok speed records (epbench run speed), found none")
    rows = []
    for key, a in before.items():
        b = after.get(key)
        row: dict[str, Any] = dict(zip(FIELDS, key, strict=True))
        row.update(old=a, new=b, time_ratio=None, memory_ratio=None, verdicts=[])
        if b is None:
            row["verdicts"] = ["missing"]
            rows.append(row)
            continue
        time_ratio = _ratio(b["step_seconds"], a["step_seconds"])
        memory_ratio = _ratio(b["peak_memory_bytes"], a["peak_memory_bytes"])
        verdicts = _uncomparable(a, b, memory=memory)
        if time_ratio is not None and time_ratio > 1 + threshold:
            verdicts.append("slower")
        elif time_ratio is not None and time_ratio < 1 / (1 + threshold):
            verdicts.append("faster")
        if memory and memory_ratio is not None and memory_ratio > 1 + threshold:
            verdicts.append("more memory")
        if a["config_hash"] != b["config_hash"]:
            verdicts.append("config differs")
        row.update(time_ratio=time_ratio, memory_ratio=memory_ratio, verdicts=verdicts or ["same"])
        rows.append(row)
    for key, b in after.items():
        if key not in before:
            row = dict(zip(FIELDS, key, strict=True))
            row.update(old=None, new=b, time_ratio=None, memory_ratio=None, verdicts=["new"])
            rows.append(row)
    return rows


def regressions(rows: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """The rows with a verdict of REGRESSIONS, or one saying a side could not be compared."""
    return [
        r for r in rows if any(v in REGRESSIONS or v.endswith(UNCOMPARABLE) for v in r["verdicts"])
    ]


def compare_table(rows: Iterable[dict[str, Any]]) -> str:
    """Samples/s before and after, the time and memory ratios (NEW / OLD) and the verdict."""

    def num(value: float | None, fmt: str) -> str:
        return "—" if value is None else format(value, fmt)

    table = [
        [
            r["cell"],
            r["backend"],
            r["device"],
            r["dtype"],
            LABELS.get(r["algorithm"], r["algorithm"]),
            num((r["old"] or {}).get("samples_per_s"), ",.0f"),
            num((r["new"] or {}).get("samples_per_s"), ",.0f"),
            num(r["time_ratio"], ".3f"),
            num(r["memory_ratio"], ".3f"),
            ", ".join(r["verdicts"]),
        ]
        for r in rows
    ]
    headers = [
        "cell",
        "backend",
        "device",
        "dtype",
        "algorithm",
        "OLD samples/s",
        "NEW samples/s",
        "time NEW/OLD",
        "memory NEW/OLD",
        "verdict",
    ]
    return tabulate(table, headers=headers, tablefmt="github")
