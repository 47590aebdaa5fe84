"""Views of `gdu` records: the per-layer table of one record, one row per record, and the text
`epbench run` prints as a GDU cell ends (docs/theory.md §2: ΔEP against −∇BPTT, step by step).

What comes in: records (`Record`s or the run loop's dicts) whose `metrics` hold `residual`,
`saturated_outputs` and, per canonical name, `metrics.gdu[name]` = {rmse, rmse_std, cosine,
sign, rel_error}; `timings` = {steady_seconds, first_seconds}. What goes out: text.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from tabulate import tabulate

from epbench.core.params import layer_of
from epbench.core.record import Record, metrics_of
from epbench.views.format import AnyRecord, heading, num, reason, records_in


def per_name(record: Record) -> Mapping[str, Mapping[str, Any]]:
    """`metrics.gdu` of a record: canonical name → its GDU numbers (empty when none)."""
    return metrics_of(record, "gdu")


def gdu_values(record: Record, key: str) -> list[float]:
    """The values of `key` (rmse, cosine, sign, rel_error …) over the record's names."""
    return [m[key] for m in per_name(record).values() if m.get(key) is not None]


def worst(record: Record, key: str, pick: Callable[[list[float]], float]) -> float | None:
    """`pick` (max or min) of `gdu_values`, or None when the record has none."""
    values = gdu_values(record, key)
    return pick(values) if values else None


def layer_table(record: AnyRecord) -> str:
    """Per canonical name of one GDU record: RMSE (mean ± std over components), cosine of the
    totals, sign agreement, relative error ‖ΔEP + ∇BPTT‖ / ‖∇BPTT‖. Parameters first, by layer."""
    gdu = per_name(records_in([record])[0])
    names = sorted(gdu, key=lambda n: (n.startswith("s"), layer_of(n), n))
    rows = [
        [
            name,
            layer_of(name),
            f"{num(m.get('rmse'))} ± {num(m.get('rmse_std'))}",
            num(m.get("cosine"), ".6f"),
            num(m.get("sign"), ".3f"),
            num(m.get("rel_error"), ".2e"),
        ]
        for name, m in ((n, gdu[n]) for n in names)
    ]
    headers = ["name", "layer", "RMSE (mean ± std)", "cosine (total)", "sign", "rel. error"]
    return tabulate(rows, headers=headers, tablefmt="github")


SUMMARY_HEADERS = (
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
)


def gdu_table(records: Iterable[AnyRecord]) -> str:
    """One row per record: cell, preset, backend, dtype, seed, status, residual, worst RMSE and
    cosine, steady-state and first-run seconds (or the reason of a skip or failure)."""
    rows = [
        [
            r.cell,
            r.preset,
            r.backend,
            r.dtype,
            r.seed,
            r.status,
            num(r.metrics.get("residual"), ".1e"),
            num(worst(r, "rmse", max)),
            num(worst(r, "cosine", min), ".6f"),
            num(r.timings.get("steady_seconds"), ".3f"),
            num(r.timings.get("first_seconds"), ".3f"),
            reason(r, 60),
        ]
        for r in records_in(records)
    ]
    return tabulate(rows, headers=list(SUMMARY_HEADERS), tablefmt="github")


def saturation_note(record: Record) -> str:
    """The line on output units at 0 or 1 at the fixed point (hardsigm or clamp models), or ""."""
    saturated = record.metrics.get("saturated_outputs")
    if not saturated:
        return ""
    dynamics = record.config.get("dynamics")
    nudge = dynamics.get("nudge", "output") if isinstance(dynamics, Mapping) else "output"
    why = (
        "BPTT passes them no gradient, the paper's nudge still moves them; "
        "--set dynamics.nudge=unsaturated nudges only the others)"
        if nudge == "output"
        else "not nudged, dynamics.nudge = unsaturated)"
    )
    return f"\n{100 * saturated:.0f} % of output units at 0 or 1 at the fixed point (σ' = 0: {why}"


def format_gdu(record: AnyRecord) -> str:
    """The heading and per-layer table of one GDU record, its residual and times, and the
    saturation note (or the heading and the reason of a record that is not ok)."""
    r = records_in([record])[0]
    head = heading(r)
    if r.status != "ok":
        return f"{head}: {r.reason}"
    tail = (
        f"residual ‖s_T − s_(T−1)‖ = {num(r.metrics.get('residual'), '.2e')}; steady "
        f"{num(r.timings.get('steady_seconds'), '.3f')} s, first run "
        f"{num(r.timings.get('first_seconds'), '.3f')} s"
    )
    return f"{head}\n{layer_table(r)}\n{tail}{saturation_note(r)}"
