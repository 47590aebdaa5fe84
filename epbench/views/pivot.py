"""Records → pivot tables, the per-depth table and the β-sweep table (views, like epbench.views.tables).

`pivot_table(records, key=…, metric=…)` puts the values of one key in the columns: rows are the
cells without that key, cells hold one metric (`METRICS`, or a dotted path into the record). The
key is a record field (`depth`, `estimator`, `angle`, `backend`, …), a variant axis of the cells
(`model`, or an axis added with `--sweep`), or a dotted path into the resolved configuration
(`dynamics.estimator`, `model.activation`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from tabulate import tabulate

from epbench.core.errors import EpbenchError
from epbench.core.params import layer_of

Record = dict[str, Any]
_MISSING = object()


def _path(node: Any, dotted: str) -> Any:
    """`node["a"]["b"]` for "a.b"; `_MISSING` where a step is absent."""
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return _MISSING
        node = node[part]
    return node


def key_value(record: Record, key: str) -> Any:
    """The value of `key` in a record: a top-level field, else a variant axis, else a dotted path
    into `config`, else a dotted path into the record; `_MISSING` when none has it."""
    value = record.get(key, _MISSING)
    if value is not _MISSING and not isinstance(value, dict):
        return value
    variant = record.get("variant") or {}
    if key in variant:
        return variant[key]
    value = _path(record.get("config") or {}, key)
    return value if value is not _MISSING else _path(record, key)


def _gdu_values(record: Record, field: str) -> list[float]:
    gdu = (record.get("metrics") or {}).get("gdu") or {}
    return [m[field] for m in gdu.values() if m.get(field) is not None]


def _train_last(record: Record, algorithm: str) -> float | None:
    curve = (((record.get("metrics") or {}).get("train") or {}).get(algorithm) or {}).get(
        "test_error"
    )
    return curve[-1] if curve else None


def _pick(values: list[float], how: Callable[[list[float]], float]) -> float | None:
    return how(values) if values else None


def _slope(estimator: str) -> Callable[[Record], Any]:
    return lambda r: ((r.get("metrics") or {}).get("slope") or {}).get(estimator)


# Named metrics of `pivot_table`: name → (description, value of one record or None).
METRICS: dict[str, tuple[str, Callable[[Record], Any]]] = {
    "residual": ("free-phase residual", lambda r: (r.get("metrics") or {}).get("residual")),
    "saturated": (
        "share of output units at 0 or 1 at the fixed point (GDU; hardsigm or clamp)",
        lambda r: (r.get("metrics") or {}).get("saturated_outputs"),
    ),
    "rmse": ("largest RMSE over names (GDU)", lambda r: _pick(_gdu_values(r, "rmse"), max)),
    "cosine": ("smallest cosine over names (GDU)", lambda r: _pick(_gdu_values(r, "cosine"), min)),
    "sign": ("smallest sign agreement (GDU)", lambda r: _pick(_gdu_values(r, "sign"), min)),
    "rel_error": (
        "largest relative error (GDU)",
        lambda r: _pick(_gdu_values(r, "rel_error"), max),
    ),
    "signal_steps": (
        "steps for the signal to reach the deepest layer",
        lambda r: (r.get("metrics") or {}).get("signal_steps"),
    ),
    "ep_test": ("EP test error % (last epoch)", lambda r: _train_last(r, "ep")),
    "bptt_test": ("BPTT test error % (last epoch)", lambda r: _train_last(r, "bptt")),
    "ep_minus_bptt": (
        "EP − BPTT test error % (paired)",
        lambda r: ((r.get("metrics") or {}).get("ep_minus_bptt") or {}).get("test_error"),
    ),
    "slope_positive": ("β-sweep log-log slope, +β", _slope("positive")),
    "slope_negative": ("β-sweep log-log slope, −β", _slope("negative")),
    "slope_symmetric": ("β-sweep log-log slope, ±β", _slope("symmetric")),
}


def metric_value(record: Record, metric: str) -> Any:
    """A named metric (`METRICS`) of a record, or the number at a dotted path into the record
    (`metrics.gdu.W0_1.cosine`); None when absent."""
    if metric in METRICS:
        return METRICS[metric][1](record)
    value = _path(record, metric)
    return None if value is _MISSING else value


def _format(value: Any) -> str:
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


_IDENTITY = ("task", "preset", "measurement", "backend", "device", "dtype")


def _setting(record: Record) -> Any:
    return _path(record.get("config") or {}, "model.setting")


def pivot_rows(
    records: Iterable[Record], *, key: str, metric: str
) -> tuple[list[str], list[Any], list[list[Any]]]:
    """(row headers, column values, rows) of `pivot_table`, before formatting.

    A row is the records equal on task, preset, measurement, backend, device, dtype, model
    setting and every variant axis except `key` and the axes that `key` determines (an axis whose
    value is the same for all records with the same key value and identity fields, like `model`
    = P-3h for depth 3). A cell holds the mean of the metric over the row's `ok` records with that
    key value (several seeds), or the status of the others when none is ok. Rows without a single
    value are left out.
    """
    records = [r for r in records if key_value(r, key) is not _MISSING]
    if not records:
        raise EpbenchError(
            f"--pivot: no record has the key {key!r} (a record field, a variant "
            "axis or a dotted config path such as dynamics.estimator)"
        )

    def ident(r: Record) -> tuple:
        return (*(r.get(f, "gdu" if f == "measurement" else None) for f in _IDENTITY), _setting(r))

    axes = {a for r in records for a in (r.get("variant") or {}) if a != key}
    seen: dict[tuple, dict[str, set]] = {}
    for r in records:
        group = seen.setdefault((ident(r), str(key_value(r, key))), {})
        for axis in axes:
            group.setdefault(axis, set()).add((r.get("variant") or {}).get(axis))
    kept = sorted(a for a in axes if any(len(g.get(a, ())) > 1 for g in seen.values()))

    table: dict[tuple, dict[Any, list[Record]]] = {}
    for r in records:
        variant = r.get("variant") or {}
        row = (*ident(r), tuple((a, variant.get(a)) for a in kept))
        table.setdefault(row, {}).setdefault(key_value(r, key), []).append(r)
    columns = sorted({v for cols in table.values() for v in cols}, key=_sort_key)
    rows = []
    for row, cols in table.items():
        task, preset, measurement, backend, _, dtype, setting, kept_axes = row
        cells = []
        for column in columns:
            found = cols.get(column, [])
            values = [metric_value(r, metric) for r in found if r.get("status") == "ok"]
            numbers = [v for v in values if isinstance(v, (int, float)) and v is not None]
            if numbers and len(numbers) == len(values):
                cells.append(sum(numbers) / len(numbers))
            elif values:
                cells.append(values[-1])
            elif found:
                cells.append(found[-1].get("status"))
            else:
                cells.append(None)
        if all(c is None for c in cells):
            continue
        label = task + ("[" + ",".join(f"{a}={v}" for a, v in kept_axes) + "]" if kept else "")
        rows.append([label, setting, measurement, backend, dtype, preset, *cells])
    headers = ["cells", "setting", "measurement", "backend", "dtype", "preset"]
    return headers, columns, rows


def pivot_table(records: Iterable[Record], *, key: str, metric: str) -> str:
    """Rows = cells without `key`, columns = the values of `key`, entries = `metric`
    (`pivot_rows`), as a GitHub-style table headed by the metric's description."""
    headers, columns, rows = pivot_rows(records, key=key, metric=metric)
    what = METRICS[metric][0] if metric in METRICS else metric
    table = tabulate(
        [row[:6] + [_format(v) for v in row[6:]] for row in rows],
        headers=headers + [f"{key}={_format(c)}" for c in columns],
        tablefmt="github",
    )
    return f"{what} by {key}:\n{table}"


# --- per depth --------------------------------------------------------------------------------


def _per_layer(record: Record, field: str, how: Callable[[list[float]], float]) -> str:
    """`field` per layer 0 … N (`how` over the layer's parameter names), as "a / b / …"."""
    gdu = (record.get("metrics") or {}).get("gdu") or {}
    layers: dict[int, list[float]] = {}
    for name, m in gdu.items():
        if not name.startswith("s") and m.get(field) is not None:
            layers.setdefault(layer_of(name), []).append(m[field])
    return " / ".join(f"{how(layers[n]):.3f}" for n in sorted(layers)) or "—"


def depth_table(records: Iterable[Record]) -> str:
    """One row per task, preset, model setting, estimator, feedback angle, backend, dtype and
    depth, joining that depth's `gdu` and `train` records (tasks/depth-scaling.toml): residual,
    the T and K of the GDU run (gdu and train may differ in dtype, width and activation: see
    the task), the steps the signal needs to reach the deepest layer (EP, and
    BPTT's exact count), the largest RMSE and smallest cosine over the parameters, both per layer
    (layer 0 = output first, over the layer's weights and bias), and the last EP and BPTT test
    errors. The first record of a kind wins per row (one seed)."""
    rows: dict[tuple, dict[str, Record]] = {}
    for r in records:
        measurement = r.get("measurement", "gdu")
        if measurement not in ("gdu", "train") or r.get("depth") is None:
            continue
        key = (
            r["task"],
            r["preset"],
            _setting(r),
            r.get("estimator"),
            r.get("angle"),
            r["backend"],
            r["depth"],
        )
        rows.setdefault(key, {}).setdefault(measurement, r)
    out = []
    for (task, preset, setting, estimator, angle, backend, depth), found in sorted(
        rows.items(), key=lambda item: tuple(_sort_key(v) for v in item[0])
    ):
        gdu, train = found.get("gdu", {}), found.get("train", {})
        dynamics = (gdu.get("config") or {}).get("dynamics") or {}
        arrival = ((gdu.get("metrics") or {}).get("arrival") or {}).get("bptt") or {}
        deepest = arrival.get(f"s{depth}")
        ok = gdu.get("status") == "ok"
        out.append(
            [
                task,
                preset,
                setting,
                estimator,
                "—" if angle is None else angle,
                backend,
                depth,
                f"{dynamics.get('T', '—')}/{dynamics.get('K', '—')}",
                _format(metric_value(gdu, "residual")) if ok else gdu.get("status", "—"),
                f"{_format(metric_value(gdu, 'signal_steps'))} ({_format(deepest)})" if ok else "—",
                _format(metric_value(gdu, "rmse")) if ok else "—",
                _format(metric_value(gdu, "cosine")) if ok else "—",
                _per_layer(gdu, "rmse", max) if ok else "—",
                _per_layer(gdu, "cosine", min) if ok else "—",
                _format(metric_value(train, "ep_test")),
                _format(metric_value(train, "bptt_test")),
                train.get("status", "—"),
            ]
        )
    headers = [
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
    ]
    return tabulate(out, headers=headers, tablefmt="github")


def has_depths(records: Iterable[Record]) -> bool:
    """True when some task's gdu/train records span two or more depths (`depth_table` then
    says something a per-cell table does not)."""
    depths: dict[str, set] = {}
    for r in records:
        if r.get("measurement", "gdu") in ("gdu", "train") and r.get("depth") is not None:
            depths.setdefault(r["task"], set()).add(r["depth"])
    return any(len(d) > 1 for d in depths.values())


# --- β sweep (epbench.measurements.beta_sweep) -------------------------------------------------------------------


def sweep_table(records: Iterable[Record]) -> str:
    """One row per beta-sweep record: residual, β range, per estimator the log-log slope of the
    error (expected 1 one-sided, 2 symmetric) and the error at the smallest and largest β."""
    rows = []
    estimators = ("positive", "negative", "symmetric")
    for r in records:
        m = r.get("metrics") or {}
        betas = m.get("betas") or []
        row = [r["cell"], r["backend"], r["dtype"], r["seed"], r["status"]]
        row.append(_format(m.get("residual")))
        row.append(f"{betas[0]:g} … {betas[-1]:g} ({len(betas)})" if betas else "—")
        for e in estimators:
            errors = (m.get("error") or {}).get(e) or []
            slope = (m.get("slope") or {}).get(e)
            row.append("—" if slope is None else f"{slope:.3f}")
            row.append(f"{errors[0]:.2e} / {errors[-1]:.2e}" if errors else "—")
        row.append((r.get("reason") or "")[:50])
        rows.append(row)
    headers = ["cell", "backend", "dtype", "seed", "status", "residual", "|β| grid"]
    for e in estimators:
        headers += [f"slope {e}", f"error {e} (min β / max β)"]
    headers.append("reason")
    return tabulate(rows, headers=headers, tablefmt="github")


def format_sweep_record(record: Record) -> str:
    """Heading and per-β errors of one beta-sweep record (or its status line)."""
    head = (
        f"{record['cell']} · {record['backend']} · {record['dtype']} · seed {record['seed']}"
        f" · preset {record['preset']} · {record['status']}"
    )
    if record["status"] != "ok":
        return f"{head}: {record.get('reason')}"
    m = record["metrics"]
    estimators = list(m["error"])
    rows = [
        [f"{beta:g}", *(f"{m['error'][e][i]:.3e}" for e in estimators)]
        for i, beta in enumerate(m["betas"])
    ]
    rows.append(["slope", *(_format(m["slope"][e]) for e in estimators)])
    table = tabulate(rows, headers=["|β|", *estimators], tablefmt="github")
    return (
        f"{head}\n{table}\nerror = ‖ΔEP + ∇BPTT‖ / ‖∇BPTT‖ over all parameters and steps; "
        f"residual ‖s_T − s_(T−1)‖ = {m['residual']:.2e}"
    )
