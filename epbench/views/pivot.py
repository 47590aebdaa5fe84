"""Records → pivot tables and the per-depth table (views, like epbench.views.tables).

`pivot_table(records, key=…, metric=…)` puts the values of one key in the columns: rows are the
cells without that key, cells hold one metric (`METRICS`, or a dotted path into the record). The
key is a record field (`depth`, `estimator`, `angle`, `backend`, …), a variant axis of the cells
(`model`, or an axis added with `--sweep`), or a dotted path into the resolved configuration
(`dynamics.estimator`, `model.activation`).

What comes in: records (`Record`s or the run loop's dicts). What goes out: rows and text.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterable, Mapping
from types import MappingProxyType
from typing import Any

from tabulate import tabulate

from epbench.core.errors import EpbenchError
from epbench.core.params import layer_of
from epbench.core.record import Record, metrics_of
from epbench.views.format import AnyRecord, records_in, showable
from epbench.views.gdu import gdu_values, per_name
from epbench.views.train import paired, train_run

_MISSING = object()


def _path(node: Any, dotted: str) -> Any:
    """`node["a"]["b"]` for "a.b"; `_MISSING` where a step is absent."""
    for part in dotted.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return _MISSING
        node = node[part]
    return node


def key_value(record: AnyRecord, key: str) -> Any:
    """The value of `key` in a record: a top-level field, else a variant axis, else a dotted path
    into `config`, else a dotted path into the record; `_MISSING` when none has it."""
    r = records_in([record])[0]
    raw = r.to_dict()
    value = raw.get(key, _MISSING)
    if value is not _MISSING and not isinstance(value, Mapping):
        return value
    if key in r.variant:
        return r.variant[key]
    value = _path(r.config, key)
    return value if value is not _MISSING else _path(raw, key)


def _pick(values: list[float], how: Callable[[list[float]], float]) -> float | None:
    return how(values) if values else None


def _train_last(record: Record, algorithm: str) -> float | None:
    curve = train_run(record, algorithm).get("test_error")
    return curve[-1] if curve else None


def _slope(estimator: str) -> Callable[[Record], Any]:
    return lambda r: metrics_of(r, "slope").get(estimator)


def _scalar(name: str) -> Callable[[Record], Any]:
    return lambda r: r.metrics.get(name)


def _gdu(key: str, how: Callable[[list[float]], float]) -> Callable[[Record], Any]:
    return lambda r: _pick(gdu_values(r, key), how)


# Named metrics of `pivot_table`: name → (description, value of one record or None).
METRICS: Mapping[str, tuple[str, Callable[[Record], Any]]] = MappingProxyType(
    {
        "residual": ("free-phase residual", _scalar("residual")),
        "saturated": (
            "share of output units at 0 or 1 at the fixed point (GDU; hardsigm or clamp)",
            _scalar("saturated_outputs"),
        ),
        "rmse": ("largest RMSE over names (GDU)", _gdu("rmse", max)),
        "cosine": ("smallest cosine over names (GDU)", _gdu("cosine", min)),
        "sign": ("smallest sign agreement (GDU)", _gdu("sign", min)),
        "rel_error": ("largest relative error (GDU)", _gdu("rel_error", max)),
        "signal_steps": (
            "steps for the signal to reach the deepest layer",
            _scalar("signal_steps"),
        ),
        "ep_test": ("EP test error % (last epoch)", lambda r: _train_last(r, "ep")),
        "bptt_test": ("BPTT test error % (last epoch)", lambda r: _train_last(r, "bptt")),
        "ep_minus_bptt": ("EP − BPTT test error % (paired)", paired),
        "slope_positive": ("β-sweep log-log slope, +β", _slope("positive")),
        "slope_negative": ("β-sweep log-log slope, −β", _slope("negative")),
        "slope_symmetric": ("β-sweep log-log slope, ±β", _slope("symmetric")),
    }
)


def metric_value(record: AnyRecord | None, metric: str) -> Any:
    """A named metric (`METRICS`) of a record, or the number at a dotted path into the record
    (`metrics.gdu.W0_1.cosine`); None when absent (or when there is no record)."""
    if record is None:
        return None
    r = records_in([record])[0]
    if metric in METRICS:
        return METRICS[metric][1](r)
    value = _path(r.to_dict(), metric)
    return None if value is _MISSING else value


def check_metric(records: Iterable[AnyRecord], metric: str) -> None:
    """Return when `metric` is a named metric (`METRICS`) or a dotted path that at least one of
    `records` holds; else an EpbenchError listing the named metrics (and the nearest one)."""
    if metric in METRICS or any(
        _path(r.to_dict(), metric) is not _MISSING for r in records_in(records)
    ):
        return
    near = difflib.get_close_matches(metric, list(METRICS), n=1)
    hint = f" (did you mean {near[0]!r}?)" if near else ""
    raise EpbenchError(
        f"--metric: expected one of {', '.join(METRICS)} or a dotted path into the records "
        f"(metrics.gdu.W0_1.rmse), found {metric!r}{hint}"
    )


def format_value(value: Any) -> str:
    """A table entry: — for None, floats in 4 significant digits (or e-notation), else str."""
    if value is None:
        return "—"
    if isinstance(value, float):
        if value != 0 and (abs(value) < 1e-3 or abs(value) >= 1e5):
            return f"{value:.2e}"
        return f"{value:.4g}"
    return str(value)


def _sort_key(value: Any) -> tuple:
    if value is None:
        return (0, 0.0, "")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return (1, float(value), "")
    return (2, 0.0, str(value))


def _setting(record: Record) -> Any:
    """The model setting (EB or P) of the record's configuration, or None."""
    value = _path(record.config, "model.setting")
    return None if value is _MISSING else value


def _ident(r: Record) -> tuple:
    """What a pivot row shares besides the variant axes."""
    return (r.task, r.preset, r.measurement, r.backend, r.device, r.dtype, _setting(r))


def _kept_axes(records: list[Record], key: str) -> list[str]:
    """The variant axes other than `key` that `key` does not determine (`pivot_rows`)."""
    axes = {a for r in records for a in r.variant if a != key}
    seen: dict[tuple, dict[str, set]] = {}
    for r in records:
        group = seen.setdefault((_ident(r), str(key_value(r, key))), {})
        for axis in axes:
            group.setdefault(axis, set()).add(r.variant.get(axis))
    return sorted(a for a in axes if any(len(g.get(a, ())) > 1 for g in seen.values()))


def _entry(found: list[Record], metric: str) -> Any:
    """The mean of the metric over the ok records (several seeds), else the last value, else the
    status of the last record, else None."""
    values = [metric_value(r, metric) for r in found if r.status == "ok"]
    numbers = [v for v in values if isinstance(v, (int, float)) and v is not None]
    if numbers and len(numbers) == len(values):
        return sum(numbers) / len(numbers)
    if values:
        return values[-1]
    return found[-1].status if found else None


def pivot_rows(
    records: Iterable[AnyRecord], *, key: str, metric: str
) -> tuple[list[str], list[Any], list[list[Any]]]:
    """(row headers, column values, rows) of `pivot_table`, before formatting.

    A row is the records equal on task, preset, measurement, backend, device, dtype, model
    setting and every variant axis except `key` and the axes that `key` determines (an axis whose
    value is the same for all records with the same key value and identity fields, like `model`
    = P-3h for depth 3). A cell holds the mean of the metric over the row's `ok` records with that
    key value (several seeds), or the status of the others when none is ok. Rows without a single
    value are left out. An unknown `metric` is an EpbenchError (`check_metric`).
    """
    records = [r for r in records_in(records) if key_value(r, key) is not _MISSING]
    records = showable(records, lambda r: format_value(_entry([r], metric)))
    if not records:
        raise EpbenchError(
            f"--pivot: no record has the key {key!r} (a record field, a variant "
            "axis or a dotted config path such as dynamics.estimator)"
        )
    check_metric(records, metric)
    kept = _kept_axes(records, key)
    table: dict[tuple, dict[Any, list[Record]]] = {}
    for r in records:
        row = (*_ident(r), tuple((a, r.variant.get(a)) for a in kept))
        table.setdefault(row, {}).setdefault(key_value(r, key), []).append(r)
    columns = sorted({v for cols in table.values() for v in cols}, key=_sort_key)
    rows = []
    for row, cols in table.items():
        task, preset, measurement, backend, _, dtype, setting, kept_axes = row
        cells = [_entry(cols.get(column, []), metric) for column in columns]
        if all(c is None for c in cells):
            continue
        label = task + ("[" + ",".join(f"{a}={v}" for a, v in kept_axes) + "]" if kept else "")
        rows.append([label, setting, measurement, backend, dtype, preset, *cells])
    headers = ["cells", "setting", "measurement", "backend", "dtype", "preset"]
    return headers, columns, rows


def pivot_table(records: Iterable[AnyRecord], *, key: str, metric: str) -> str:
    """Rows = cells without `key`, columns = the values of `key`, entries = `metric`
    (`pivot_rows`), as a GitHub-style table headed by the metric's description."""
    headers, columns, rows = pivot_rows(records, key=key, metric=metric)
    what = METRICS[metric][0] if metric in METRICS else metric
    table = tabulate(
        [row[:6] + [format_value(v) for v in row[6:]] for row in rows],
        headers=headers + [f"{key}={format_value(c)}" for c in columns],
        tablefmt="github",
    )
    return f"{what} by {key}:\n{table}"


# --- per depth --------------------------------------------------------------------------------


def _per_layer(record: Record, key: str, how: Callable[[list[float]], float]) -> str:
    """`key` per layer 0 … N (`how` over the layer's parameter names), as "a / b / …"."""
    layers: dict[int, list[float]] = {}
    for name, m in per_name(record).items():
        if not name.startswith("s") and m.get(key) is not None:
            layers.setdefault(layer_of(name), []).append(m[key])
    return " / ".join(f"{how(layers[n]):.3f}" for n in sorted(layers)) or "—"


DEPTH_HEADERS = (
    "task",
    "preset",
    "setting",
    "estimator",
    "angle",
    "backend",
    "depth",
    "GDU T/K",
    "residual",
    "signal steps EP (BPTT)",
    "max RMSE",
    "min cosine",
    "RMSE per layer (0…N)",
    "cosine per layer (0…N)",
    "EP test %",
    "BPTT test %",
    "train status",
)


def _gdu_part(gdu: Record | None, depth: int) -> list[Any]:
    """The GDU columns of a `depth_table` row (T/K, residual, signal steps, RMSE, cosine)."""
    dynamics = gdu.config.get("dynamics") if gdu is not None else None
    dynamics = dynamics if isinstance(dynamics, Mapping) else {}
    t_k = f"{dynamics.get('T', '—')}/{dynamics.get('K', '—')}"
    if gdu is None or gdu.status != "ok":
        return [t_k, "—" if gdu is None else gdu.status, *["—"] * 5]
    deepest = (metrics_of(gdu, "arrival").get("bptt") or {}).get(f"s{depth}")
    return [
        t_k,
        format_value(metric_value(gdu, "residual")),
        f"{format_value(metric_value(gdu, 'signal_steps'))} ({format_value(deepest)})",
        format_value(metric_value(gdu, "rmse")),
        format_value(metric_value(gdu, "cosine")),
        _per_layer(gdu, "rmse", max),
        _per_layer(gdu, "cosine", min),
    ]


def depth_table(records: Iterable[AnyRecord]) -> str:
    """One row per task, preset, model setting, estimator, feedback angle, backend, dtype and
    depth, joining that depth's `gdu` and `train` records (tasks/depth-scaling.toml): residual,
    the T and K of the GDU run (gdu and train may differ in dtype, width and activation: see
    the task), the steps the signal needs to reach the deepest layer (EP, and
    BPTT's exact count), the largest RMSE and smallest cosine over the parameters, both per layer
    (layer 0 = output first, over the layer's weights and bias), and the last EP and BPTT test
    errors. The first record of a kind wins per row (one seed)."""
    rows: dict[tuple, dict[str, Record]] = {}
    for r in records_in(records):
        if r.measurement not in ("gdu", "train") or r.depth is None:
            continue
        key = (r.task, r.preset, _setting(r), r.estimator, r.angle, r.backend, r.depth)
        rows.setdefault(key, {}).setdefault(r.measurement, r)
    out = []
    for (task, preset, setting, estimator, angle, backend, depth), found in sorted(
        rows.items(), key=lambda item: tuple(_sort_key(v) for v in item[0])
    ):
        train = found.get("train")
        head = [task, preset, setting, estimator, "—" if angle is None else angle, backend, depth]
        tail = [
            format_value(metric_value(train, "ep_test")),
            format_value(metric_value(train, "bptt_test")),
            train.status if train is not None else "—",
        ]
        out.append([*head, *_gdu_part(found.get("gdu"), depth), *tail])
    return tabulate(out, headers=list(DEPTH_HEADERS), tablefmt="github")


def has_depths(records: Iterable[AnyRecord]) -> bool:
    """True when some task's gdu records span two or more depths (`depth_table` then joins them
    with that task's training runs, which a per-cell table does not). A task that only trains
    (table1 over its models) has its own tables, over every seed; `depth_table` keeps one."""
    depths: dict[Any, set] = {}
    for r in records_in(records):
        if r.measurement == "gdu" and r.depth is not None:
            depths.setdefault(r.task, set()).add(r.depth)
    return any(len(d) > 1 for d in depths.values())
