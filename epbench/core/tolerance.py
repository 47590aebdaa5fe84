"""How closely two computations of the same quantity must agree, given the dtype and β.

What comes in: the dtype of the computation ("float32" or "float64"), and for a quantity formed
by cancellation its divisor (β or β_eff) and the scales of its operands and of the result.
What goes out: a relative tolerance `rtol`, applied as

    max |got − want|  ≤  rtol · max |want|        (per compared array; epbench.plugins.conformance)

or, by a caller that compares Frobenius norms (epbench.measurements.parity), as
‖got − want‖ ≤ rtol · ‖want‖; `max_abs` and `rms` are the matching scales.

Why (docs/theory.md §2): two kinds of quantities.

*Plain* quantities — free-phase states, BPTT traces, the parameters after a BPTT step — are sums
and products of O(1) numbers. Each carries a few rounding errors of relative size ε (machine
epsilon: 2⁻²³ ≈ 1.2e-7 in float32, 2⁻⁵² ≈ 2.2e-16 in float64), grown along the T and K steps of
the dynamics (a contraction damps them) and doubled by the other side's own rounding:

    rtol_plain = SAFETY · ε                        SAFETY = 100: 1.2e-5 (float32), 2.2e-14 (float64)

*Cancellation*: an EP trace is ΔEP = (a_{t+1} − a_t) / β_eff, where a is of size A and moves by
only β_eff · ΔEP in one nudged step. a_{t+1} and a_t are each rounded to an absolute error of
about ε · A, which the difference keeps and the division amplifies: the trace's absolute error is
ε · A / |β_eff|, its relative error, with R the size of the trace,

    rtol_EP = CANCELLATION_SAFETY · ε · A / (|β_eff| · R)        (never below rtol_plain)

For a state trace s{n}, A is the size of the state sⁿ and β_eff = β (P) or ε_EB · β (EB). A
parameter's ∂Φ/∂θ is linear in the activity of each layer it joins, so its trace carries the
relative error of those layers' changes: it gets the largest rtol of their state traces
(`ep_trace_rtols`; an EB weight trace divides by β, not ε_EB · β, but is ε_EB times smaller, so
its relative error is the same). An EP training step θ + lr · Σ_t ΔEP_θ adds lr times a
cancellation to θ's own rounding:

    rtol_EP-step = SAFETY · ε · (1 + lr · A / (|β| · |θ|))

CANCELLATION_SAFETY = 10 because ε · A / |β_eff| is itself the dominant error (measured: up to
1.3× it); a real defect — a wrong nudge, a wrong input drive, a wrong time order — makes errors of
order 1e-1, far above either bound. Figures: the paper's toy cell in float32 (β = 0.01, ε_EB =
0.08, β_eff = 8e-4, K = 80) gets EP-trace tolerances 3e-3 (s⁰, b⁰, W0_x) to 2.3e-2 (s¹ and the
hidden layer's parameters) in Frobenius norms, against measured torch ↔ jax differences of
1e-4 to 1.6e-3; the scale-free form (A = R = 1) would give 10 · ε / β_eff = 1.5e-3.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping

import numpy as np

# Margins over the rounding-error estimates (module doc). Plain: the estimate ε ignores the growth
# along T and K steps; measured float32 differences sit ≥ 6× below 100 ε. Cancellation: the
# estimate ε · A / |β_eff| is the dominant error itself; measured EP-trace differences reach 1.3×
# it (golden cases) and 0.2× (toy cell, torch ↔ jax).
SAFETY = 100.0
CANCELLATION_SAFETY = 10.0


def machine_epsilon(dtype: str) -> float:
    """The machine epsilon of `dtype` ("float32" → 1.19e-7, "float64" → 2.2e-16).

    Raises ValueError for a dtype that is not a floating point type numpy knows."""
    kind = np.dtype(dtype)
    if kind.kind != "f":
        raise ValueError(f"expected a floating point dtype, found {dtype!r}")
    return float(np.finfo(kind).eps)


def plain_rtol(dtype: str, *, safety: float = SAFETY) -> float:
    """Relative tolerance of a plain quantity (states, BPTT traces, BPTT steps): safety · ε."""
    return safety * machine_epsilon(dtype)


def cancellation_rtol(
    dtype: str,
    *,
    divisor: float,
    operand_scale: float = 1.0,
    result_scale: float = 1.0,
    safety: float = CANCELLATION_SAFETY,
) -> float:
    """Relative tolerance of q = (a − b) / divisor with |a|, |b| ≲ `operand_scale`, compared
    relative to `result_scale` (the size of q): safety · ε · operand_scale / (|divisor| ·
    result_scale), never below the plain tolerance. ValueError for a zero divisor."""
    if divisor == 0 or result_scale <= 0:
        raise ValueError(
            f"expected a non-zero divisor and result scale, found {divisor}, {result_scale}"
        )
    amplified = safety * machine_epsilon(dtype) * operand_scale / (abs(divisor) * result_scale)
    return max(plain_rtol(dtype), amplified)


def beta_eff(*, setting: str, beta: float, epsilon: float = 1.0) -> float:
    """The divisor of the EP state traces (epbench.core.protocols): β in the P setting, ε · β in
    the EB setting (whose nudge is εβ (y − s⁰))."""
    return epsilon * beta if setting == "EB" else beta


def ep_trace_rtol(
    dtype: str,
    *,
    beta_eff: float,
    operand_scale: float = 1.0,
    result_scale: float = 1.0,
    safety: float = CANCELLATION_SAFETY,
) -> float:
    """Relative tolerance of an EP trace ΔEP = (a_{t+1} − a_t) / β_eff (module doc).

    In: the dtype, β_eff (`beta_eff()`; signed or not), and optionally the operand and trace
    scales; with the defaults (A = R = 1), safety · ε / |β_eff|. Out: the relative tolerance."""
    return cancellation_rtol(
        dtype,
        divisor=beta_eff,
        operand_scale=operand_scale,
        result_scale=result_scale,
        safety=safety,
    )


def ep_step_rtol(
    dtype: str,
    *,
    lr: float,
    beta: float,
    operand_scale: float = 1.0,
    param_scale: float = 1.0,
    safety: float = SAFETY,
) -> float:
    """Relative tolerance of the parameters after one EP step θ + lr · (∂Φ/∂θ(s^β) − ∂Φ/∂θ(s_*))
    / β: θ's own rounding plus the cancellation, lr · A / |β| relative to |θ| (`param_scale`).

    In: the dtype, the largest learning rate, β, optionally the scales. Out: the tolerance."""
    if beta == 0 or param_scale <= 0:
        raise ValueError(
            f"expected a non-zero beta and parameter scale, found {beta}, {param_scale}"
        )
    ratio = abs(lr) * operand_scale / (abs(beta) * param_scale)
    return plain_rtol(dtype, safety=safety) * (1.0 + ratio)


def max_abs(array: np.ndarray) -> float:
    """max|array| in float64, the scale of the max-norm comparison (0.0 for an empty array)."""
    return float(np.max(np.abs(np.asarray(array, dtype=np.float64)), initial=0.0))


def rms(array: np.ndarray) -> float:
    """The root mean square of `array` in float64, the scale of a Frobenius-norm comparison
    (‖a − b‖ / ‖b‖ ≤ rtol ⟺ rms(a − b) ≤ rtol · rms(b)); 0.0 for an empty array."""
    a = np.asarray(array, dtype=np.float64)
    return float(np.sqrt(np.mean(a**2))) if a.size else 0.0


def ep_trace_rtols(
    dtype: str,
    *,
    traces: Mapping[str, np.ndarray],
    states: Mapping[str, np.ndarray],
    beta_eff: float,
    scale: Callable[[np.ndarray], float] = max_abs,
    safety: float = CANCELLATION_SAFETY,
) -> dict[str, float]:
    """The tolerance of every EP trace by name, from the reference traces and free states.

    In: the reference `traces` (canonical names: parameters and states `s{n}`), the reference
    free states `states` (the operands of the state traces), β_eff, and the norm the caller
    compares in (`max_abs`: max|got − want| ≤ rtol · max|want|; `rms`: Frobenius norms).
    Out: {name: rtol}, each at least the plain tolerance.

    A state trace s{n} = Δsⁿ / β_eff gets `ep_trace_rtol` with A = scale(states[s{n}]) and
    R = scale(traces[s{n}]). A parameter's ∂Φ/∂θ is linear in the activity of each layer it
    joins (W{n}_{n+1}: ρ(sⁿ) ρ(sⁿ⁺¹)ᵀ, W{n}_x and b{n}: ρ(sⁿ), B{n+1}_{n}: layers n+1 and n), so
    its difference carries the relative error of those layers' changes: the largest tolerance of
    their state traces (in EB it divides by β, but its size carries the ε of εβ: the same
    relative error). A name whose layers have no state trace gets A = 1, divisor β_eff."""
    out = {}
    for name, trace in traces.items():
        if name in states:
            out[name] = ep_trace_rtol(
                dtype,
                beta_eff=beta_eff,
                operand_scale=scale(states[name]),
                result_scale=max(scale(trace), 1e-300),
                safety=safety,
            )
    for name, trace in traces.items():
        if name in states:
            continue
        layers = [out[f"s{n}"] for n in re.findall(r"\d+", name) if f"s{n}" in out]
        fallback = ep_trace_rtol(
            dtype, beta_eff=beta_eff, result_scale=max(scale(trace), 1e-300), safety=safety
        )
        out[name] = max(layers) if layers else fallback
    return out
