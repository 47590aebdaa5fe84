"""Records → the overview `epbench run` and `epbench table` print, and the text of one record.

Each measurement shows its own records: `overview` groups the records by measurement and asks
each measurement for its table (`Measurement.table`, epbench.core.measurement), and
`format_record` asks the record's measurement for its text (`Measurement.format`). A
measurement the registry does not hold is shown by the suite's own views when it is one of the
suite's (`BUILTIN`), else (a measurement no plugin registers any more) by the generic table and
text: identity, status, reason and the scalar metrics, flattened. The cross-measurement views
follow: the summary over seeds of training runs, the per-depth table (epbench.views.pivot) and,
with `against="paper"`, our Table 1 beside the paper's (docs/theory.md §5).

What comes in: records (`Record`s or the run loop's dicts); `measurements` is the registry's
`{name: Measurement}`. What goes out: text. Tables are views of records, never edited by hand.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from tabulate import tabulate

from epbench.core.record import Record
from epbench.views.convergence import convergence_table, format_convergence
from epbench.views.equivalence import DEFAULT_MARGIN
from epbench.views.format import VIEW_ERRORS, AnyRecord, heading, malformed, reason, records_in
from epbench.views.format import showable as _showable
from epbench.views.gdu import format_gdu, gdu_table, layer_table
from epbench.views.gradient_flow import format_gradient_flow, gradient_flow_table
from epbench.views.paired import paired_table
from epbench.views.parity import format_parity, parity_table
from epbench.views.pivot import depth_table, format_value, has_depths
from epbench.views.profile import format_profile, profile_table
from epbench.views.rtrl import format_rtrl, rtrl_table
from epbench.views.seed_speed import format_seed_speed, seed_speed_table
from epbench.views.speed_tables import format_memory, format_speed, memory_table, speed_table
from epbench.views.sweep import format_sweep, sweep_table
from epbench.views.train import (
    AGAINST,
    PAPER_TABLE1,
    format_train,
    has_several_seeds,
    paper_table,
    seed_groups,
    seed_summary_table,
    train_table,
)

__all__ = [  # the names other modules import from here
    "AGAINST",
    "BUILTIN",
    "PAPER_TABLE1",
    "format_record",
    "generic_table",
    "layer_table",
    "overview",
    "paper_table",
    "parity_table",
    "seed_groups",
    "seed_summary_table",
    "summary_table",
    "train_table",
    "usable",
]

summary_table = gdu_table  # the name of the GDU table before the views were split


@dataclass(frozen=True, kw_only=True)
class View:
    """How the suite shows one measurement's records: `format` one, `table` many, under `title`
    in the overview ("" for none)."""

    format: Callable[[AnyRecord], str]
    table: Callable[[Sequence[AnyRecord]], str]
    title: str = ""


# The suite's own measurements, in the order the overview shows them.
BUILTIN: Mapping[str, View] = MappingProxyType(
    {
        "gdu": View(format=format_gdu, table=gdu_table),
        "rtrl": View(
            format=format_rtrl,
            table=rtrl_table,
            title="RTRL, BPTT and EP on the same batch (steady time, memory):",
        ),
        "beta-sweep": View(
            format=format_sweep,
            table=sweep_table,
            title="β sweep (error against BPTT, log-log slopes):",
        ),
        "train": View(format=format_train, table=train_table),
        "speed": View(
            format=format_speed,
            table=speed_table,
            title="speed (one training step; phases in ms):",
        ),
        "memory": View(
            format=format_memory,
            table=memory_table,
            title="peak memory of one training step against K (EP flat, BPTT growing):",
        ),
        "parity": View(format=format_parity, table=parity_table),
        "profile": View(format=format_profile, table=profile_table),
        "convergence": View(
            format=format_convergence,
            table=convergence_table,
            title="convergence (GDU against the free phase's length T):",
        ),
        "seed-speed": View(
            format=format_seed_speed,
            table=seed_speed_table,
            title="seeds batched (samples of all seeds per second; gain over one seed):",
        ),
        "gradient-flow": View(
            format=format_gradient_flow,
            table=gradient_flow_table,
            title="gradient flow (spectral radius ρ, decay per step back in time):",
        ),
    }
)


def _flat(prefix: str, value: Any) -> list[tuple[str, Any]]:
    """(dotted name, value) of every number, string or boolean below `value`."""
    if isinstance(value, Mapping):
        return [row for k, v in value.items() for row in _flat(f"{prefix}{k}.", v)]
    if isinstance(value, (int, float, str, bool)) or value is None:
        return [(prefix.rstrip("."), value)]
    return []  # lists (curves, per-step series) are not scalars


def scalar_metrics(record: Record) -> dict[str, Any]:
    """The record's scalar metrics, flattened: `{"gdu.W0_1.cosine": 0.99, …}`."""
    return dict(_flat("", record.metrics))


def generic_table(records: Iterable[AnyRecord]) -> str:
    """One row per record of a measurement no view knows: cell, backend, dtype, seed, status,
    reason, and one column per scalar metric (flattened; — where a record has none)."""
    records = records_in(records)
    flat = [scalar_metrics(r) for r in records]
    names = list(dict.fromkeys(name for metrics in flat for name in metrics))
    rows = [
        [r.cell, r.backend, r.dtype, r.seed, r.status, reason(r, 60)]
        + [format_value(metrics.get(name)) for name in names]
        for r, metrics in zip(records, flat, strict=True)
    ]
    headers = ["cell", "backend", "dtype", "seed", "status", "reason", *names]
    return tabulate(rows, headers=headers, tablefmt="github")


def format_generic(record: AnyRecord) -> str:
    """Heading (with the measurement) and the scalar metrics of one record, or its reason."""
    r = records_in([record])[0]
    head = heading(r, measurement=True)
    if r.status != "ok":
        return f"{head}: {r.reason}"
    rows = [[name, format_value(value)] for name, value in scalar_metrics(r).items()]
    return f"{head}\n" + tabulate(rows, headers=["metric", "value"], tablefmt="github")


def _view(name: str, measurements: Mapping[str, Any] | None) -> View:
    """The view of measurement `name`: the registered measurement's (`measurements`), else the
    suite's own (`BUILTIN`: its records still show while no plugin registers it), else the
    generic one."""
    builtin = BUILTIN.get(name)
    found = (measurements or {}).get(name)
    if found is not None:
        title = builtin.title if builtin is not None else f"{name}:"
        return View(format=found.format, table=found.table, title=title)
    if builtin is not None:
        return builtin
    return View(format=format_generic, table=generic_table, title=f"{name}:")


def format_record(record: AnyRecord, measurements: Mapping[str, Any] | None = None) -> str:
    """The text of one record, from its measurement (`measurements`, the registry's
    `{name: Measurement}`; `_view` says which view when it is not there); for a record whose
    metrics its view cannot show, its heading and the problem (`malformed`)."""
    r = records_in([record])[0]
    try:
        return _view(r.measurement, measurements).format(r)
    except VIEW_ERRORS as err:
        return f"{heading(r, measurement=True)}: {malformed(r, err)}"


def _show_one(record: Record, measurements: Mapping[str, Any] | None) -> None:
    """Every view of the overview and the report applied to one record (raises what a view
    raises on malformed metrics)."""
    view = _view(record.measurement, measurements)
    view.format(record)
    view.table([record])
    if record.measurement == "train":
        seed_summary_table([record])
        paper_table([record])
    if record.measurement in ("gdu", "train") and record.depth is not None:
        depth_table([record])


def usable(
    records: Iterable[AnyRecord], measurements: Mapping[str, Any] | None = None
) -> list[Record]:
    """The records every view can show (`_show_one`); each other one is reported on stderr in
    one line and skipped, and a `ResultsError` says so when none remains (`showable`)."""
    return _showable(records_in(records), lambda r: _show_one(r, measurements))


def by_measurement(records: Iterable[Record]) -> dict[str, list[Record]]:
    """The records grouped by measurement: the suite's own in `BUILTIN` order, then the others
    in the order they first appear."""
    groups: dict[str, list[Record]] = {name: [] for name in BUILTIN}
    for r in records:
        groups.setdefault(r.measurement, []).append(r)
    return {name: found for name, found in groups.items() if found}


def overview(
    records: Iterable[AnyRecord],
    *,
    measurements: Mapping[str, Any] | None = None,
    against: str | None = None,
    margin: float = DEFAULT_MARGIN,
) -> str:
    """What `epbench run` and `epbench table` print (module doc): a table per measurement (the
    GDU table alone, empty, when there are no records), the summary over seeds when a training
    run has several, the per-depth table when a task spans depths, and with `against="paper"`
    our Table 1 beside the paper's and the paired statistics of each EP estimator against BPTT
    (equivalence at ±`margin` points, epbench.views.paired)."""
    records = usable(records, measurements)
    parts = []
    for name, found in by_measurement(records).items():
        view = _view(name, measurements)
        table = view.table(found)
        parts.append(f"{view.title}\n{table}" if view.title else table)
        if name == "train" and has_several_seeds(found):
            parts.append("over seeds (final epoch):\n" + seed_summary_table(found))
    if not records:
        parts.append(gdu_table([]))
    if has_depths(records):  # gdu and train joined per depth
        parts.append("by depth:\n" + depth_table(records))
    if against == "paper":
        train = [r for r in records if r.measurement == "train"]
        parts.append("against the paper (docs/theory.md §5, Table 1):\n" + paper_table(train))
        parts.append(
            "EP against BPTT, paired by seed (docs/theory.md §5.1; TOST at α = 0.05):\n"
            + paired_table(train, margin=margin)
        )
    return "\n\n".join(parts)
