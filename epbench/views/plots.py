"""Figures from run records and saved traces (matplotlib, an optional extra: `epbench[plot]`).

This module imports without matplotlib; every figure function calls `require_matplotlib()` first,
which raises `MissingExtraError` (an `EpbenchError`: one line, exit code 2 on the command line).
Figures are built with the object-oriented API (`matplotlib.figure.Figure`, no pyplot state).

What comes in: records as `epbench.core.record.read_records` returns them, or the run loop's
dicts (GDU records: `metrics["gdu"]`, `metrics["residual"]`, `timings`, and `traces`, the path
of the saved .npz relative to the JSONL's folder; training records: `measurement == "train"`
and `metrics["train"][algorithm]` with per-epoch lists). What goes out: `Plot` objects (a
figure, its file stem, title and caption), saved by `save`.

Figures (each drawn only when the records carry its data, else skipped with a note):
- GDU curves per record (docs/theory.md §2, the paper's Fig. 2 and 4): ΔEP(β, t) against
  −∇BPTT(t), per step, for a few components per layer (largest total |Σ_t ∇BPTT(t)| of each name);
- RMSE and cosine bars per canonical name, per cell, across backends (docs/theory.md §4, Fig. 3);
- learning curves (train and test error per epoch, EP against BPTT, mean ± std over seeds);
- depth and angle curves (a metric against the number of hidden layers or the feedback angle α);
- β curves: log-log relative error against |β| with the fitted slopes (O(β) one-sided nudging,
  O(β²) symmetric nudging);
- peak memory against K, samples/s per backend, GDU phase times per backend.
"""

from __future__ import annotations

import json
import math
import re
import textwrap
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from epbench.core.errors import EpbenchError
from epbench.core.params import layer_of
from epbench.core.paths import inside, make_folder, output_path
from epbench.core.record import Record, as_record, metrics_of
from epbench.core.spec import DataSpec
from epbench.core.traces import load_traces
from epbench.views.format import VIEW_ERRORS, AnyRecord, records_in
from epbench.views.gdu import per_name
from epbench.views.settings import record_settings
from epbench.views.tables import usable

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

INSTALL_HINT = "pip install 'epbench[plot]'"
FORMATS = ("png", "svg", "pdf")
EP_COLOUR, BPTT_COLOUR = "tab:orange", "tab:blue"
ALGORITHM_COLOURS = {"ep": EP_COLOUR, "bptt": BPTT_COLOUR}
ALGORITHM_LABELS = {"ep": "EP", "bptt": "BPTT"}
EP_ZORDER, BPTT_ZORDER = 3, 2  # EP is drawn over BPTT so that neither hides the other


class MissingExtraError(EpbenchError, ImportError):
    """matplotlib (the `plot` extra) is not installed."""


def require_matplotlib() -> None:
    """Raise `MissingExtraError` with the install command when matplotlib cannot be imported."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise MissingExtraError(
            f"figures need matplotlib, which is not installed: {INSTALL_HINT}"
        ) from None


@dataclass(frozen=True, kw_only=True)
class Plot:
    """One figure: `name` is the file stem, `records` the indices of the records it shows."""

    name: str
    title: str
    caption: str
    figure: Figure
    records: tuple[int, ...] = ()


# --- small helpers on records ---


def _get(node: Mapping[str, Any], *path: str) -> Any:
    """`node[a][b]…` for the keys of `path` (a path into a record's configuration); None where
    a step is absent."""
    value: Any = node
    for key in path:
        if not isinstance(value, Mapping) or key not in value:
            return None
        value = value[key]
    return value


def _number(value: Any) -> float | None:
    """A finite float from a number or a numeric string (variant values are strings), else None."""
    if isinstance(value, bool):
        return None
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return out if math.isfinite(out) else None


def _ok(records: Sequence[Record], measurement: str) -> list[tuple[int, Record]]:
    return [
        (i, r) for i, r in enumerate(records) if r.status == "ok" and r.measurement == measurement
    ]


def _config_key(record: Record, *drop: tuple[str, ...]) -> str:
    """The record's resolved config as a JSON string, without the fields in `drop` (paths)."""
    config = json.loads(json.dumps(record.config))
    config.pop("description", None)
    for path in drop:
        parent = config
        for key in path[:-1]:
            parent = parent.get(key, {}) if isinstance(parent, dict) else {}
        if isinstance(parent, dict):
            parent.pop(path[-1], None)
    return json.dumps(config, sort_keys=True)


def _values(records: Iterable[Record], key: str) -> str:
    """The distinct values of `key`, in order (numbers by value, such as seeds)."""
    seen = {str(getattr(r, key)) for r in records}
    order = sorted(seen, key=lambda v: (0, int(v), v) if v.isdigit() else (1, 0, v))
    return ", ".join(order) if order else "—"


def batch_size(record: AnyRecord) -> int:
    """The record's mini-batch size (task files may leave `data.batch` at its default)."""
    record = as_record(record)
    batch = _get(record.config, "data", "batch")
    return DataSpec().batch if batch is None else batch


def describe(records: Sequence[AnyRecord]) -> str:
    """Caption line: the tasks, backends, dtypes, seeds and presets the figure shows."""
    records = records_in(records)
    return (
        f"tasks: {_values(records, 'cell')}; backends: {_values(records, 'backend')}; "
        f"dtype: {_values(records, 'dtype')}; seeds: {_values(records, 'seed')}; "
        f"preset: {_values(records, 'preset')}"
    )


def _names_order(name: str) -> tuple:
    return (name.startswith("s"), layer_of(name), name)


def _mean_std(values: Sequence[float]) -> tuple[float, float]:
    arr = np.asarray([v for v in values if v is not None], dtype=float)
    if arr.size == 0:
        return math.nan, math.nan
    return float(arr.mean()), float(arr.std())


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.=-]+", "-", text).strip("-") or "figure"


# --- figure helpers ---


def _figure(rows: int, cols: int, *, width: float = 4.2, height: float = 3.0) -> tuple[Figure, Any]:
    require_matplotlib()
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width * cols, height * rows), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False)
    return fig, axes


def _caption(fig: Figure, text: str) -> None:
    """Put the caption in a strip added below the axes: the figure grows by the caption's height
    and the constrained layout keeps the axes out of that strip."""
    chars = int(fig.get_figwidth() * 15)
    lines = [wrapped for line in text.split("\n") for wrapped in textwrap.wrap(line, chars)]
    strip = 0.15 * len(lines) + 0.15  # inches, at 8 pt
    height = fig.get_figheight() + strip
    fig.set_figheight(height)
    fig.get_layout_engine().set(rect=(0.0, strip / height, 1.0, 1.0 - strip / height))
    fig.text(0.01, (strip - 0.08) / height, "\n".join(lines), ha="left", va="top", fontsize=8)


def _finish(name: str, title: str, caption: str, fig: Figure, records: Iterable[int]) -> Plot:
    fig.suptitle(title, fontsize=11)
    _caption(fig, caption)
    return Plot(name=name, title=title, caption=caption, figure=fig, records=tuple(records))


def _grouped_bars(
    ax: Axes,
    groups: Sequence[str],
    series: dict[str, dict[str, tuple[float, float]]],
    *,
    horizontal: bool = False,
) -> None:
    """Bars with error bars: one group per tick, one bar per series inside each group; horizontal
    bars (groups top to bottom) suit long group names such as task cells."""
    width = 0.8 / max(len(series), 1)
    at = np.arange(len(groups))
    for k, (label, values) in enumerate(series.items()):
        sizes = [values.get(g, (math.nan, math.nan))[0] for g in groups]
        errors = [values.get(g, (math.nan, math.nan))[1] for g in groups]
        finite = [e for e in errors if e is not None and math.isfinite(e)]
        errors = (
            [0.0 if e is None or not math.isfinite(e) else e for e in errors] if finite else None
        )
        where = at + (k - (len(series) - 1) / 2) * width
        if horizontal:
            ax.barh(where, sizes, width, xerr=errors, capsize=2, label=label)
        else:
            ax.bar(where, sizes, width, yerr=errors, capsize=2, label=label)
    if horizontal:
        ax.set_yticks(at, groups, fontsize=8)
        ax.invert_yaxis()
    elif len(groups) > 6:
        ax.set_xticks(at, groups, rotation=45, ha="right", rotation_mode="anchor")
    else:
        ax.set_xticks(at, groups)


def _bar_height(groups: int, series: int) -> float:
    """Figure height (inches) for horizontal bars: about 0.22 in per bar, at least 2.4 in."""
    return max(2.4, 1.2 + 0.22 * groups * max(series, 1))


# --- GDU curves (Fig. 2 and 4) ---


def pick_components(
    bptt: dict[str, np.ndarray], names: Sequence[str], count: int
) -> list[tuple[str, tuple[int, ...]]]:
    """`count` components of `names`, taken in turn from each name (so that a layer's weights are
    shown, not only its bias, whose totals are larger), each name's in decreasing |Σ_t ∇BPTT(t)|;
    ties go to the lower flat index (deterministic)."""
    ranked = []
    for name in names:
        total = np.abs(np.asarray(bptt[name], dtype=np.float64).sum(axis=0)).ravel()
        order = np.argsort(-total, kind="stable")
        shape = np.shape(bptt[name])[1:]
        ranked.append([(name, tuple(int(i) for i in np.unravel_index(f, shape))) for f in order])
    picked = []
    for rank in range(max((len(r) for r in ranked), default=0)):
        picked += [r[rank] for r in ranked if rank < len(r)]
        if len(picked) >= count:
            break
    return picked[:count]


def _panels(names: Iterable[str]) -> list[tuple[str, int, list[str]]]:
    """(kind, layer, names) of each panel: neurons `s{n}` on the first row, then the weights and
    biases of each layer, layers from the output (0) towards the input."""
    states: dict[int, list[str]] = defaultdict(list)
    params: dict[int, list[str]] = defaultdict(list)
    for name in sorted(names, key=_names_order):
        (states if name.startswith("s") else params)[layer_of(name)].append(name)
    return [("neurons", n, v) for n, v in sorted(states.items())] + [
        ("parameters", n, v) for n, v in sorted(params.items())
    ]


def gdu_curves(
    record: AnyRecord, traces: dict[str, dict[str, np.ndarray]], *, components: int = 3
) -> Figure:
    """ΔEP(β, t) against −∇BPTT(t) for t = 0…K−1 (docs/theory.md §2), one panel per layer and kind
    (neurons on the first row, parameters on the second), `components` series per panel.

    `traces` is `load_traces(path)` of the record's saved .npz. BPTT: thick light solid lines;
    EP: dark dashed lines with markers, drawn above BPTT (`zorder`), in a paired colour. Each line
    carries its series in `get_gid()` ("ep" or "bptt") and its component in its label.
    """
    record = as_record(record)
    from matplotlib import colormaps

    ep, bptt = traces["ep"], traces["bptt"]
    panels = _panels(bptt)
    kinds = [k for k in ("neurons", "parameters") if any(p[0] == k for p in panels)]
    layers = sorted({p[1] for p in panels})
    fig, axes = _figure(len(kinds), len(layers))
    palette = colormaps["tab20"].colors
    for ax in axes.ravel():
        ax.set_visible(False)
    for kind, layer, names in panels:
        ax = axes[kinds.index(kind), layers.index(layer)]
        ax.set_visible(True)
        for c, (name, index) in enumerate(pick_components(bptt, names, components)):
            label = f"{name}[{', '.join(map(str, index))}]"
            b = -np.asarray(bptt[name], dtype=np.float64)[(slice(None), *index)]
            e = np.asarray(ep[name], dtype=np.float64)[(slice(None), *index)]
            steps = np.arange(b.shape[0])
            dark, light = palette[(2 * c) % 20], palette[(2 * c + 1) % 20]
            (line,) = ax.plot(steps, b, "-", lw=3.0, color=light, zorder=BPTT_ZORDER)
            line.set(gid="bptt", label=f"−∇BPTT {label}")
            (line,) = ax.plot(
                steps,
                e,
                "--",
                lw=1.2,
                color=dark,
                marker="o",
                ms=3,
                markevery=max(1, len(steps) // 16),
                zorder=EP_ZORDER,
            )
            line.set(gid="ep", label=f"ΔEP {label}")
        what = "neurons " + ", ".join(names) if kind == "neurons" else ", ".join(names)
        ax.set_title(f"layer {layer}: {what}", fontsize=9)
        ax.set_xlabel("step t of the nudged phase")
        unit = "∂L/∂s" if kind == "neurons" else "∂L/∂θ"
        ax.set_ylabel(f"ΔEP(β,t), −∇BPTT(t)  [{unit} per step]", fontsize=8)
        ax.axhline(0.0, color="0.8", lw=0.6, zorder=1)
        ax.legend(fontsize=6, ncols=2)
    return fig


def _record_line(record: Record) -> str:
    dyn = _get(record.config, "dynamics") or {}
    batch = batch_size(record)
    return (
        f"{record.cell} · backend {record.backend} · {record.dtype} · "
        f"seed {record.seed} · preset {record.preset} · β = {record.beta_used}"
        f" ({record.estimator}), T = {dyn.get('T')}, K = {dyn.get('K')}, batch {batch}"
    )


def gdu_curve_plot(
    index: int, record: AnyRecord, traces: dict[str, dict[str, np.ndarray]], components: int
) -> Plot:
    """`gdu_curves` of record number `index`, with its title, caption and file stem."""
    record = as_record(record)
    fig = gdu_curves(record, traces, components=components)
    title = f"GDU: ΔEP(β,t) against −∇BPTT(t) — {record.cell} on {record.backend}"
    residual = record.metrics.get("residual")
    caption = (
        f"{_record_line(record)}; free-phase residual ‖s_T − s_(T−1)‖ = "
        f"{'—' if residual is None else format(residual, '.1e')}.\n"
        f"Per step t, batch-averaged, at the initial weights; {components} components per panel, "
        "taken in turn from each of its names, largest |Σ_t ∇BPTT(t)| first. BPTT: thick light "
        "solid lines; EP: dark dashed lines with markers, drawn on top. They coincide when the "
        "GDU property holds."
    )
    parts = [record.cell, record.backend, record.dtype, f"seed{record.seed}"]
    stem = "_".join(["gdu-curves", *(_slug(str(p)) for p in parts)])
    return _finish(stem, title, caption, fig, [index])


# --- GDU bars (Fig. 3) ---


def gdu_bars(records: Sequence[AnyRecord]) -> Plot | None:
    """RMSE (mean ± std over a name's components) and cosine of the totals, per canonical name:
    one row per cell · preset, one bar per backend · dtype · estimator (averaged over seeds)."""
    records = records_in(records)
    chosen = [(i, r) for i, r in _ok(records, "gdu") if per_name(r)]
    if not chosen:
        return None
    rows: dict[tuple, list[Record]] = defaultdict(list)
    for _, r in chosen:
        rows[(r.cell, r.preset)].append(r)
    fig, axes = _figure(len(rows), 2, width=max(4.2, 0.5 * _widest(chosen)), height=2.8)
    metrics = [("rmse", "rmse_std", "RMSE (relative, no unit)"), ("cosine", None, "cosine (total)")]
    for row, ((cell, preset), mine) in enumerate(rows.items()):
        names = sorted({n for r in mine for n in per_name(r)}, key=_names_order)
        by_series: dict[str, list[Record]] = defaultdict(list)
        for r in mine:
            by_series[f"{r.backend} · {r.dtype} · {r.estimator}"].append(r)
        for col, (key, spread, label) in enumerate(metrics):
            series = {
                series_label: {name: _name_stat(same, name, key, spread) for name in names}
                for series_label, same in by_series.items()
            }
            ax = axes[row, col]
            _grouped_bars(ax, names, series)
            ax.set_ylabel(label, fontsize=8)
            ax.set_title(f"{cell} (preset {preset})", fontsize=9)
            ax.set_xlabel("canonical name (layer 0 = output)", fontsize=8)
            if key == "cosine":  # same bars as the RMSE panel, whose legend serves both
                low = min([0.0] + [v[0] for s in series.values() for v in s.values() if v[0] < 0])
                ax.set_ylim(low, 1.05)
            else:
                ax.legend(fontsize=6, title="backend · dtype · estimator", title_fontsize=6)
    caption = (
        f"{describe([r for _, r in chosen])}.\nRMSE: the paper's relative error per component "
        "(neurons per step, parameters on the cumulative series), error bars the std over the "
        "name's components; cosine between the totals Σ_t ΔEP and −Σ_t ∇BPTT. Seeds averaged."
    )
    title = "GDU: RMSE and cosine per layer, EP against BPTT"
    return _finish("gdu-bars", title, caption, fig, (i for i, _ in chosen))


def _name_stat(
    records: Sequence[Record], name: str, key: str, spread: str | None
) -> tuple[float, float]:
    """(mean of `key`, mean of `spread`) of one canonical name over records (seeds)."""
    metrics = [per_name(r).get(name) or {} for r in records]
    mean = _mean_std([m.get(key) for m in metrics])[0]
    return mean, _mean_std([m.get(spread) for m in metrics])[0] if spread else math.nan


def _widest(chosen: Sequence[tuple[int, Record]]) -> int:
    return max(len(per_name(r)) for _, r in chosen)


# --- learning curves ---


def _train_blocks(record: Record) -> dict[str, Mapping[str, Any]]:
    block = metrics_of(record, "train")
    return {a: v for a, v in (block or {}).items() if isinstance(v, dict)}


def learning_curves(records: Sequence[AnyRecord]) -> Plot | None:
    """Train and test error (%) per epoch, EP against BPTT, mean ± std over seeds: one row per
    cell · estimator · backend · dtype · preset (and the settings that set runs of one model
    apart, epbench.views.settings), columns train and test error."""
    records = records_in(records)
    chosen = [(i, r) for i, r in _ok(records, "train") if _train_blocks(r)]
    if not chosen:
        return None
    groups: dict[tuple, list[Record]] = defaultdict(list)
    settings = record_settings(dict(chosen))
    for i, r in chosen:
        estimator = " ".join(filter(None, (str(r.estimator), settings[i])))
        groups[(r.cell, estimator, r.backend, r.dtype, r.preset)].append(r)
    from matplotlib.ticker import MaxNLocator

    fig, axes = _figure(len(groups), 2)
    for row, ((cell, estimator, backend, dtype, preset), mine) in enumerate(groups.items()):
        seeds = sorted({str(r.seed) for r in mine})
        for col, key in enumerate(("train_error", "test_error")):
            ax = axes[row, col]
            for alg in sorted({a for r in mine for a in _train_blocks(r)}, reverse=True):
                runs = [_train_blocks(r).get(alg, {}).get(key) for r in mine]
                runs = [np.asarray(v, dtype=float) for v in runs if v]
                if not runs:
                    continue
                length = min(len(v) for v in runs)
                stack = np.stack([v[:length] for v in runs])
                mean, std = stack.mean(0), stack.std(0)
                epochs = np.arange(1, length + 1)
                colour = ALGORITHM_COLOURS.get(alg)
                z = EP_ZORDER if alg == "ep" else BPTT_ZORDER
                name = ALGORITHM_LABELS.get(alg, alg)
                ax.plot(
                    epochs,
                    mean,
                    "--o" if alg == "ep" else "-",
                    ms=3,
                    color=colour,
                    zorder=z,
                    label=f"{name} (n = {len(runs)})",
                    gid=alg,
                )
                if len(runs) > 1:
                    ax.fill_between(epochs, mean - std, mean + std, color=colour, alpha=0.2)
            what = "training" if key == "train_error" else "test"
            where = f"{cell} · {estimator} · {backend} · {dtype} · {preset}"
            ax.set_title(textwrap.fill(f"{where}: {what} error", 48), fontsize=9)
            ax.set_xlabel("epoch")
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.set_ylabel(f"{what} error (%)")
            ax.legend(fontsize=7, title=f"seeds {', '.join(seeds)}", title_fontsize=7)
    caption = (
        f"{describe([r for _, r in chosen])}.\nMean over seeds, shaded ± one std (when there is "
        "more than one seed). EP and BPTT start from identical initial weights."
    )
    title = "Learning curves: EP against BPTT"
    return _finish("learning-curves", title, caption, fig, (i for i, _ in chosen))


# --- training dynamics: every estimator against BPTT, per model ---

DYNAMICS_PANELS = (
    ("test_error", "test error (%)", False),
    ("loss", "training loss (mean per batch)", True),
    ("free_residual", "free-phase residual per example", True),
    ("bias_norm", "‖b‖ (all biases)", False),
    ("weight_norm", "‖W‖ (all weights)", False),
)


def _norms(block: Mapping[str, Any], biases: bool) -> list[float] | None:
    """Per epoch, √Σ‖θ‖² over the biases (`biases`) or over the weights of a training run."""
    series = [
        np.asarray(v, dtype=float)
        for k, v in block.items()
        if k.startswith("weight_norm.") and k.split(".", 1)[1].startswith("b") == biases and v
    ]
    if not series:
        return None
    length = min(len(v) for v in series)
    return list(np.sqrt(sum(v[:length] ** 2 for v in series)))


def _series(block: Mapping[str, Any], key: str) -> list[float] | None:
    if key in ("bias_norm", "weight_norm"):
        return _norms(block, biases=key == "bias_norm")
    return block.get(key) or None


def training_dynamics(records: Sequence[AnyRecord]) -> Plot | None:
    """Per model · settings · backend · dtype · preset (one row; settings: what sets runs of one
    model apart, epbench.views.settings), the per-epoch test error, training loss,
    free-phase residual and parameter norms of BPTT and of each EP estimator, mean over seeds with
    a band of ± one std: what separates an estimator that keeps up with BPTT over long training
    from one that drifts (docs/theory.md §5.1). Drawn when some run has several epochs."""
    records = records_in(records)
    chosen = [(i, r) for i, r in _ok(records, "train") if _train_blocks(r)]
    chosen = [
        (i, r)
        for i, r in chosen
        if any(len(b.get("test_error") or []) > 1 for b in _train_blocks(r).values())
    ]
    if not chosen:
        return None
    groups: dict[tuple, dict[str, list[Mapping[str, Any]]]] = defaultdict(lambda: defaultdict(list))
    settings = record_settings(dict(chosen))
    for i, r in chosen:
        model = r.variant.get("model", r.cell)
        where = tuple(filter(None, (model, settings[i], r.backend, r.dtype, r.preset)))
        for alg, block in _train_blocks(r).items():
            label = "BPTT" if alg == "bptt" else f"EP {r.estimator}"
            groups[where][label].append(block)
    fig, axes = _figure(len(groups), len(DYNAMICS_PANELS), width=3.6, height=2.8)
    for row, (where, series) in enumerate(groups.items()):
        for col, (key, ylabel, log) in enumerate(DYNAMICS_PANELS):
            ax = axes[row, col]
            for n, (label, blocks) in enumerate(sorted(series.items())):
                runs = [np.asarray(v, float) for b in blocks if (v := _series(b, key))]
                if not runs:
                    continue
                length = min(len(v) for v in runs)
                stack = np.stack([v[:length] for v in runs])
                epochs = np.arange(1, length + 1)
                colour = BPTT_COLOUR if label == "BPTT" else f"C{(n % 8) + 1}"
                mean = stack.mean(0)
                ax.plot(epochs, mean, color=colour, lw=1.2, label=f"{label} (n = {len(runs)})")
                if len(runs) > 1:  # ± one std; on a log axis the range over the seeds
                    std = stack.std(0)
                    low, high = (stack.min(0), stack.max(0)) if log else (mean - std, mean + std)
                    ax.fill_between(epochs, low, high, color=colour, alpha=0.18, lw=0)
            if log:
                ax.set_yscale("log")
            ax.set_title(textwrap.fill(" · ".join(map(str, where)), 45), fontsize=8)
            ax.set_xlabel("epoch")
            ax.set_ylabel(ylabel, fontsize=8)
            if col == 0:
                ax.legend(fontsize=6)
    caption = (
        f"{describe([r for _, r in chosen])}.\nMean over seeds, shaded ± one std (log axes: the "
        "range over the seeds). The residual is "
        "‖s_T − s_(T−1)‖ of the free phase on the first 1,000 test images after each epoch, per "
        "example; norms are Frobenius norms summed in quadrature over the parameters."
    )
    title = "Training dynamics: EP estimators against BPTT"
    return _finish("training-dynamics", title, caption, fig, (i for i, _ in chosen))


# --- sweeps: depth, angle ---


def _depth(record: Record) -> float | None:
    """Hidden layers N: the conv layers of a conv model, else `len(sizes) − 1`."""
    channels = _get(record.config, "model", "conv", "channels")
    if isinstance(channels, list) and channels:
        return float(len(channels))
    sizes = _get(record.config, "model", "sizes")
    return float(len(sizes) - 1) if isinstance(sizes, list) and sizes else None


def _angle(record: Record) -> float | None:
    """The feedback angle α in degrees: the record's `angle`, else where a configuration or a
    variant axis carries it."""
    candidates = (
        record.angle,
        record.metrics.get("angle"),
        _get(record.config, "model", "angle"),
        _get(record.config, "model", "feedback_angle"),
        _get(record.config, "dynamics", "angle"),
        record.variant.get("angle"),
        record.variant.get("alpha"),
    )
    return next((v for v in map(_number, candidates) if v is not None), None)


def _gdu_means(record: Record) -> dict[str, float]:
    """Mean RMSE over the parameter names ("weights") and over the state names ("neurons")."""
    gdu = per_name(record)
    kinds: dict[str, list[float]] = {"weights": [], "neurons": []}
    for name, m in gdu.items():
        if m.get("rmse") is not None:
            kinds["neurons" if name.startswith("s") else "weights"].append(m["rmse"])
    return {kind: float(np.mean(values)) for kind, values in kinds.items() if values}


def _swept_axes(
    records: Sequence[Record], x_of: Callable[[Record], float | None]
) -> set[tuple[str, str]]:
    """(task, axis) pairs whose variant value determines x: two or more values, one x each (in
    mnist-fc the axis `model` sets the depth; in a task with axes `beta` and `model`, only
    `model` does, so lines for different β stay apart)."""
    seen: dict[tuple[str, str], dict[str, set]] = defaultdict(lambda: defaultdict(set))
    for r in records:
        for axis, value in r.variant.items():
            seen[(r.task, axis)][value].add(x_of(r))
    return {
        key
        for key, by_value in seen.items()
        if len(by_value) >= 2 and all(len(xs) == 1 for xs in by_value.values())
    }


class _Curves:
    """Points (x, y) per line, with the indices of the records they come from."""

    def __init__(self) -> None:
        self.points: dict[tuple, dict[float, list[float]]] = defaultdict(lambda: defaultdict(list))
        self.sources: dict[tuple, set[int]] = defaultdict(set)

    def add(self, key: tuple, x: float, y: float, index: int) -> None:
        self.points[key][x].append(float(y))
        self.sources[key].add(index)

    def lines(self) -> dict[tuple, dict[float, list[float]]]:
        """The lines with two or more distinct x values (the others are no curve)."""
        return {k: v for k, v in self.points.items() if len(v) >= 2}

    def used(self) -> list[int]:
        return sorted({i for key in self.lines() for i in self.sources[key]})


def _draw(ax: Axes, points: dict[float, list[float]], **style: Any) -> None:
    """One line: the mean over the values at each x, error bars ± their std."""
    xs = sorted(points)
    stats = [_mean_std(points[x]) for x in xs]
    style = {"marker": "o", "capsize": 2, **style}
    ax.errorbar(xs, [m for m, _ in stats], yerr=[e for _, e in stats], **style)


def _marker(backends: list[str], backend: Any) -> dict[str, Any]:
    """A marker per backend, largest and hollow first, so that backends that agree exactly stay
    visible on top of one another."""
    if backend not in backends:
        backends.append(backend)
    k = backends.index(backend)
    size = max(3.0, 9.0 - 2.0 * k)
    return {"marker": "osD^v"[k % 5], "ms": size, "mfc": "none" if k == 0 else None}


def sweep(
    records: Sequence[AnyRecord],
    *,
    x_of: Callable[[Record], float | None],
    name: str,
    xlabel: str,
    what: str,
    integer: bool = False,
) -> Plot | None:
    """A metric against a swept quantity `x_of(record)`: GDU mean RMSE (weights, neurons) and
    final test error (per algorithm), mean ± std over seeds, drawn for groups with two or more
    distinct x values. A group (one line) shares task, setting, backend, dtype, preset, estimator
    (but for BPTT's test error, which reads none) and the values of every variant axis that does
    not set x (see `_swept_axes`)."""
    records = records_in(records)
    curves = {"gdu": _Curves(), "train": _Curves()}
    swept = _swept_axes([r for r in records if r.status == "ok"], x_of)
    for measurement, curve in curves.items():
        for i, r in _ok(records, measurement):
            x = x_of(r)
            if x is None:
                continue
            variant = r.variant.items()
            others = tuple(sorted((a, v) for a, v in variant if (r.task, a) not in swept))
            base = (r.task, _get(r.config, "model", "setting"), r.backend, r.dtype, r.preset)
            if measurement == "gdu":
                ys = _gdu_means(r)
            else:
                blocks = _train_blocks(r).items()
                ys = {a: b["test_error"][-1] for a, b in blocks if b.get("test_error")}
            for series, y in ys.items():
                # BPTT reads no estimator: its runs beside any estimator's EP are one line
                estimator = None if series == "bptt" else r.estimator
                curve.add((*base, estimator, others, series), x, y, i)
    panels = [m for m in ("gdu", "train") if curves[m].lines()]
    if not panels:
        return None
    from matplotlib.ticker import MaxNLocator

    fig, axes = _figure(1, len(panels), width=5.5, height=3.6)
    for ax, measurement in zip(axes[0], panels, strict=True):
        backends: list[str] = []
        for key, points in curves[measurement].lines().items():
            task, setting, backend, dtype, preset, estimator, others, series = key
            parts = [f"{task} {setting}", backend, dtype, preset, estimator]
            parts += [f"{a}={v}" for a, v in others] + [ALGORITHM_LABELS.get(series, series)]
            _draw(
                ax,
                points,
                label=" · ".join(str(p) for p in parts if p is not None),
                color=ALGORITHM_COLOURS.get(series),
                ls="--" if series in ("ep", "neurons") else "-",
                **_marker(backends, backend),
            )
        ax.set_xlabel(xlabel)
        if integer:
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        if measurement == "gdu":
            ax.set_ylabel("mean RMSE over a kind's names (no unit)")
            ax.set_title(f"GDU: RMSE against {what}", fontsize=9)
        else:
            ax.set_ylabel("final test error (%)")
            ax.set_title(f"training: final test error against {what}", fontsize=9)
        ax.legend(fontsize=6, loc="upper left", bbox_to_anchor=(1.02, 1.0))
    used = sorted({i for m in panels for i in curves[m].used()})
    caption = (
        f"{describe([records[i] for i in used])}.\nPoints: mean ± std over seeds. GDU panel: RMSE "
        "averaged over the parameter names (weights) or the state names (neurons) of a record."
    )
    return _finish(name, f"{what.capitalize()} sweep", caption, fig, used)


# --- β curves ---


def fit_slope(xs: Sequence[float], ys: Sequence[float]) -> float | None:
    """Least-squares slope of log y against log x over the points with x, y > 0 (None if < 2)."""
    pairs = [(x, y) for x, y in zip(xs, ys, strict=True) if x > 0 and y is not None and y > 0]
    if len({x for x, _ in pairs}) < 2:
        return None
    lx, ly = np.log([p[0] for p in pairs]), np.log([p[1] for p in pairs])
    return float(np.polyfit(lx, ly, 1)[0])


def beta_curves(records: Sequence[AnyRecord]) -> Plot | None:
    """Relative error ‖ΔEP + ∇BPTT‖/‖∇BPTT‖ against |β|, log-log, one line per canonical name and
    estimator with its fitted slope (docs/theory.md §2: O(β) one-sided, O(β²) symmetric); one
    panel per configuration (the config without β and estimator) · backend · dtype."""
    records = records_in(records)
    groups: dict[tuple, list[tuple[int, Record]]] = defaultdict(list)
    for i, r in _ok(records, "gdu"):
        beta = _number(r.beta_used)
        if beta is None or not per_name(r):
            continue
        drop = (("dynamics", "beta"), ("dynamics", "estimator"))
        groups[(_config_key(r, *drop), r.backend, r.dtype)].append((i, r))
    groups = {k: v for k, v in groups.items() if len({abs(r.beta_used) for _, r in v}) >= 2}
    if not groups:
        return None
    fig, axes = _figure(1, len(groups), width=5.0, height=3.8)
    from matplotlib import colormaps

    palette = colormaps["tab10"].colors
    for ax, members in zip(axes[0], groups.values(), strict=True):
        names = sorted({n for _, r in members for n in per_name(r)}, key=_names_order)
        estimators = sorted({str(r.estimator) for _, r in members})
        for e, estimator in enumerate(estimators):
            for c, name in enumerate(names):
                points: dict[float, list[float]] = defaultdict(list)
                for _, r in members:
                    m = per_name(r).get(name) or {}
                    if str(r.estimator) == estimator and m.get("rel_error") is not None:
                        points[abs(r.beta_used)].append(m["rel_error"])
                xs = sorted(points)
                ys = [float(np.mean(points[x])) for x in xs]
                if len(xs) < 2:
                    continue
                slope = fit_slope(xs, ys)
                text = "—" if slope is None else f"{slope:.2f}"
                ax.loglog(
                    xs,
                    ys,
                    ["-o", "--s", ":^", "-.v"][e % 4],
                    ms=4,
                    color=palette[c % 10],
                    label=f"{name} ({estimator}): slope {text}",
                )
        first = members[0][1]
        dyn = _get(first.config, "dynamics") or {}
        ax.set_title(
            f"{first.task}: sizes {_get(first.config, 'model', 'sizes')}, "
            f"T = {dyn.get('T')}, K = {dyn.get('K')} · {first.backend} · "
            f"{first.dtype}",
            fontsize=9,
        )
        ax.set_xlabel("|β| (nudging strength, no unit)")
        ax.tick_params(which="minor", labelsize=6)
        ax.set_ylabel("‖ΔEP + ∇BPTT‖ / ‖∇BPTT‖")
        ax.legend(fontsize=6, loc="upper left", bbox_to_anchor=(1.02, 1.0))
    used = [m for v in groups.values() for m in v]
    caption = (
        f"{describe([r for _, r in used])}.\nRelative Frobenius error over the K steps per "
        "canonical name; slopes from a least-squares fit in log-log (expected ≈ 1 for one-sided "
        "nudging, ≈ 2 for symmetric nudging, until rounding error dominates at small β)."
    )
    title = "β sweep: EP's bias against the nudging strength"
    return _finish("beta-curves", title, caption, fig, (i for i, _ in used))


# --- memory, speed ---


def per_algorithm(record: AnyRecord, key: str) -> dict[str, float]:
    """`{algorithm: value}` from any `metrics[measurement][algorithm][key]` of a record."""
    record = as_record(record)
    out = {}
    for block in record.metrics.values():
        if isinstance(block, dict):
            for alg, values in block.items():
                if isinstance(values, dict) and _number(values.get(key)) is not None:
                    out[alg] = float(values[key])
    return out


def memory_vs_k(records: Sequence[AnyRecord]) -> Plot | None:
    """Peak memory per algorithm against the truncation K, one line per configuration without K ·
    backend · dtype · algorithm, where records carry per-algorithm `peak_memory_bytes` (training
    records do) for two or more values of K."""
    records = records_in(records)
    curves = _Curves()
    for i, r in enumerate(records):
        k = _number(_get(r.config, "dynamics", "K"))
        memory = per_algorithm(r, "peak_memory_bytes") if r.status == "ok" else {}
        for alg, value in memory.items() if k is not None else ():
            sizes = _get(r.config, "model", "sizes")
            key = (_config_key(r, ("dynamics", "K")), r.task, str(sizes))
            curves.add((*key, r.backend, r.dtype, alg), k, value / 2**20, i)
    if not curves.lines():
        return None
    fig, axes = _figure(1, 1, width=5.5, height=3.6)
    ax = axes[0, 0]
    backends: list[str] = []
    for (_, task, sizes, backend, dtype, alg), points in curves.lines().items():
        label = f"{task} {sizes} · {backend} · {dtype} · {ALGORITHM_LABELS.get(alg, alg)}"
        _draw(
            ax, points, label=label, color=ALGORITHM_COLOURS.get(alg), **_marker(backends, backend)
        )
    ax.set_xlabel("K (nudged-phase steps = BPTT truncation)")
    ax.set_ylabel("peak memory (MiB)")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0))
    used = curves.used()
    caption = f"{describe([records[i] for i in used])}.\nMean ± std over seeds."
    return _finish("memory-vs-K", "Peak memory against K", caption, fig, used)


def samples_per_second(records: Sequence[AnyRecord]) -> Plot | None:
    """Training throughput (samples/s) per cell, one bar per backend · dtype · algorithm."""
    records = records_in(records)
    series: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    used = []
    for i, r in enumerate(records):
        speeds = per_algorithm(r, "samples_per_s") if r.status == "ok" else {}
        for alg, value in speeds.items():
            label = f"{r.backend} · {r.dtype} · {ALGORITHM_LABELS.get(alg, alg)}"
            series[label][str(r.cell)].append(value)
        if speeds:
            used.append((i, r))
    if not series:
        return None
    cells = list(dict.fromkeys(str(r.cell) for _, r in used))
    fig, axes = _figure(1, 1, width=6.0, height=_bar_height(len(cells), len(series)))
    ax = axes[0, 0]
    stats = {label: {c: _mean_std(v) for c, v in per.items()} for label, per in series.items()}
    _grouped_bars(ax, cells, stats, horizontal=True)
    ax.set_xlabel("training samples per second")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0))
    caption = f"{describe([r for _, r in used])}.\nMean ± std over seeds."
    title = "Training throughput per backend"
    return _finish("samples-per-s", title, caption, fig, (i for i, _ in used))


def gdu_times(records: Sequence[AnyRecord]) -> Plot | None:
    """Steady-state seconds of the GDU phases per cell, one bar per backend · dtype: the free
    phase (T steps), BPTT through the last K steps, EP's nudged phase (K steps)."""
    records = records_in(records)
    chosen = [(i, r) for i, r in _ok(records, "gdu") if r.timings.get("phases")]
    if not chosen:
        return None
    cells = list(dict.fromkeys(str(r.cell) for _, r in chosen))
    phases = [
        ("free phase (T steps)", ("free_before", "free_last")),
        ("BPTT (backward through K steps)", ("bptt",)),
        ("EP (nudged phase, K steps)", ("ep",)),
    ]
    from matplotlib.ticker import NullFormatter

    backends = {(r.backend, r.dtype) for _, r in chosen}
    fig, axes = _figure(1, len(phases), width=4.2, height=_bar_height(len(cells), len(backends)))
    for ax, (label, keys) in zip(axes[0], phases, strict=True):
        values: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
        for _, r in chosen:
            seconds = [_number(r.timings["phases"].get(k)) for k in keys]
            if all(s is not None for s in seconds):
                values[f"{r.backend} · {r.dtype}"][str(r.cell)].append(sum(seconds))
        stats = {s: {c: _mean_std(v) for c, v in per.items()} for s, per in values.items()}
        _grouped_bars(ax, cells, stats, horizontal=True)
        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel("seconds (steady state, best of repeats)", fontsize=8)
        ax.set_title(label, fontsize=9)
        if ax is not axes[0, 0]:
            ax.tick_params(labelleft=False)
        ax.legend(fontsize=6)
    caption = (
        f"{describe([r for _, r in chosen])}.\nDevice synchronised around each phase; the first "
        "(warm-up, compilation) run is excluded. Mean ± std over seeds."
    )
    title = "GDU measurement time per backend"
    return _finish("gdu-times", title, caption, fig, (i for i, _ in chosen))


# --- all figures, saving ---


def traces_path(record: AnyRecord) -> Path | None:
    """Where a record's saved traces are: `traces` is relative to the JSONL file's folder, and
    only a path below that folder is followed (an absolute path or `..`: a one-line
    `EpbenchError`, `epbench.core.paths.inside`)."""
    record = as_record(record)
    if not record.traces:
        return None
    base = Path(record.file).parent if record.file else Path()
    return inside(base, record.traces, where=record.where, what="traces")


def record_traces(record: Record, path: Path) -> dict[str, dict[str, np.ndarray]]:
    """The saved traces at `path` of a GDU record, checked against it (`load_traces`: K of its
    dynamics, inputs of its model, the names of its `metrics.gdu`)."""
    steps, inputs = _get(record.config, "dynamics", "K"), _get(record.config, "model", "inputs")
    return load_traces(
        path,
        steps=steps if isinstance(steps, int) else None,
        inputs=inputs if isinstance(inputs, int) else None,
        names=tuple(per_name(record)),
    )


def figures(
    records: Sequence[AnyRecord], *, components: int = 3, checked: bool = False
) -> tuple[list[Plot], list[str]]:
    """Every figure the records support, and one note per figure that could not be drawn.
    Records whose metrics the views cannot show are reported and skipped first
    (`epbench.views.tables.usable`), unless `checked` (the caller did that already); a figure
    that still fails on a record's malformed payload is a note."""
    records = records_in(records) if checked else usable(records)
    require_matplotlib()
    plots: list[Plot] = []
    notes: list[str] = []
    for i, record in _ok(records, "gdu"):
        path = traces_path(record)
        if path is None:
            continue
        if not path.is_file():
            notes.append(f"{record.cell} on {record.backend}: traces {path} missing")
            continue
        plots.append(gdu_curve_plot(i, record, record_traces(record, path), components))
    if not plots:
        missing = "no record with saved traces (run with --save-traces)"
        notes.append(f"GDU curves: {missing if _ok(records, 'gdu') else 'no GDU records'}")
    builders: list[tuple[str, Callable[[], Plot | None]]] = [
        ("GDU bars", lambda: gdu_bars(records)),
        ("learning curves", lambda: learning_curves(records)),
        ("training dynamics", lambda: training_dynamics(records)),
        (
            "depth curves",
            lambda: sweep(
                records,
                x_of=_depth,
                name="depth-curves",
                xlabel="hidden layers N",
                what="depth",
                integer=True,
            ),
        ),
        (
            "angle curves",
            lambda: sweep(
                records,
                x_of=_angle,
                name="angle-curves",
                xlabel="angle α between feedback and forward weights (degrees)",
                what="feedback angle",
            ),
        ),
        ("β curves", lambda: beta_curves(records)),
        ("memory against K", lambda: memory_vs_k(records)),
        ("samples/s", lambda: samples_per_second(records)),
        ("GDU times", lambda: gdu_times(records)),
        ("convergence", lambda: convergence_curves(records)),
        ("gradient flow", lambda: gradient_flow_curves(records)),
    ]
    for label, build in builders:
        try:
            plot = build()
        except VIEW_ERRORS as err:
            notes.append(f"{label}: a record's metrics are malformed ({type(err).__name__}: {err})")
            continue
        if plot is None:
            notes.append(f"{label}: no data in these records")
        else:
            plots.append(plot)
    return _unique(plots), notes


def _unique(plots: list[Plot]) -> list[Plot]:
    """Give repeated file stems a suffix (-2, -3 …) so that no figure overwrites another."""
    seen: dict[str, int] = {}
    out = []
    for plot in plots:
        count = seen[plot.name] = seen.get(plot.name, 0) + 1
        if count > 1:
            plot = Plot(
                name=f"{plot.name}-{count}",
                title=plot.title,
                caption=plot.caption,
                figure=plot.figure,
                records=plot.records,
            )
        out.append(plot)
    return out


def save(plots: Iterable[Plot], out: Path, *, fmt: str = "png", dpi: int = 100) -> list[Path]:
    """Write each figure to `out/<name>.<fmt>`."""
    if fmt not in FORMATS:
        raise EpbenchError(f"--format: expected one of {', '.join(FORMATS)}, found {fmt!r}")
    make_folder(out)
    paths = []
    for plot in plots:
        path = output_path(out, f"{plot.name}.{fmt}")
        plot.figure.savefig(path, format=fmt, dpi=dpi)
        paths.append(path)
    return paths


# --- convergence and gradient flow (docs/theory.md §6.4) ---


def convergence_curves(records: Sequence[AnyRecord]) -> Plot | None:
    """GDU error ‖ΔEP + ∇BPTT‖ / ‖∇BPTT‖ against the residual ‖s_T − s_{T−1}‖ of the free
    phase, log-log, one line per `convergence` record (its T grid, epbench.measurements.
    convergence): the error falls with the residual down to the floor β's bias sets."""
    records = records_in(records)
    chosen = [
        (i, r) for i, r in _ok(records, "convergence") if r.metrics.get("residual") is not None
    ]
    if not chosen:
        return None
    fig, axes = _figure(1, 1, width=6.0, height=4.2)
    ax = axes[0][0]
    for n, (_, r) in enumerate(chosen):
        pairs = [
            (res, err)
            for res, err in zip(r.metrics["residual"], r.metrics["error"], strict=True)
            if res is not None and err is not None and res > 0 and err > 0
        ]
        if pairs:
            xs, ys = zip(*pairs, strict=True)
            style = ["-o", "--s", ":^", "-.v"][n % 4]
            ax.loglog(xs, ys, style, ms=4, label=f"{r.cell} · {r.backend} · {r.dtype}")
    ax.set_xlabel("residual ‖s_T − s_(T−1)‖ of the free phase")
    ax.set_ylabel("‖ΔEP + ∇BPTT‖ / ‖∇BPTT‖")
    ax.invert_xaxis()  # longer free phases to the right
    ax.legend(fontsize=6, loc="upper left", bbox_to_anchor=(1.02, 1.0))
    caption = (
        f"{describe([r for _, r in chosen])}.\nOne point per free-phase length T of the grid "
        "(K and β fixed); a residual of exactly 0 (a fixed point to the last bit) is not drawn."
    )
    title = "Convergence: GDU error against the free phase's residual"
    return _finish("convergence", title, caption, fig, (i for i, _ in chosen))


def gradient_flow_curves(records: Sequence[AnyRecord]) -> Plot | None:
    """‖∇BPTT_s(t)‖ against the steps back t, log scale, one line per weight scale (solid when the
    free phase converged, dotted when not) with c·ρ^t dashed in the same colour; one panel per
    configuration (without `model.weight_scale`) · backend · dtype
    (epbench.measurements.gradient_flow)."""
    records = records_in(records)
    groups: dict[tuple, list[tuple[int, Record]]] = defaultdict(list)
    for i, r in _ok(records, "gradient-flow"):
        if any(v is not None for v in r.metrics.get("bptt_norm") or []):
            key = _config_key(r, ("model", "weight_scale"))
            groups[(key, r.backend, r.dtype)].append((i, r))
    if not groups:
        return None
    fig, axes = _figure(1, len(groups), width=5.0, height=3.8)
    from matplotlib import colormaps

    palette = colormaps["tab10"].colors
    for ax, members in zip(axes[0], groups.values(), strict=True):
        members.sort(key=lambda m: _number(_get(m[1].config, "model", "weight_scale")) or 1.0)
        for c, (_, r) in enumerate(members):
            m, colour = r.metrics, palette[c % 10]
            scale = _number(_get(r.config, "model", "weight_scale")) or 1.0
            norms = [math.nan if v is None else v for v in m["bptt_norm"]]
            style = "-" if m.get("converged") else ":"
            label = f"×{scale:g}: ρ = {m['rho']:.3g}" if m.get("rho") is not None else f"×{scale:g}"
            label += "" if m.get("converged") else " (not convergent)"
            ax.semilogy(range(len(norms)), norms, style, color=colour, label=label)
            if m.get("rho") and math.isfinite(norms[0]) and norms[0] > 0:
                t = np.arange(len(norms))
                ax.semilogy(t, norms[0] * m["rho"] ** t, "--", color=colour, lw=0.8)
        first = members[0][1]
        model = _get(first.config, "model") or {}
        kind = model.get("setting") if model.get("cell", "phi") == "phi" else model["cell"]
        where = f"{kind} {model.get('sizes')} · {first.backend} · {first.dtype}"
        ax.set_title(f"{first.task}: {where}", fontsize=8)
        ax.set_xlabel("steps back in time t")
        ax.set_ylabel("‖∇BPTT_s(t)‖")
        ax.legend(fontsize=6)
    used = [m for v in groups.values() for m in v]
    caption = (
        f"{describe([r for _, r in used])}.\nBPTT's state gradient from s_T, one line per weight "
        "scale; dashed: ‖∇BPTT_s(0)‖·ρ^t with ρ the spectral radius of ∂F/∂s at s_T (power "
        "iteration). Dotted: the free phase did not converge (ρ is then that of the last state)."
    )
    title = "Gradient flow: BPTT's state gradients against steps back"
    return _finish("gradient-flow", title, caption, fig, (i for i, _ in used))
