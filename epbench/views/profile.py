"""The view of `profile` records (epbench.measurements.profile): per algorithm the time per step
under cProfile, the top of its table, and the backend profiler's summary."""

from __future__ import annotations

from typing import Any


def format_profile(record: dict[str, Any]) -> str:
    """What `epbench profile` prints for one record: per algorithm the time per step, the top
    of the cProfile table and the backend profiler's summary."""
    head = f"{record['cell']} · {record['backend']} · {record['device']}"
    if record["status"] != "ok":
        return f"{head}: {record['status']}: {record.get('reason')}"
    parts = []
    for name, out in record["metrics"]["profile"].items():
        lines = out["cprofile_summary"].strip().splitlines()
        parts.append(
            f"{head} · {name}: {out['seconds_per_step'] * 1e3:,.2f} ms per step under cProfile "
            f"({out['cprofile']})\n" + "\n".join(lines[:25])
        )
        if out["backend_summary"]:
            parts.append(f"{record['backend']} profiler:\n{out['backend_summary']}")
    return "\n\n".join(parts)


def profile_table(records: list[dict[str, Any]]) -> str:
    """Every profile record, one after the other (`format_profile`)."""
    return "\n\n".join(format_profile(record) for record in records)
