"""The `gradient-flow` measurement: why BPTT's gradients neither vanish nor explode in a convergent
RNN, and when they do (docs/theory.md §6.4).

At a free fixed point s_* = F(x, s_*, θ) every step back in time multiplies BPTT's state gradient
by the same Jacobian transposed: ∇BPTT_s(t+1) = Jᵀ ∇BPTT_s(t), J = ∂F/∂s (s_*), so
‖∇BPTT_s(t)‖ ≈ c · ρ^t with ρ the spectral radius of J: a stable fixed point (ρ < 1) makes the
gradient fade geometrically at a rate the dynamics set, with no explosion; past ρ = 1 the fixed
point is lost and the free phase oscillates or blows up. EP's neuron traces ΔEP_s(β, t) relax to
the nudged fixed point at the same rate (the nudged Jacobian is J up to O(β)).

What comes in: a resolved `Cell` (T free steps, K steps back, β), its backend, the cell's
mini-batch (`inputs = "batch"`). The network must offer `epbench.core.protocols.FlowNetwork`
(`state_jvp`); without it the cell is skipped with the reason. What goes out: `metrics` with

    converged        whether the free phase reached a fixed point: finite states and a relative
                     residual ‖s_T − s_{T−1}‖ / ‖s_T‖ ≤ `CONVERGED` of the dtype
    why              "" when converged; else "diverged: non-finite states" or "residual does not
                     fall: …" (the cell stays `ok`: non-convergence is the finding, not a fault)
    residual         ‖s_T − s_{T−1}‖
    rho              the spectral radius of J at s_T by power iteration on Jacobian-vector products
                     (`spectral_radius`), None when s_T is not finite
    bptt_norm        ‖∇BPTT_s(t)‖ for t = 0 … K−1 (all layers, batch-summed traces of
                     `bptt_trace` from s_T), None entries where not finite
    bptt_rate        the fitted decay rate per step of `bptt_norm` (`decay_rate`)
    rate_error       |bptt_rate − rho| / rho
    ep_norm, ep_rate ‖ΔEP_s(β, t)‖ and its fitted rate, from s_T; None where GDU does not apply
                     (a free phase that did not converge, or a standard RNN, which has no EP)
    gdu_error        ‖ΔEP + ∇BPTT‖ / ‖∇BPTT‖ over all parameters and steps
                     (epbench.measurements.beta_sweep.sweep_error), or None where not applicable
"""

from __future__ import annotations

import math
import time
from typing import Any

import numpy as np

from epbench.core.estimators import signed_beta
from epbench.core.measurement import Cell, Output
from epbench.core.params import init_params
from epbench.core.protocols import Backend, FlowNetwork, Network
from epbench.measurements.beta_sweep import sweep_error

POWER_STEPS = 300  # power iterations; the estimate is the geometric mean of the last half
CONVERGED = {"float64": 1e-9, "float32": 1e-5}  # relative residual of a converged free phase
FIT_FLOOR = 1e-250  # norms below are left out of the fit (float64 underflow ahead)
EP_FLOOR = {"float64": 1e-8, "float32": 1e-3}  # EP trace norms below this share of the largest


def state_norm(states: dict[str, np.ndarray]) -> float:
    """Euclidean norm over every layer of canonical states (or one step of their traces)."""
    return math.sqrt(
        sum(float(np.sum(np.asarray(v, dtype=np.float64) ** 2)) for v in states.values())
    )


def spectral_radius(
    net: FlowNetwork, params: Any, x: Any, *, at: Any, shapes: dict[str, tuple], seed: int
) -> float:
    """ρ(∂F/∂s) at the states `at` by power iteration: v ← J v / ‖J v‖ from a seeded Gaussian v,
    `POWER_STEPS` times; ρ is the geometric mean of the growth factors ‖J v‖ of the last half.
    `shapes`: the canonical state shapes (`Network.states`).
    (For a real J whose dominant eigenvalues are a complex pair the direction rotates but the
    mean growth still tends to ρ; for ρ = 0, e.g. a feed-forward Jacobian, it returns 0.)"""
    rng = np.random.default_rng([seed, 7])
    v = {k: rng.standard_normal(shape) for k, shape in shapes.items()}
    norm = state_norm(v)
    v = {k: a / norm for k, a in v.items()}
    logs = []
    for i in range(POWER_STEPS):
        w = net.state_jvp(params, x, at=at, tangent=v)
        growth = state_norm(w)
        if not math.isfinite(growth):
            return math.inf
        if growth == 0.0:
            return 0.0
        if i >= POWER_STEPS // 2:
            logs.append(math.log(growth))
        v = {k: a / growth for k, a in w.items()}
    return math.exp(sum(logs) / len(logs))


def decay_rate(norms: list[float | None], *, relative_floor: float = 0.0) -> float | None:
    """The per-step rate r of norms ≈ c · r^t: exp of the least-squares slope of log norm on t
    over the second half (past the transient of the faster modes) of the leading steps whose
    norm is finite and above the floor — `FIT_FLOOR` (float64 underflow ahead), and
    `relative_floor` × the largest norm (EP's traces are differences of states, which stop
    falling at round-off); None with fewer than three such points."""
    finite = [n for n in norms if n is not None and math.isfinite(n)]
    floor = max(FIT_FLOOR, relative_floor * max(finite, default=0.0))
    usable = 0
    for n in norms:
        if n is None or not math.isfinite(n) or n <= floor:
            break
        usable += 1
    points = [(t, math.log(norms[t])) for t in range(usable // 2, usable)]  # type: ignore[arg-type]
    if len(points) < 3:
        return None
    slope, _ = np.polyfit([p[0] for p in points], [p[1] for p in points], 1)
    return float(math.exp(slope))


def trace_norms(traces: dict[str, np.ndarray], states: list[str]) -> list[float | None]:
    """‖trace(t)‖ over the state names `states` for every step t; None where not finite."""
    steps = len(traces[states[0]])
    norms = [state_norm({k: traces[k][t] for k in states}) for t in range(steps)]
    return [n if math.isfinite(n) else None for n in norms]


def _convergence(net: Network, s_T: Any, residual: float, dtype: str) -> str:
    """ "" for a converged free phase; else why not (module doc)."""
    size = state_norm(net.states(s_T))
    if not (math.isfinite(residual) and math.isfinite(size)):
        return "diverged: non-finite states"
    relative = residual / max(size, 1e-300)
    if relative > CONVERGED[dtype]:
        return (
            f"residual does not fall: ‖s_T − s_(T−1)‖ / ‖s_T‖ = {relative:.2e} > "
            f"{CONVERGED[dtype]:g}"
        )
    return ""


def run(cell: Cell, backend: Backend, batch: tuple, output: Output) -> dict[str, Any]:
    """Measure one gradient-flow cell on one backend (module doc): the record's fields."""
    spec, dtype = cell.spec, cell.dtype
    x, y = (np.asarray(a, dtype=dtype) for a in batch)
    T = spec.dynamics.T
    start = time.perf_counter()
    net = backend.build(spec.model, dtype=dtype, device=cell.device)
    if not isinstance(net, FlowNetwork):
        return {"status": "skipped", "reason": f"{backend.name}: no state_jvp for this model"}
    params = net.load(init_params(spec.model, seed=cell.seed, dtype=dtype))
    with np.errstate(all="ignore"):
        s_T, residual = net.free_phase(params, x, steps=T)
        why = _convergence(net, s_T, float(residual), dtype)
        finite = not why.startswith("diverged")
        shapes = {k: np.shape(v) for k, v in net.states(s_T).items()}
        rho = (
            spectral_radius(net, params, x, at=s_T, shapes=shapes, seed=cell.seed)
            if finite
            else None
        )
        metrics: dict[str, Any] = {
            "converged": not why,
            "why": why,
            "residual": float(residual) if math.isfinite(residual) else None,
            "rho": rho if rho is None or math.isfinite(rho) else None,
            "bptt_norm": None,
            "bptt_rate": None,
            "rate_error": None,
            "ep_norm": None,
            "ep_rate": None,
            "gdu_error": None,
        }
        if finite:
            metrics.update(_traces(net, params, x, y, cell, at=s_T, gdu=not why))
    rate, rho = metrics["bptt_rate"], metrics["rho"]
    if rate is not None and rho:
        metrics["rate_error"] = abs(rate - rho) / rho
    net.synchronize()
    seconds = time.perf_counter() - start
    return {
        "metrics": metrics,
        "timings": {"first_seconds": seconds, "steady_seconds": None, "repeats": 0},
    }


def _traces(net: Network, params: Any, x, y, cell: Cell, *, at: Any, gdu: bool) -> dict:
    """BPTT's state-gradient norms from `at` and, where GDU applies (`gdu`, a Φ-network), EP's
    neuron-trace norms and the GDU error."""
    spec, K = cell.spec, cell.spec.dynamics.K
    bptt = net.bptt_trace(params, x, y, start=at, steps=K)
    states = [k for k in bptt if k.startswith("s")]
    out: dict[str, Any] = {"bptt_norm": trace_norms(bptt, states)}
    out["bptt_rate"] = decay_rate(out["bptt_norm"])
    if not gdu or spec.model.cell != "phi":
        return out
    beta, symmetric = signed_beta(spec.dynamics, seed=cell.seed)
    ep = net.ep_trace(params, x, y, start=at, beta=beta, steps=K, symmetric=symmetric)
    out["ep_norm"] = trace_norms(ep, states)
    out["ep_rate"] = decay_rate(out["ep_norm"], relative_floor=EP_FLOOR[cell.dtype])
    error = sweep_error(bptt, ep)
    out["gdu_error"] = error if math.isfinite(error) else None
    return out
