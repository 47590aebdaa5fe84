"""Records → tables (tabulate). Tables are views of records, never edited by hand."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from tabulate import tabulate

from .params import layer_of


def _num(value: Any, fmt: str = ".4f") -> str:
    return "—" if value is None else format(value, fmt)


def layer_table(record: dict[str, Any]) -> str:
    """Per canonical name of one GDU record: RMSE (mean ± std over components), cosine of the
    totals, sign agreement, relative error ‖ΔEP + ∇BPTT‖ / ‖∇BPTT‖. Parameters first, by layer."""
    gdu = record.get("metrics", {}).get("gdu", {})
    names = sorted(gdu, key=lambda n: (n.startswith("s"), layer_of(n), n))
    rows = [
        [
            name,
            layer_of(name),
            f"{_num(m['rmse'])} ± {_num(m['rmse_std'])}",
            _num(m["cosine"], ".6f"),
            _num(m["sign"], ".3f"),
            _num(m["rel_error"], ".2e"),
        ]
        for name, m in ((n, gdu[n]) for n in names)
    ]
    headers = ["name", "layer", "RMSE (mean ± std)", "cosine (total)", "sign", "rel. error"]
    return tabulate(rows, headers=headers, tablefmt="github")


def _worst(record: dict[str, Any], key: str, pick: Any) -> Any:
    values = [
        m[key] for m in record.get("metrics", {}).get("gdu", {}).values() if m.get(key) is not None
    ]
    return pick(values) if values else None


def summary_table(records: Iterable[dict[str, Any]]) -> str:
    """One row per record: cell, backend, dtype, seed, status, residual, worst RMSE and cosine,
    steady-state seconds (or the reason of a skip/failure)."""
    rows = []
    for r in records:
        timings = r.get("timings") or {}
        rows.append(
            [
                r["cell"],
                r["preset"],
                r["backend"],
                r["dtype"],
                r["seed"],
                r["status"],
                _num((r.get("metrics") or {}).get("residual"), ".1e"),
                _num(_worst(r, "rmse", max)),
                _num(_worst(r, "cosine", min), ".6f"),
                _num(timings.get("steady_seconds"), ".3f"),
                _num(timings.get("first_seconds"), ".3f"),
                (r.get("reason") or "")[:60],
            ]
        )
    headers = [
        "cell",
        "preset",
        "backend",
        "dtype",
        "seed",
        "status",
        "residual",
        "max RMSE",
        "min cosine",
        "steady s",
        "first s",
        "reason",
    ]
    return tabulate(rows, headers=headers, tablefmt="github")


def format_record(record: dict[str, Any]) -> str:
    """The heading and per-layer table of one record (or its status line)."""
    head = (
        f"{record['cell']} · {record['backend']} · {record['dtype']} · seed {record['seed']}"
        f" · preset {record['preset']} · {record['status']}"
    )
    if record["status"] != "ok":
        return f"{head}: {record.get('reason')}"
    metrics = record["metrics"]
    timings = record.get("timings") or {}
    tail = (
        f"residual ‖s_T − s_(T−1)‖ = {metrics['residual']:.2e}; steady "
        f"{_num(timings.get('steady_seconds'), '.3f')} s, first run "
        f"{_num(timings.get('first_seconds'), '.3f')} s"
    )
    return f"{head}\n{layer_table(record)}\n{tail}"


def parity_table(records: Iterable[dict[str, Any]]) -> str:
    """One row per compared pair: the largest relative difference per compared quantity."""
    groups = ["free states", "EP traces", "BPTT traces", "EP step", "BPTT step"]
    rows = []
    for r in records:
        per_group = (r.get("metrics") or {}).get("parity", {}).get("per_group", {})
        rows.append(
            [r["cell"], r["dtype"], f"{r['reference']} ↔ {r['backend']}"]
            + [_num(per_group.get(g), ".1e") for g in groups]
            + [r["status"], (r.get("reason") or "")[:50]]
        )
    headers = ["cell", "dtype", "backends", *groups, "status", "reason"]
    return tabulate(rows, headers=headers, tablefmt="github")
