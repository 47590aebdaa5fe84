"""Views of `speed` and `memory` records (epbench.measurements.speed, epbench.measurements.memory).

`speed_table`: one row per record and algorithm — samples/s, step and phase times, compile time,
peak memory, FLOPs — and the ratios measured in the same run: the step time over BPTT's, the
fraction of the FLOP-bound limit, and the speed-up over the backend's re-creation of the paper's
implementation where there is one. No absolute target: samples/s taken on one machine on one day
compare with nothing else, a ratio of two things timed together does. `memory_table`: peak
memory per K, the slope, the variation.

What comes in: records with `metrics.speed[algorithm]` (step_seconds, samples_per_s, phases,
compile_seconds, peak_memory_bytes, flops, achieved_flops_per_s, flop_fraction),
`metrics.reference[algorithm]` (speedup, reference_samples_per_s), or `metrics.memory` (K and per
algorithm the lists peak_memory_bytes, step_memory_bytes, slope_bytes_per_k, variation, method).
What goes out: text.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from types import MappingProxyType
from typing import Any

from tabulate import tabulate

from epbench.core.flops import ALGORITHMS
from epbench.core.record import Record, metrics_of
from epbench.views.format import AnyRecord, heading, num, reason, records_in

LABELS = MappingProxyType(
    {"ep": "EP", "ep_symmetric": "EP sym.", "ep_holomorphic": "EP holo.", "bptt": "BPTT"}
)
SHOWN = (*ALGORITHMS, "ep_holomorphic")  # holomorphic EP: speed cells of that estimator only


def _ms(seconds: float | None) -> str:
    return num(None if seconds is None else seconds * 1e3, ",.2f")


def _mib(value: float | None) -> str:
    return num(None if value is None else value / 2**20, ",.0f")


def speed_of(record: Record, algorithm: str) -> Mapping[str, Any]:
    """`metrics.speed[algorithm]` of a speed record (empty when it has none)."""
    block = metrics_of(record, "speed").get(algorithm)
    return block if isinstance(block, Mapping) else MappingProxyType({})


def against_reference(record: Record, algorithm: str) -> Mapping[str, Any]:
    """`metrics.reference[algorithm]`: the same-run timing against the reference re-creation."""
    block = metrics_of(record, "reference").get(algorithm)
    return block if isinstance(block, Mapping) else MappingProxyType({})


def speedup_cell(record: Record, algorithm: str) -> str:
    """`ratio× (reference samples/s)` against the reference re-creation; empty when the record
    has no reference timing."""
    against = against_reference(record, algorithm)
    if not against:
        return ""
    return f"{against['speedup']:.2f}× ({against['reference_samples_per_s']:,.0f})"


def _over_bptt(record: Record, algorithm: str) -> float | None:
    """The step time of `algorithm` over BPTT's, both timed in the same rounds."""
    bptt = speed_of(record, "bptt").get("step_seconds")
    step = speed_of(record, algorithm).get("step_seconds")
    return step / bptt if step is not None and bptt else None


SPEED_HEADERS = (
    "cell",
    "backend",
    "device",
    "dtype",
    "algorithm",
    "samples/s",
    "step ms",
    "free ms",
    "nudged ms",
    "backward ms",
    "compile s",
    "peak MiB",
    "MFLOP/step",
    "GFLOP/s",
    "time / BPTT",
    "% bound",
    "× reference",
    "reason",
)


def _speed_row(r: Record, algorithm: str) -> list[Any]:
    m = speed_of(r, algorithm)
    label = LABELS.get(algorithm, algorithm)
    if algorithm == "ep_holomorphic":
        label = f"{label} N={r.config.get('dynamics', {}).get('points', 4)}"
    if "skipped" in m:  # an algorithm the cell's model does not allow
        blank = ["—"] * (len(SPEED_HEADERS) - 6)
        return [r.cell, r.backend, r.device, r.dtype, label, *blank, f"skipped: {m['skipped']}"]
    phases = m.get("phases") or {}
    fraction = m.get("flop_fraction")
    flops, achieved = m.get("flops"), m.get("achieved_flops_per_s")
    return [
        r.cell,
        r.backend,
        r.device,
        r.dtype,
        label,
        num(m["samples_per_s"], ",.0f"),
        _ms(m["step_seconds"]),
        _ms(phases.get("free")),
        _ms(phases.get("nudged")),
        _ms(phases.get("backward")),
        num(m.get("compile_seconds"), ".2f"),
        _mib(m.get("peak_memory_bytes")),
        num(None if flops is None else flops / 1e6, ",.1f"),
        num(None if achieved is None else achieved / 1e9, ".1f"),
        num(_over_bptt(r, algorithm), ".2f"),
        num(None if fraction is None else 100 * fraction, ".0f"),
        speedup_cell(r, algorithm),
        "",
    ]


def speed_rows(records: Iterable[AnyRecord]) -> list[list[Any]]:
    """The rows of `speed_table`: one per record and algorithm, one per record not ok."""
    rows = []
    for r in records_in(records):
        head = [r.cell, r.backend, r.device, r.dtype]
        if r.status != "ok" or not metrics_of(r, "speed"):
            blank = ["—"] * (len(SPEED_HEADERS) - len(head) - 1)
            rows.append(head + blank + [f"{r.status}: {reason(r, 50)}"])
            continue
        rows += [_speed_row(r, a) for a in SHOWN if speed_of(r, a)]
    return rows


def speed_table(records: Iterable[AnyRecord]) -> str:
    """One row per speed record and algorithm (EP, EP symmetric, BPTT). Phases: `free` is the
    free phase (T steps; T − K for BPTT), `nudged` the EP step minus the free phase, `backward`
    the BPTT step minus a free phase of T steps. `time / BPTT`: the step time over BPTT's, timed
    in the same rounds. `% bound`: the FLOP-bound time over the step. `× reference`: the same-run
    speed-up over the backend's re-creation of the paper's implementation
    (epbench.measurements.reference) and, in parentheses, that re-creation's samples/s."""
    return tabulate(speed_rows(records), headers=list(SPEED_HEADERS), tablefmt="github")


def _memory_cells(memory: Mapping[str, Any], block: Mapping[str, Any], ks: list[int]) -> list:
    """`peak MiB (step MiB)` of one algorithm at each K of `ks` (— where it was not measured)."""
    by_k = dict(
        zip(
            memory["K"],
            zip(block["peak_memory_bytes"], block["step_memory_bytes"], strict=True),
            strict=True,
        )
    )
    return [f"{_mib(by_k[k][0])} ({by_k[k][1] / 2**20:,.1f})" if k in by_k else "—" for k in ks]


def memory_table(records: Iterable[AnyRecord]) -> str:
    """One row per memory record and algorithm: peak memory (MiB) per K, with the step's own
    share in parentheses, the slope of the step memory (KiB per unit of K) and the variation of
    the peak over K."""
    records = records_in(records)
    ks = sorted({k for r in records for k in metrics_of(r, "memory").get("K", [])})
    rows = []
    for r in records:
        memory = metrics_of(r, "memory")
        head = [r.cell, r.backend, r.device, r.dtype]
        if r.status != "ok" or not memory:
            rows.append(head + ["—"] * (len(ks) + 3) + [f"{r.status}: {r.reason}"[:60]])
            continue
        for algorithm in ALGORITHMS:
            block = memory.get(algorithm)
            if not block:
                continue
            variation = block.get("variation")
            rows.append(
                [
                    *head,
                    LABELS.get(algorithm, algorithm),
                    *_memory_cells(memory, block, ks),
                    num(block["slope_bytes_per_k"] / 1024, ",.1f"),
                    num(None if variation is None else 100 * variation, ".1f"),
                    block.get("method", ""),
                ]
            )
    headers = ["cell", "backend", "device", "dtype", "algorithm"]
    headers += [f"K={k} MiB (step)" for k in ks] + ["slope KiB/K", "peak var. %", "measured"]
    return tabulate(rows, headers=headers, tablefmt="github")


def _format(record: AnyRecord, table: Any) -> str:
    r = records_in([record])[0]
    head = heading(r, device=True, seed=False, measurement=True)
    return f"{head}: {r.reason}" if r.status != "ok" else f"{head}\n{table([r])}"


def format_speed(record: AnyRecord) -> str:
    """Heading and `speed_table` of one speed record (or its heading and reason)."""
    return _format(record, speed_table)


def format_memory(record: AnyRecord) -> str:
    """Heading and `memory_table` of one memory record (or its heading and reason)."""
    return _format(record, memory_table)
