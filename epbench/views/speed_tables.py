"""Tables of `speed` and `memory` records (epbench.measurements.speed, epbench.measurements.memory), and the targets.

`epbench run speed` and `epbench table` print `speed_table` (one row per record and algorithm:
samples/s, step and phase times, compile time, peak memory, FLOPs, the fraction of the FLOP bound,
the target) and `memory_table` (peak memory per K, the slope, the variation).
"""

from __future__ import annotations

from collections.abc import Iterable
from types import MappingProxyType
from typing import Any

from tabulate import tabulate

from epbench.core.flops import ALGORITHMS

# The suite's throughput targets (samples/s at the paper's settings, `speed` task, preset
# `paper`): (model, algorithm) for every backend, (backend, model, algorithm) where one differs.
# The P-conv ones are 1.5× the paper's implementation (35 and 44 samples/s on a 2-core CPU);
# REFERENCE_TARGETS states them as same-run speed-ups over its re-creation (epbench.measurements.reference).
TARGETS = MappingProxyType(
    {
        ("P-1h", "ep"): 20_000,
        ("P-1h", "bptt"): 8_000,
        ("EB-1h", "ep"): 5_000,
        ("P-2h", "ep"): 4_000,
        ("P-conv", "ep"): 52,
        ("P-conv", "bptt"): 66,
    }
)
BACKEND_TARGETS = MappingProxyType({("torch", "P-1h", "ep"): 5_000})
REFERENCE_TARGETS = MappingProxyType({("P-conv", "ep"): 1.5, ("P-conv", "bptt"): 1.5})
LABELS = MappingProxyType({"ep": "EP", "ep_symmetric": "EP sym.", "bptt": "BPTT"})


def _num(value: Any, fmt: str) -> str:
    return "—" if value is None else format(value, fmt)


def _ms(seconds: float | None) -> str:
    return _num(None if seconds is None else seconds * 1e3, ",.2f")


def _mib(value: float | None) -> str:
    return _num(None if value is None else value / 2**20, ",.0f")


def target(record: dict[str, Any], algorithm: str) -> float | None:
    """The target samples/s of a `speed` record's model and algorithm (paper preset only)."""
    if record.get("task") != "speed" or record.get("preset") != "paper":
        return None
    model = (record.get("variant") or {}).get("model")
    found = BACKEND_TARGETS.get((record.get("backend"), model, algorithm))
    return found if found is not None else TARGETS.get((model, algorithm))


def speedup_cell(record: dict[str, Any], algorithm: str) -> str:
    """`ratio (reference samples/s)` against the reference re-creation, with ✓/✗ where a
    speed-up target applies (paper preset); empty when the record has no reference timing."""
    against = ((record.get("metrics") or {}).get("reference") or {}).get(algorithm)
    if not against:
        return ""
    text = f"{against['speedup']:.2f}× ({against['reference_samples_per_s']:,.0f})"
    model = (record.get("variant") or {}).get("model")
    goal = REFERENCE_TARGETS.get((model, algorithm)) if record.get("preset") == "paper" else None
    if goal is not None:
        text += f" ≥{goal:g} " + ("✓" if against["speedup"] >= goal else "✗")
    return text


def speed_rows(records: Iterable[dict[str, Any]]) -> list[list[str]]:
    rows = []
    for r in records:
        head = [r["cell"], r["backend"], r.get("device", "cpu"), r["dtype"]]
        speed = (r.get("metrics") or {}).get("speed")
        if r["status"] != "ok" or not speed:
            rows.append(head + ["—"] * 13 + [f"{r['status']}: {(r.get('reason') or '')[:50]}"])
            continue
        for algorithm in ALGORITHMS:
            m = speed.get(algorithm)
            if not m:
                continue
            phases = m.get("phases") or {}
            goal = target(r, algorithm)
            met = "" if goal is None else (" ✓" if m["samples_per_s"] >= goal else " ✗")
            fraction = m.get("flop_fraction")
            rows.append(
                [
                    *head,
                    LABELS.get(algorithm, algorithm),
                    _num(m["samples_per_s"], ",.0f"),
                    _ms(m["step_seconds"]),
                    _ms(phases.get("free")),
                    _ms(phases.get("nudged")),
                    _ms(phases.get("backward")),
                    _num(m.get("compile_seconds"), ".2f"),
                    _mib(m.get("peak_memory_bytes")),
                    _num(m["flops"] / 1e6, ",.1f"),
                    _num(m["achieved_flops_per_s"] / 1e9, ".1f"),
                    _num(None if fraction is None else 100 * fraction, ".0f"),
                    (_num(goal, ",.0f") + met) if goal is not None else "",
                    speedup_cell(r, algorithm),
                    "",
                ]
            )
    return rows


def speed_table(records: Iterable[dict[str, Any]]) -> str:
    """One row per speed record and algorithm (EP, EP symmetric, BPTT). Phases: `free` is the
    free phase (T steps; T − K for BPTT), `nudged` the EP step minus the free phase, `backward`
    the BPTT step minus a free phase of T steps. `% bound`: the FLOP-bound time over the step.
    `× reference`: the same-run speed-up over the backend's re-creation of the paper's
    implementation (epbench.measurements.reference) and, in parentheses, that re-creation's samples/s."""
    headers = [
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
        "% bound",
        "target",
        "× reference",
        "reason",
    ]
    return tabulate(speed_rows(records), headers=headers, tablefmt="github")


def memory_table(records: Iterable[dict[str, Any]]) -> str:
    """One row per memory record and algorithm: peak memory (MiB) per K, with the step's own
    share in parentheses, the slope of the step memory (KiB per unit of K) and the variation of
    the peak over K."""
    records = list(records)
    ks = sorted(
        {k for r in records for k in ((r.get("metrics") or {}).get("memory") or {}).get("K", [])}
    )
    rows = []
    for r in records:
        memory = (r.get("metrics") or {}).get("memory")
        head = [r["cell"], r["backend"], r.get("device", "cpu"), r["dtype"]]
        if r["status"] != "ok" or not memory:
            rows.append(head + ["—"] * (len(ks) + 3) + [f"{r['status']}: {r.get('reason')}"[:60]])
            continue
        for algorithm in ALGORITHMS:
            block = memory.get(algorithm)
            if not block:
                continue
            by_k = dict(
                zip(
                    memory["K"],
                    zip(block["peak_memory_bytes"], block["step_memory_bytes"], strict=True),
                    strict=True,
                )
            )
            cells = [
                f"{_mib(by_k[k][0])} ({by_k[k][1] / 2**20:,.1f})" if k in by_k else "—" for k in ks
            ]
            variation = block.get("variation")
            rows.append(
                [
                    *head,
                    LABELS.get(algorithm, algorithm),
                    *cells,
                    _num(block["slope_bytes_per_k"] / 1024, ",.1f"),
                    _num(None if variation is None else 100 * variation, ".1f"),
                    block.get("method", ""),
                ]
            )
    headers = [
        "cell",
        "backend",
        "device",
        "dtype",
        "algorithm",
        *(f"K={k} MiB (step)" for k in ks),
        "slope KiB/K",
        "peak var. %",
        "measured",
    ]
    return tabulate(rows, headers=headers, tablefmt="github")


def format_speed_record(record: dict[str, Any]) -> str:
    """Heading and table of one speed or memory record (or its status line)."""
    head = (
        f"{record['cell']} · {record['backend']} · {record.get('device', 'cpu')} · "
        f"{record['dtype']} · preset {record['preset']} · {record['measurement']} · "
        f"{record['status']}"
    )
    if record["status"] != "ok":
        return f"{head}: {record.get('reason')}"
    table = speed_table([record]) if record["measurement"] == "speed" else memory_table([record])
    return f"{head}\n{table}"


def speed_parts(records: Iterable[dict[str, Any]]) -> list[str]:
    """The speed and memory tables of the records that have them (for `tables.overview`)."""
    records = list(records)
    speed = [r for r in records if r.get("measurement") == "speed"]
    memory = [r for r in records if r.get("measurement") == "memory"]
    parts = []
    if speed:
        parts.append("speed (one training step; phases in ms):\n" + speed_table(speed))
    if memory:
        parts.append(
            "peak memory of one training step against K (EP flat, BPTT growing):\n"
            + memory_table(memory)
        )
    return parts
