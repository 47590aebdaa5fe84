"""The `beta-sweep` measurement: how the EP estimators' error against BPTT shrinks with β.

docs/theory.md §2: at a free fixed point of a model whose dynamics are a gradient (`F = ∂Φ/∂s`, the
EB setting), ΔEP(β, t) → −∇BPTT(t) as β → 0, with an error `O(β)` for the one-sided estimators
(+β, −β) and `O(β²)` for the symmetric one (±β, half the difference). One cell runs the free phase
once (`T − K` steps, then `K` more whose last change is the residual), the BPTT trace once
(through the last `K` steps), and one EP trace per estimator and |β| of the grid
(`dynamics.betas`, default `DEFAULT_BETAS`), all from the same fixed point `s_*`.

The error of one EP trace is the relative Frobenius error over every step `t < K` and every
parameter (all canonical parameter names concatenated; states left out):

    error(β) = ‖ΔEP + ∇BPTT‖_F / ‖∇BPTT‖_F,

and `error_max` the largest `metrics.relative_error` of a single name, states included. The
record holds both per estimator and |β|, and their log-log slopes: least squares of log error on
log |β| over the grid (`fit_slope`), ≈ 1 one-sided, ≈ 2 symmetric while the bias dominates. At
very small β the float round-off of `(s^β_{t+1} − s^β_t) / β` (≈ 1e-16 / β in float64, 1e-7 / β in
float32) and a free phase short of its fixed point add an error that does not shrink with β and
flattens the slope; the default grid 1e-3 … 1e-1 keeps the bias dominant for float64 at a fixed
point. In the P setting `F` is only close to a gradient: the error levels off as β → 0.

Holomorphic EP (docs/theory.md §2.5) joins as the estimator `holomorphic-N`, N = `dynamics.points`
(`--sweep dynamics.points=2,3,4`: one record per N), where the model allows it
(`epbench.core.support.estimator_reason`), expected slope N. Its bias O(|β|^N) meets the round-off
within the grid for N ≥ 3, so its slope is fit over the grid points whose error is above
`FLOOR_FACTOR` times the round-off scale ε_dtype / |β| (`slope_points` lists how many were used;
None below two).
"""

from __future__ import annotations

import math
import time
from dataclasses import replace
from typing import Any

import numpy as np

from epbench.core.estimators import points_of
from epbench.core.measurement import Cell, Output
from epbench.core.metrics import is_state, relative_error
from epbench.core.params import init_params
from epbench.core.protocols import Backend
from epbench.core.spec import TaskSpec
from epbench.core.support import estimator_reason

DEFAULT_BETAS = (1e-3, 2e-3, 5e-3, 1e-2, 2e-2, 5e-2, 1e-1)
ESTIMATORS = ("positive", "negative", "symmetric")  # random-sign is one of the first two per draw
EXPECTED_SLOPE = {"positive": 1.0, "negative": 1.0, "symmetric": 2.0}
FLOOR_FACTOR = 100.0  # holomorphic slopes: grid points with error > FLOOR_FACTOR · ε / |β| only


def estimators_of(spec: TaskSpec) -> dict[str, dict[str, Any]]:
    """The swept estimators → their nudge keywords (`beta` sign aside): `ESTIMATORS`, and
    `holomorphic-N` (N = `dynamics.points`) where the model allows holomorphic EP."""
    out: dict[str, dict[str, Any]] = {e: {"symmetric": e == "symmetric"} for e in ESTIMATORS}
    holo = replace(spec.dynamics, estimator="holomorphic")
    if estimator_reason(spec.model, holo) is None:
        out[f"holomorphic-{holo.points}"] = {"points": points_of(holo)}
    return out


def expected_slope(estimator: str) -> float:
    """1 one-sided, 2 symmetric, N for `holomorphic-N`."""
    if estimator.startswith("holomorphic-"):
        return float(estimator.split("-")[1])
    return EXPECTED_SLOPE[estimator]


def floor_slope(betas: list[float], errors: list[float], *, dtype: str) -> tuple[float | None, int]:
    """`fit_slope` over the grid points above the round-off floor (module doc), and their count."""
    eps = float(np.finfo(dtype).eps)
    kept = [(b, e) for b, e in zip(betas, errors, strict=True) if e > FLOOR_FACTOR * eps / b]
    if len(kept) < 2:
        return None, len(kept)
    return fit_slope([b for b, _ in kept], [e for _, e in kept]), len(kept)


def fit_slope(betas: list[float], errors: list[float]) -> float | None:
    """Least-squares slope of log(error) on log(|β|); None when an error is not a positive finite
    number or fewer than two points are given."""
    if len(betas) < 2 or not all(math.isfinite(e) and e > 0 for e in errors):
        return None
    slope, _ = np.polyfit(np.log(np.abs(betas)), np.log(errors), 1)
    return float(slope)


def sweep_error(bptt: dict[str, np.ndarray], ep: dict[str, np.ndarray]) -> float:
    """‖ΔEP + ∇BPTT‖_F / ‖∇BPTT‖_F over every step and every parameter name (module doc)."""
    names = [n for n in bptt if not is_state(n)]
    diff = math.sqrt(sum(float(np.sum((ep[n] + bptt[n]) ** 2)) for n in names))
    ref = math.sqrt(sum(float(np.sum(bptt[n] ** 2)) for n in names))
    return diff / ref if ref > 0 else (0.0 if diff == 0 else math.inf)


def betas_of(spec: TaskSpec) -> list[float]:
    """The sweep's |β| grid, ascending: `dynamics.betas`, or `DEFAULT_BETAS`."""
    return sorted(abs(b) for b in (spec.dynamics.betas or DEFAULT_BETAS))


def run(cell: Cell, backend: Backend, batch: tuple, output: Output) -> dict[str, Any]:
    """Measure one beta-sweep cell on one backend (module doc): the record's fields. `batch` is
    the cell's mini-batch. `metrics`: residual, betas, and per estimator (`ESTIMATORS`) the lists
    `error` and `error_max` (one entry per β), `slope` and `slope_max`, and `per_name` (name →
    list of relative errors)."""
    spec, dtype = cell.spec, cell.dtype
    x, y = (np.asarray(a, dtype=dtype) for a in batch)
    T, K = spec.dynamics.T, spec.dynamics.K
    betas = betas_of(spec)
    swept = estimators_of(spec)
    error: dict[str, list[float]] = {e: [] for e in swept}
    error_max: dict[str, list[float]] = {e: [] for e in swept}
    per_name: dict[str, dict[str, list[float]]] = {e: {} for e in swept}
    start = time.perf_counter()
    net = backend.build(spec.model, dtype=dtype, device=cell.device)
    params = net.load(init_params(spec.model, seed=cell.seed, dtype=dtype))
    mid, _ = net.free_phase(params, x, steps=T - K)
    star, residual = net.free_phase(params, x, steps=K, start=mid)
    bptt = net.bptt_trace(params, x, y, start=mid, steps=K)
    for estimator, nudge in swept.items():
        for beta in betas:
            ep = net.ep_trace(
                params,
                x,
                y,
                start=star,
                beta=-beta if estimator == "negative" else beta,
                steps=K,
                **nudge,
            )
            error[estimator].append(sweep_error(bptt, ep))
            names = {n: relative_error(bptt[n], ep[n]) for n in bptt}
            error_max[estimator].append(max(names.values()))
            for name, value in names.items():
                per_name[estimator].setdefault(name, []).append(value)
    net.synchronize()
    seconds = time.perf_counter() - start
    part: dict[str, Any] = {
        "estimator": ",".join(swept),
        "beta_used": None,
        "symmetric": None,
        "timings": {"first_seconds": seconds, "steady_seconds": None, "repeats": 0},
    }
    part["metrics"] = {
        "residual": float(residual),
        "betas": betas,
        "error": error,
        "error_max": error_max,
        "slope": {e: _slope(betas, error[e], e, dtype) for e in swept},
        "slope_max": {e: _slope(betas, error_max[e], e, dtype) for e in swept},
        "expected_slope": {e: expected_slope(e) for e in swept},
        "per_name": per_name,
    }
    holo = [e for e in swept if e.startswith("holomorphic-")]
    if holo:
        part["metrics"]["slope_points"] = {
            e: floor_slope(betas, error[e], dtype=dtype)[1] for e in holo
        }
    values = [v for e in swept for v in error[e] + error_max[e]]
    if not math.isfinite(residual) or not all(math.isfinite(v) for v in values):
        return {**part, "status": "diverged", "reason": "non-finite states or traces"}
    return part


def _slope(betas: list[float], errors: list[float], estimator: str, dtype: str) -> float | None:
    """`fit_slope`, above the round-off floor for the holomorphic estimator (module doc)."""
    if estimator.startswith("holomorphic-"):
        return floor_slope(betas, errors, dtype=dtype)[0]
    return fit_slope(betas, errors)
