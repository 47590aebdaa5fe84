"""The `convergence` measurement: how the GDU agreement depends on the first phase having converged
(docs/theory.md §2, §6.4).

The theorem holds at a fixed point: ΔEP(β, t) → −∇BPTT(t) as β → 0 when s_{T−K} = s_*. A free
phase cut short leaves the states away from s_*: BPTT then differentiates a trajectory that still
moves and EP's nudged phase starts from a point that is not its fixed point, so their disagreement
has a part that does not shrink with β. Sweeping T at fixed K and β shows both parts: the error
falls with the residual until it meets the floor that β's bias sets (O(β) one-sided, O(β²)
symmetric).

What comes in: a resolved `Cell` (K, β, the estimator, the grid `dynamics.sweep_T` or
`default_grid`), its backend and the cell's mini-batch (`inputs = "batch"`). Per T of the grid,
with K_T = min(K, T): T − K_T free steps from zero (s_{T−K}), K_T more (s_T and the residual),
BPTT through those K_T steps, EP for K_T steps from s_T. What goes out: `metrics` with the grid
`T`, `K` (the K_T used) and per T the lists

    residual       ‖s_T − s_{T−1}‖
    distance       ‖s_T − s_ref‖, s_ref the state after `REFERENCE_FACTOR` × max(T) steps
                   (its own residual is `reference_residual`)
    error          ‖ΔEP + ∇BPTT‖ / ‖∇BPTT‖ over every parameter and step
                   (epbench.measurements.beta_sweep.sweep_error)
    min_cosine     the smallest cosine of the per-name totals Σ_t ΔEP and −Σ_t ∇BPTT (states
                   and parameters, epbench.core.metrics)
    update_cosine  the cosine of the training step's updates, Σ_t ΔEP_θ against −Σ_t ∇BPTT_θ,
                   all parameters concatenated

and `floor`, the error at the longest T (the β-limited floor where the free phase converged).
"""

from __future__ import annotations

import math
import time
from typing import Any

import numpy as np

from epbench.core.estimators import signed_beta
from epbench.core.measurement import Cell, Output
from epbench.core.metrics import cosine, gdu_metrics, is_state
from epbench.core.params import init_params
from epbench.core.protocols import Backend, Network
from epbench.core.spec import TaskSpec
from epbench.measurements.beta_sweep import sweep_error

REFERENCE_FACTOR = 2  # the reference run is this many times the grid's longest T
GRID_POINTS = 10


def default_grid(T: int) -> tuple[int, ...]:
    """`GRID_POINTS` free-phase lengths from 2 to 4·T on a log scale (duplicates removed)."""
    grid = np.geomspace(2, 4 * T, GRID_POINTS)
    return tuple(sorted({round(float(v)) for v in grid}))


def grid_of(spec: TaskSpec) -> tuple[int, ...]:
    """The sweep's T grid, ascending: `dynamics.sweep_T`, or `default_grid(dynamics.T)`."""
    return tuple(sorted(set(spec.dynamics.sweep_T))) or default_grid(spec.dynamics.T)


def _distance(net: Network, a: Any, b: Any) -> float:
    """‖a − b‖ over every layer of two native states."""
    sa, sb = net.states(a), net.states(b)
    return math.sqrt(sum(float(np.sum((sa[k] - sb[k]) ** 2)) for k in sa))


def update_cosine(bptt: dict[str, np.ndarray], ep: dict[str, np.ndarray]) -> float:
    """Cosine of Σ_t ΔEP_θ and −Σ_t ∇BPTT_θ, all parameters concatenated (states left out)."""
    names = [n for n in bptt if not is_state(n)]
    u = np.concatenate([np.sum(ep[n], axis=0).ravel() for n in names])
    v = np.concatenate([-np.sum(bptt[n], axis=0).ravel() for n in names])
    return cosine(u, v)


def one_length(
    net: Network, params: Any, x, y, *, T: int, K: int, beta: float, symmetric: bool, ref: Any
) -> dict[str, float]:
    """The metrics of one free-phase length T with K nudged / backpropagated steps (module doc)."""
    mid, _ = net.free_phase(params, x, steps=T - K)
    star, residual = net.free_phase(params, x, steps=K, start=mid)
    bptt = net.bptt_trace(params, x, y, start=mid, steps=K)
    ep = net.ep_trace(params, x, y, start=star, beta=beta, steps=K, symmetric=symmetric)
    cosines = [m["cosine"] for m in gdu_metrics(bptt, ep).values()]
    return {
        "residual": float(residual),
        "distance": _distance(net, star, ref),
        "error": sweep_error(bptt, ep),
        "min_cosine": min((c for c in cosines if math.isfinite(c)), default=math.nan),
        "update_cosine": update_cosine(bptt, ep),
    }


KEYS = ("residual", "distance", "error", "min_cosine", "update_cosine")


def run(cell: Cell, backend: Backend, batch: tuple, output: Output) -> dict[str, Any]:
    """Measure one convergence cell on one backend (module doc): the record's fields."""
    spec, dtype = cell.spec, cell.dtype
    x, y = (np.asarray(a, dtype=dtype) for a in batch)
    grid = grid_of(spec)
    beta, symmetric = signed_beta(spec.dynamics, seed=cell.seed)
    start = time.perf_counter()
    net = backend.build(spec.model, dtype=dtype, device=cell.device)
    params = net.load(init_params(spec.model, seed=cell.seed, dtype=dtype))
    ref, ref_residual = net.free_phase(params, x, steps=REFERENCE_FACTOR * grid[-1])
    series: dict[str, list[float]] = {k: [] for k in KEYS}
    steps = []
    for T in grid:
        K = min(spec.dynamics.K, T)
        steps.append(K)
        point = one_length(net, params, x, y, T=T, K=K, beta=beta, symmetric=symmetric, ref=ref)
        for key in KEYS:  # None for a NaN (a cosine of an all-zero trace) or an overflow
            series[key].append(point[key] if math.isfinite(point[key]) else None)
    net.synchronize()
    metrics = {
        "T": list(grid),
        "K": steps,
        "reference_T": REFERENCE_FACTOR * grid[-1],
        "reference_residual": float(ref_residual),
        **series,
        "floor": series["error"][-1],  # the error at the longest T
    }
    part: dict[str, Any] = {
        "metrics": metrics,
        "timings": {
            "first_seconds": time.perf_counter() - start,
            "steady_seconds": None,
            "repeats": 0,
        },
    }
    if any(v is None for k in ("residual", "error") for v in series[k]):
        return {**part, "status": "diverged", "reason": "non-finite states or traces"}
    return part
