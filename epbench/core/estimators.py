"""The EP estimators: which nudge(s) a cell's nudged phase uses (docs/theory.md §2.4).

What comes in: the cell's `DynamicsSpec` (its `beta` and `estimator`) and the seed.
What goes out: the signed β and whether the symmetric ±β pair is used.

    positive      +|β|
    negative      −|β|
    symmetric     +|β| and −|β|, half the difference (O(β²) bias)
    random-sign   ±|β|, the sign drawn from `default_rng([seed, NUDGE_STREAM])` (training draws
                  it per batch instead: epbench.measurements.training.epoch_betas)
"""

from __future__ import annotations

import numpy as np

from epbench.core.spec import DynamicsSpec

NUDGE_STREAM = 2  # second entry of the generator seed [seed, stream, …] of the random sign


def signed_beta(dynamics: DynamicsSpec, *, seed: int) -> tuple[float, bool]:
    """(signed β, symmetric flag) of `dynamics.estimator` for the cell of `seed`."""
    beta, estimator = abs(dynamics.beta), dynamics.estimator
    if estimator == "negative":
        return -beta, False
    if estimator == "symmetric":
        return beta, True
    if estimator == "random-sign":
        draw = np.random.default_rng([seed, NUDGE_STREAM]).random()
        return (beta if draw < 0.5 else -beta), False
    return beta, False
