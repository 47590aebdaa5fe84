"""Records → tables (tabulate). Tables are views of records, never edited by hand."""

from __future__ import annotations

import math
from collections.abc import Iterable
from types import MappingProxyType
from typing import Any

from tabulate import tabulate

from epbench.core.params import layer_of
from epbench.measurements.rtrl import rtrl_table
from epbench.views.pivot import depth_table, format_sweep_record, has_depths, sweep_table
from epbench.views.speed_tables import format_speed_record, speed_parts


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
    """The heading and per-layer table of one record (or its status line); training records get
    their per-epoch curves (`format_train_record`)."""
    if record.get("measurement") == "train":
        return format_train_record(record)
    if record.get("measurement") in ("speed", "memory"):
        return format_speed_record(record)
    if record.get("measurement") == "beta-sweep":
        return format_sweep_record(record)
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
    saturated = metrics.get("saturated_outputs")
    if saturated:  # hardsigm or clamp models with output units at 0 or 1 at the fixed point
        nudge = (record.get("config") or {}).get("dynamics", {}).get("nudge", "output")
        tail += (
            f"\n{100 * saturated:.0f} % of output units at 0 or 1 at the fixed point (σ' = 0: "
            + (
                "BPTT passes them no gradient, the paper's nudge still moves them; "
                "--set dynamics.nudge=unsaturated nudges only the others)"
                if nudge == "output"
                else "not nudged, dynamics.nudge = unsaturated)"
            )
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


# --- training (epbench.measurements.training) ---------------------------------------------------------------

# PAPER.md §5, Table 1 as the paper reports it: epochs, then the test error (%) of EP and of BPTT.
# The fully connected models reach "about 2 %" with both; P-conv ≈ 1.0 % (EP) and ≈ 0.9 % (BPTT).
PAPER_TABLE1 = MappingProxyType(
    {
        "EB-1h": (30, 2.0, 2.0),
        "EB-2h": (50, 2.0, 2.0),
        "P-1h": (30, 2.0, 2.0),
        "P-2h": (50, 2.0, 2.0),
        "P-3h": (100, 2.0, 2.0),
        "P-conv": (40, 1.0, 0.9),
    }
)
AGAINST = ("paper",)


def _train(record: dict[str, Any], algorithm: str) -> dict[str, Any]:
    return ((record.get("metrics") or {}).get("train") or {}).get(algorithm) or {}


def _last(values: Any) -> float | None:
    return values[-1] if values else None


def _mean(values: Any) -> float | None:
    values = [v for v in values or [] if v is not None]
    return sum(values) / len(values) if values else None


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def _paired(record: dict[str, Any]) -> float | None:
    return ((record.get("metrics") or {}).get("ep_minus_bptt") or {}).get("test_error")


def train_table(records: Iterable[dict[str, Any]]) -> str:
    """One row per training record: the last epoch's test and train errors of EP and BPTT (%),
    their paired difference, the mean seconds per training epoch, the EP/BPTT time ratio and the
    samples/s of each algorithm (or the reason of a skip, failure or divergence)."""
    rows = []
    for r in records:
        ep, bptt = _train(r, "ep"), _train(r, "bptt")
        ep_s, bptt_s = _mean(ep.get("epoch_seconds")), _mean(bptt.get("epoch_seconds"))
        rows.append(
            [
                r["cell"],
                r["preset"],
                r["backend"],
                r.get("device", "cpu"),
                r["dtype"],
                r["seed"],
                r["status"],
                f"{ep.get('epochs_done', 0)}/{bptt.get('epochs_done', 0)}" if ep else "—",
                _num(_last(ep.get("test_error")), ".2f"),
                _num(_last(bptt.get("test_error")), ".2f"),
                _num(_paired(r), "+.2f"),
                _num(_last(ep.get("train_error")), ".2f"),
                _num(_last(bptt.get("train_error")), ".2f"),
                _num(ep_s, ".2f"),
                _num(bptt_s, ".2f"),
                _num(_ratio(ep_s, bptt_s), ".2f"),
                _num(ep.get("samples_per_s"), ",.0f"),
                _num(bptt.get("samples_per_s"), ",.0f"),
                (r.get("reason") or "")[:60],
            ]
        )
    headers = [
        "cell",
        "preset",
        "backend",
        "device",
        "dtype",
        "seed",
        "status",
        "epochs EP/BPTT",
        "EP test %",
        "BPTT test %",
        "EP − BPTT",
        "EP train %",
        "BPTT train %",
        "EP s/epoch",
        "BPTT s/epoch",
        "EP/BPTT time",
        "EP img/s",
        "BPTT img/s",
        "reason",
    ]
    return tabulate(rows, headers=headers, tablefmt="github")


def _mean_std(values: list[float], fmt: str = ".2f") -> str:
    """`mean ± std` (sample std, n − 1) of a list, `mean` alone for one value, — for none."""
    if not values:
        return "—"
    mean = sum(values) / len(values)
    if len(values) == 1:
        return format(mean, fmt)
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))
    return f"{format(mean, fmt)} ± {format(std, fmt.replace('+', ''))}"


def seed_groups(records: Iterable[dict[str, Any]]) -> dict[tuple, dict[int, dict[str, Any]]]:
    """Training records grouped by run (cell, preset, backend, device, dtype, configuration hash),
    then by seed; the last record of a seed wins (a rerun replaces an earlier one)."""
    groups: dict[tuple, dict[int, dict[str, Any]]] = {}
    for r in records:
        if r.get("measurement") != "train" or r.get("status") == "skipped":
            continue
        key = (
            r["cell"],
            r["preset"],
            r["backend"],
            r.get("device", "cpu"),
            r["dtype"],
            r.get("config_hash"),
        )
        groups.setdefault(key, {})[r["seed"]] = r
    return groups


def _summary(by_seed: dict[int, dict[str, Any]]) -> dict[str, Any]:
    """Over the seeds of one group whose EP and BPTT runs both completed: final test errors, the
    EP − BPTT differences paired seed by seed, seconds per epoch, samples/s."""
    ok = [r for _, r in sorted(by_seed.items()) if r["status"] == "ok" and _paired(r) is not None]

    def values(algorithm: str, key: str, pick: Any) -> list[float]:
        found = [pick(_train(r, algorithm).get(key)) for r in ok]
        return [v for v in found if v is not None]

    ep_s, bptt_s = values("ep", "epoch_seconds", _mean), values("bptt", "epoch_seconds", _mean)
    return {
        "seeds": [s for s, r in sorted(by_seed.items()) if r in ok],
        "not_ok": sorted(s for s, r in by_seed.items() if r not in ok),
        "ep_test": values("ep", "test_error", _last),
        "bptt_test": values("bptt", "test_error", _last),
        "paired": [_paired(r) for r in ok],
        "ep_seconds": ep_s,
        "bptt_seconds": bptt_s,
        "ratio": _ratio(_mean(ep_s), _mean(bptt_s)),
        "ep_speed": values("ep", "samples_per_s", lambda v: v),
        "bptt_speed": values("bptt", "samples_per_s", lambda v: v),
        "epochs": values("ep", "test_error", len),
    }


def seed_summary_table(records: Iterable[dict[str, Any]]) -> str:
    """One row per run over its seeds: final test errors mean ± std, the EP − BPTT difference
    paired by seed (mean ± std), seconds per epoch, EP/BPTT time ratio, samples/s."""
    rows = []
    for (cell, preset, backend, device, dtype, _), by_seed in seed_groups(records).items():
        s = _summary(by_seed)
        rows.append(
            [
                cell,
                preset,
                backend,
                device,
                dtype,
                ",".join(map(str, s["seeds"])) or "—",
                ",".join(map(str, s["not_ok"])) or "",
                _mean_std(s["ep_test"]),
                _mean_std(s["bptt_test"]),
                _mean_std(s["paired"], "+.2f"),
                _mean_std(s["ep_seconds"]),
                _mean_std(s["bptt_seconds"]),
                _num(s["ratio"], ".2f"),
                _mean_std(s["ep_speed"], ",.0f"),
                _mean_std(s["bptt_speed"], ",.0f"),
            ]
        )
    headers = [
        "cell",
        "preset",
        "backend",
        "device",
        "dtype",
        "seeds",
        "not ok",
        "EP test %",
        "BPTT test %",
        "EP − BPTT (paired)",
        "EP s/epoch",
        "BPTT s/epoch",
        "EP/BPTT time",
        "EP img/s",
        "BPTT img/s",
    ]
    return tabulate(rows, headers=headers, tablefmt="github")


def paper_table(records: Iterable[dict[str, Any]]) -> str:
    """Our final test errors (mean ± std over seeds) beside the paper's (PAPER.md §5, Table 1,
    MNIST only), with the epochs run against the paper's, seconds per epoch and the EP/BPTT time
    ratio the reviewers asked for. Models the paper does not list, or other datasets, show —."""
    rows = []
    for (cell, preset, backend, device, dtype, _), by_seed in seed_groups(records).items():
        s = _summary(by_seed)
        some = next(iter(by_seed.values()))
        model = (some.get("variant") or {}).get("model", cell)
        source = ((some.get("config") or {}).get("data") or {}).get("source", "mnist")
        paper = PAPER_TABLE1.get(model) if source == "mnist" else None
        epochs = sorted(set(s["epochs"]))
        rows.append(
            [
                model,
                preset,
                source,
                backend,
                device,
                dtype,
                f"{'/'.join(map(str, epochs)) or '—'} / {paper[0] if paper else '—'}",
                len(s["seeds"]),
                _mean_std(s["ep_test"]),
                f"≈ {paper[1]:.1f}" if paper else "—",
                _mean_std(s["bptt_test"]),
                f"≈ {paper[2]:.1f}" if paper else "—",
                _mean_std(s["paired"], "+.2f"),
                _mean_std(s["ep_seconds"]),
                _mean_std(s["bptt_seconds"]),
                _num(s["ratio"], ".2f"),
            ]
        )
    headers = [
        "model",
        "preset",
        "data",
        "backend",
        "device",
        "dtype",
        "epochs (ours / paper)",
        "seeds",
        "EP test % (ours)",
        "EP (paper)",
        "BPTT test % (ours)",
        "BPTT (paper)",
        "EP − BPTT",
        "EP s/epoch",
        "BPTT s/epoch",
        "EP/BPTT time",
    ]
    return tabulate(rows, headers=headers, tablefmt="github")


def format_train_record(record: dict[str, Any]) -> str:
    """Heading, per-epoch curves of EP and BPTT, and the run's speed, memory and warm-up time."""
    head = (
        f"{record['cell']} · {record['backend']} · {record.get('device', 'cpu')} · "
        f"{record['dtype']} · seed {record['seed']} · preset {record['preset']} · "
        f"{record['status']}"
    )
    if record["status"] in ("skipped", "failed"):
        return f"{head}: {record.get('reason')}"
    ep, bptt = _train(record, "ep"), _train(record, "bptt")
    epochs = max(len(ep.get("test_error", [])), len(bptt.get("test_error", [])))

    def at(block: dict[str, Any], key: str, i: int, fmt: str) -> str:
        values = block.get(key) or []
        return _num(values[i] if i < len(values) else None, fmt)

    rows = [
        [i + 1]
        + [
            at(block, key, i, fmt)
            for block in (ep, bptt)
            for key, fmt in (
                ("train_error", ".2f"),
                ("test_error", ".2f"),
                ("loss", ".4f"),
                ("epoch_seconds", ".2f"),
            )
        ]
        for i in range(epochs)
    ]
    headers = ["epoch"] + [
        f"{a} {what}" for a in ("EP", "BPTT") for what in ("train %", "test %", "loss", "s")
    ]
    lines = [head, tabulate(rows, headers=headers, tablefmt="github")]
    for name, block in (("EP", ep), ("BPTT", bptt)):
        resumed = block.get("resumed_from")
        lines.append(
            f"{name}: {_num(block.get('samples_per_s'), ',.0f')} img/s, warm-up "
            f"{_num(block.get('compile_seconds'), '.2f')} s, peak memory "
            f"{_num((block.get('peak_memory_bytes') or 0) / 2**20, ',.0f')} MiB"
            + (f", resumed after epoch {resumed}" if resumed else "")
        )
    if record["status"] == "diverged":
        lines.append(f"diverged: {record.get('reason')}")
    return "\n".join(lines)


def overview(records: list[dict[str, Any]], *, against: str | None = None) -> str:
    """What `epbench run` and `epbench table` print: the GDU summary (when there are GDU records),
    the training table, the seed summary (when a run has several seeds), and with
    `against="paper"` our Table 1 beside the paper's."""
    skip = ("train", "speed", "memory", "beta-sweep", "rtrl")
    gdu = [r for r in records if r.get("measurement") not in skip]
    train = [r for r in records if r.get("measurement") == "train"]
    speed = speed_parts(records)  # epbench.views.speed_tables
    sweeps = [r for r in records if r.get("measurement") == "beta-sweep"]
    rtrl = [r for r in records if r.get("measurement") == "rtrl"]
    parts = [summary_table(gdu)] if gdu or not (train or speed or sweeps or rtrl) else []
    if rtrl:  # epbench.measurements.rtrl
        parts.append(
            "RTRL, BPTT and EP on the same batch (steady time, memory):\n" + rtrl_table(rtrl)
        )
    if sweeps:  # epbench.views.pivot
        parts.append("β sweep (error against BPTT, log-log slopes):\n" + sweep_table(sweeps))
    if train:
        parts.append(train_table(train))
        if any(len(by_seed) > 1 for by_seed in seed_groups(train).values()):
            parts.append("over seeds (final epoch):\n" + seed_summary_table(train))
    parts += speed
    if has_depths(records):  # epbench.views.pivot: gdu and train joined per depth
        parts.append("by depth:\n" + depth_table(records))
    if against == "paper":
        parts.append("against the paper (PAPER.md §5, Table 1):\n" + paper_table(train))
    return "\n\n".join(parts)
