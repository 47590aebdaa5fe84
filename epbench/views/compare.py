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
                   were measured with different resolved configurations.

A regression is a slower case, a case with more memory (when gated on memory) or a missing one;
`compare` exits with 1 when there is one, so CI can adopt it as a gate.

What comes in: records (`Record`s or dicts). What goes out: rows (dicts) and their table.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from tabulate import tabulate

from epbench.core.errors import EpbenchError
from epbench.core.record import metrics_of
from epbench.views.format import AnyRecord, records_in
from epbench.views.speed_tables import LABELS

THRESHOLD = 0.10
REGRESSIONS = ("slower", "more memory", "missing")
FIELDS = ("cell", "backend", "device", "dtype", "algorithm")  # what identifies a case


def speed_cases(records: Iterable[AnyRecord]) -> dict[tuple, dict[str, Any]]:
    """{(cell, backend, device, dtype, algorithm): {"step_seconds", "samples_per_s",
    "peak_memory_bytes", "config_hash"}} of the ok speed records; the last record wins."""
    cases: dict[tuple, dict[str, Any]] = {}
    for r in records_in(records):
        if r.measurement != "speed" or r.status != "ok":
            continue
        for algorithm, m in metrics_of(r, "speed").items():
            key = (r.cell, r.backend, r.device, r.dtype, algorithm)
            cases[key] = {
                "step_seconds": m["step_seconds"],
                "samples_per_s": m["samples_per_s"],
                "peak_memory_bytes": m.get("peak_memory_bytes"),
                "config_hash": r.config_hash,
            }
    return cases


def _ratio(new: float | None, old: float | None) -> float | None:
    return new / old if new is not None and old else None


def compare_speed(
    old: Iterable[AnyRecord],
    new: Iterable[AnyRecord],
    *,
    threshold: float = THRESHOLD,
    memory: bool = False,
) -> list[dict[str, Any]]:
    """One row per case of `old` (module doc), then the cases only `new` has ("new")."""
    if threshold < 0:
        raise EpbenchError(f"--threshold: expected a number ≥ 0, found {threshold}")
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
        verdicts = []
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
    """The rows with a verdict of REGRESSIONS."""
    return [r for r in rows if any(v in REGRESSIONS for v in r["verdicts"])]


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
