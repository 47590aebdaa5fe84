"""The `gdu` measurement: EP's per-step updates against BPTT's per-step gradients on one
mini-batch at the initial weights — the GDU theorem, step by step (docs/theory.md §2, §4).

What comes in: a resolved `Cell` (epbench.core.measurement), its backend, the cell's mini-batch
(`inputs = "batch"`) and where to write saved traces. What goes out: the record's `metrics` —
`residual` ‖s_T − s_{T−1}‖, `gdu` (per canonical name: RMSE, sign agreement, cosine, relative error;
epbench.core.metrics), the signal steps, and `saturated_outputs` for saturating models —, `timings`
(the first run apart from the best of `repeat` steady runs, each phase with the device
synchronised around it) and, with `save_traces`, the `.npz` of the traces (epbench.core.traces).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from epbench.core.estimators import nudge_keywords
from epbench.core.liveness import exit_if_orphaned
from epbench.core.measurement import Cell, Output
from epbench.core.metrics import gdu_metrics, signal_metrics
from epbench.core.params import init_params
from epbench.core.paths import file_part, output_path
from epbench.core.process_memory import peak_memory_bytes
from epbench.core.protocols import Backend, Network
from epbench.core.spec import TaskSpec
from epbench.core.support import estimator_reason
from epbench.core.traces import save_traces


@dataclass(frozen=True, kw_only=True)
class GduResult:
    ep: dict[str, np.ndarray]
    bptt: dict[str, np.ndarray]
    residual: float
    seconds: dict[str, float]
    saturated: float | None  # share of output units at a bound at s_* (`saturated_outputs`)


def saturated_outputs(spec: TaskSpec, net: Network, star: Any) -> float | None:
    """The share of output units (over the batch) exactly at 0 or 1 at the fixed point `star`,
    where σ' = 0, for a model that saturates (hardsigm or clamp); None for the others. On those
    units the paper's nudge moves s⁰ and BPTT passes no gradient, so the larger the share, the
    further EP's update is from BPTT's in the P setting (docs/theory.md §6.8)."""
    if spec.model.activation != "hardsigm" and not spec.model.clamp:
        return None
    s0 = np.asarray(net.states(star)["s0"])
    return float(np.mean((s0 == 0.0) | (s0 == 1.0)))


def unsaturated_target(net: Network, star: Any, y: Any) -> np.ndarray:
    """The EP target of `dynamics.nudge = "unsaturated"` (a documented deviation from the paper,
    docs/theory.md §6.8): y, except s⁰_* on the output units at a bound of the hard sigmoid or
    the clamp (exactly 0 or 1) at the fixed point `star`. There σ' is 0, BPTT passes no gradient,
    and the paper's nudge β (y − s⁰) would still move the unit (it is added after σ): linearising
    both phases around s_* shows EP then estimates BPTT's gradient only for y on the unsaturated
    units. Same dtype as y."""
    y = np.asarray(y)
    s0 = np.asarray(net.states(star)["s0"], dtype=y.dtype)
    return np.where((s0 == 0.0) | (s0 == 1.0), s0, y)


def gdu_once(
    net: Network, params: Any, x: Any, y: Any, spec: TaskSpec, *, nudge: dict[str, Any]
) -> GduResult:
    """One GDU measurement: T − K free steps, K more (the residual), BPTT through those K steps,
    EP from the fixed point. Each phase is timed with the device synchronised around it."""
    T, K = spec.dynamics.T, spec.dynamics.K
    seconds: dict[str, float] = {}

    def timed(key: str, call: Callable[[], Any]) -> Any:
        net.synchronize()
        start = time.perf_counter()
        out = call()
        net.synchronize()
        seconds[key] = time.perf_counter() - start
        return out

    mid, _ = timed("free_before", lambda: net.free_phase(params, x, steps=T - K))
    star, residual = timed("free_last", lambda: net.free_phase(params, x, steps=K, start=mid))
    bptt = timed("bptt", lambda: net.bptt_trace(params, x, y, start=mid, steps=K))
    target = y if spec.dynamics.nudge == "output" else unsaturated_target(net, star, y)
    ep = timed(
        "ep",
        lambda: net.ep_trace(params, x, target, start=star, steps=K, **nudge),
    )
    seconds["total"] = sum(seconds.values())
    saturated = saturated_outputs(spec, net, star)
    return GduResult(
        ep=ep, bptt=bptt, residual=float(residual), seconds=seconds, saturated=saturated
    )


def _finite(traces: dict[str, np.ndarray]) -> bool:
    return all(np.all(np.isfinite(v)) for v in traces.values())


def traces_path(cell: Cell, output: Output) -> Path:
    """Where the cell's saved traces go: `<traces folder>/<cell>_<backend>_<dtype>_seed<seed>.npz`
    (brackets of the cell name as parentheses; `epbench.core.paths.output_path`: never outside
    the records folder)."""
    stem = file_part(f"{cell.spec.cell}_{cell.backend}_{cell.dtype}_seed{cell.seed}")
    return output_path(output.folder, output.traces_folder.name, stem + ".npz")


def run(cell: Cell, backend: Backend, batch: tuple, output: Output) -> dict[str, Any]:
    """Measure one GDU cell on one backend: the record's fields (module doc)."""
    spec, dtype = cell.spec, cell.dtype
    x, y = (np.asarray(a, dtype=dtype) for a in batch)
    params_np = init_params(spec.model, seed=cell.seed, dtype=dtype)
    reason = estimator_reason(spec.model, spec.dynamics)
    if reason:
        return {"status": "skipped", "reason": reason}
    nudge = nudge_keywords(spec.dynamics, seed=cell.seed)  # beta, symmetric [, points]
    start = time.perf_counter()
    net = backend.build(spec.model, dtype=dtype, device=cell.device)
    params = net.load(params_np)
    first = gdu_once(net, params, x, y, spec, nudge=nudge)
    first_seconds = time.perf_counter() - start
    steady = [gdu_once(net, params, x, y, spec, nudge=nudge) for _ in range(cell.repeat)]
    best = min(steady, key=lambda r: r.seconds["total"]) if steady else first
    part: dict[str, Any] = {
        "timings": {
            "first_seconds": first_seconds,
            "steady_seconds": best.seconds["total"] if steady else None,
            "phases": best.seconds,
            "repeats": cell.repeat,
        },
        "peak_memory_bytes": peak_memory_bytes(),
    }
    if not (_finite(first.ep) and _finite(first.bptt)) or not math.isfinite(first.residual):
        return {**part, "status": "diverged", "reason": "non-finite states or traces"}
    part["metrics"] = {
        "residual": first.residual,
        "saturated_outputs": first.saturated,
        "gdu": gdu_metrics(first.bptt, first.ep),
        **signal_metrics(first.bptt, first.ep),
    }
    if cell.save_traces:
        exit_if_orphaned()  # a worker whose coordinator is gone writes nothing
        path = save_traces(
            traces_path(cell, output), params=params_np, x=x, y=y, ep=first.ep, bptt=first.bptt
        )
        part["traces"] = str(path.relative_to(output.folder))
    return part
