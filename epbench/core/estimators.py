"""The EP estimators: which nudge(s) a cell's nudged phase uses (docs/theory.md §2.4, §2.5).

What comes in: the cell's `DynamicsSpec` (its `beta`, `estimator` and `points`) and the seed.
What goes out: the signed β, whether the symmetric ±β pair is used, and the holomorphic point
count that `Network.ep_trace` / `Network.ep_step` take as `points` (0: not holomorphic).

    positive      +|β|
    negative      −|β|
    symmetric     +|β| and −|β|, half the difference (O(β²) bias)
    random-sign   ±|β|, the sign drawn from `default_rng([seed, NUDGE_STREAM])` (training draws
                  it per batch instead: epbench.measurements.training.epoch_betas)
    holomorphic   N = `points` complex nudges β_k = |β| e^{2πik/N}, the first Fourier
                  coefficient of the nudged quantity (O(|β|^N) bias; N = 2 is symmetric)

`holomorphic_phases` lists the nudged phases a backend runs for N points and the weight of each:
conjugate points give conjugate results for real parameters, so only k = 0 … ⌊N/2⌋ run.
"""

from __future__ import annotations

import math

import numpy as np

from epbench.core.spec import DynamicsSpec

NUDGE_STREAM = 2  # second entry of the generator seed [seed, stream, …] of the random sign


def signed_beta(dynamics: DynamicsSpec, *, seed: int) -> tuple[float, bool]:
    """(signed β, symmetric flag) of `dynamics.estimator` for the cell of `seed`; the holomorphic
    estimator gives (+|β|, False) and its point count comes from `points_of`."""
    beta, estimator = abs(dynamics.beta), dynamics.estimator
    if estimator == "negative":
        return -beta, False
    if estimator == "symmetric":
        return beta, True
    if estimator == "random-sign":
        draw = np.random.default_rng([seed, NUDGE_STREAM]).random()
        return (beta if draw < 0.5 else -beta), False
    return beta, False


def points_of(dynamics: DynamicsSpec) -> int:
    """The `points` keyword of `Network.ep_trace` / `ep_step`: N for the holomorphic estimator,
    0 for every other one."""
    return int(dynamics.points) if dynamics.estimator == "holomorphic" else 0


def nudge_keywords(dynamics: DynamicsSpec, *, seed: int) -> dict[str, object]:
    """The nudge keywords of `Network.ep_trace` / `ep_step` for the cell of `seed`: `beta` and
    `symmetric`, plus `points` for the holomorphic estimator only (a backend that does not offer
    holomorphic EP is never passed the keyword)."""
    beta, symmetric = signed_beta(dynamics, seed=seed)
    points = points_of(dynamics)
    return {"beta": beta, "symmetric": symmetric, **({"points": points} if points else {})}


def holomorphic_phases(beta: float, points: int) -> tuple[tuple[complex | float, float], ...]:
    """The nudged phases of holomorphic EP with `points` = N ≥ 2 on the circle of radius |β|
    (docs/theory.md §2.5): ((β_k, w_k), …) for k = 0 … ⌊N/2⌋, so that the estimate is

        ΔhEP = Re Σ_k w_k Δ(β_k) / β_k,    Δ(β_k) = the one-sided difference of phase k,

    equal to (1/N) Σ_{k<N} Δ(β_k)/β_k = (1/(N|β|)) Σ_{k<N} e^{−2πik/N} Δ(β_k): w_k = 1/N for the
    real points (k = 0, and k = N/2 when N is even, written exactly as −|β|) and 2/N for a point
    that stands for itself and its conjugate N − k. β_k of a real point is a float."""
    if isinstance(points, bool) or not isinstance(points, int) or points < 2:
        raise ValueError(f"expected holomorphic points N ≥ 2 (an integer), found {points!r}")
    radius, out = abs(float(beta)), []
    for k in range(points // 2 + 1):
        if k == 0:
            out.append((radius, 1.0 / points))
        elif 2 * k == points:
            out.append((-radius, 1.0 / points))
        else:
            angle = 2.0 * math.pi * k / points
            out.append((complex(radius * math.cos(angle), radius * math.sin(angle)), 2.0 / points))
    return tuple(out)
