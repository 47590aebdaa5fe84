"""GDU metrics of docs/theory.md §4, computed from traces (numpy only).

Every function takes the BPTT trace `a` (∇BPTT(t), shape (K, …)) and the EP trace `ep` (ΔEP(β, t),
same shape) of one canonical name and compares `a_t` with `b_t = −ΔEP(β, t)`.
"""

from __future__ import annotations

import math

import numpy as np

Traces = dict[str, np.ndarray]


def is_state(name: str) -> bool:
    """State traces (`s{n}`) are compared per step; parameter traces cumulatively (docs/theory.md
    §4)."""
    return name.startswith("s")


def rmse_per_component(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The paper's relative mean squared error of each component over the K steps:

    sqrt( Σ_t (a_t − b_t)² / max(Σ_t a_t², Σ_t b_t²) ), and 0 where both series are all zero.
    `a`, `b`: (K, …) → (…).
    """
    num = np.sum((a - b) ** 2, axis=0)
    den = np.maximum(np.sum(a**2, axis=0), np.sum(b**2, axis=0))
    out = np.zeros_like(num, dtype=np.float64)
    nonzero = den > 0
    out[nonzero] = np.sqrt(num[nonzero] / den[nonzero])
    return out


def cosine(u: np.ndarray, v: np.ndarray) -> float:
    """Cosine similarity of two arrays (flattened); NaN when either is all zero."""
    nu, nv = float(np.linalg.norm(u)), float(np.linalg.norm(v))
    if nu == 0.0 or nv == 0.0:
        return math.nan
    return float(np.vdot(u.ravel(), v.ravel()) / (nu * nv))


def sign_agreement(a: np.ndarray, b: np.ndarray) -> float:
    """Share of components whose signs agree (both non-zero), plus the share where both are zero."""
    same = (np.sign(a) == np.sign(b)) & (a != 0)
    both_zero = (a == 0) & (b == 0)
    return float(np.mean(same | both_zero))


def relative_error(bptt: np.ndarray, ep: np.ndarray) -> float:
    """‖ΔEP + ∇BPTT‖_F / ‖∇BPTT‖_F over all steps and components (the theorem's test quantity)."""
    ref = float(np.linalg.norm(bptt))
    diff = float(np.linalg.norm(ep + bptt))
    return diff / ref if ref > 0 else (0.0 if diff == 0 else math.inf)


def compare(name: str, bptt: np.ndarray, ep: np.ndarray) -> dict[str, object]:
    """All metrics of one canonical name: RMSE (mean, std over components; per-step series for
    states, cumulative series for parameters), cosine of the totals and per step, sign agreement of
    the totals, and the relative Frobenius error."""
    a = np.asarray(bptt, dtype=np.float64)
    b = -np.asarray(ep, dtype=np.float64)
    series_a, series_b = (a, b) if is_state(name) else (np.cumsum(a, 0), np.cumsum(b, 0))
    rmse = rmse_per_component(series_a, series_b)
    total_a, total_b = a.sum(axis=0), b.sum(axis=0)
    return {
        "rmse": float(rmse.mean()),
        "rmse_std": float(rmse.std()),
        "cosine": cosine(total_a, total_b),
        "cosine_per_step": [cosine(a[t], b[t]) for t in range(a.shape[0])],
        "sign": sign_agreement(total_a, total_b),
        "rel_error": relative_error(a, -b),
    }


def gdu_metrics(bptt: Traces, ep: Traces) -> dict[str, dict[str, object]]:
    """Metrics for every canonical name present in both trace dicts (parameters and states)."""
    missing = sorted(set(bptt) ^ set(ep))
    if missing:
        raise ValueError(f"EP and BPTT traces differ in names: {missing}")
    return {name: compare(name, bptt[name], ep[name]) for name in bptt}


ARRIVAL_FRACTION = 0.2  # `arrival`: share of a layer's largest EP neuron update that counts


def arrival(bptt: Traces, ep: Traces) -> dict[str, dict[str, int | None]]:
    """The nudged-phase step at which the error signal first reaches each layer, from the neuron
    traces `s{n}` (docs/theory.md §2; index t is ΔEP_s(β, t) = (s^β_{t+1} − s^β_t) / β):

    ep    the first t at which max_i |ΔEP_sn(t)_i| reaches `ARRIVAL_FRACTION` of its largest value
          over the K steps. Before the nudge reaches layer n its trace is only the drift of a free
          phase short of its exact fixed point, divided by β (≲ 0.1 of the signal at the fixed
          points of our runs); in the EB setting the signal grows over several ε-steps and this
          marks when it is substantial.
    bptt  the first t at which ∇BPTT_sn(t) = ∂L/∂s^n_{T−t} is non-zero (exact: no path links
          s^n_{T−t} to the loss for t < n in a layered net).

    None where the trace stays below the mark (or zero) for all K steps. In a layered net both
    should equal n, the distance from the output: `signal_steps` of the deepest layer.
    """
    out: dict[str, dict[str, int | None]] = {"ep": {}, "bptt": {}}
    for name in (n for n in bptt if is_state(n)):
        ep_size = np.abs(np.asarray(ep[name])).reshape(len(ep[name]), -1).max(axis=1)
        bptt_size = np.abs(np.asarray(bptt[name])).reshape(len(bptt[name]), -1).max(axis=1)
        top = float(ep_size.max()) if ep_size.size else 0.0
        hits = np.flatnonzero(ep_size >= ARRIVAL_FRACTION * top) if top > 0 else []
        out["ep"][name] = int(hits[0]) if len(hits) else None
        nonzero = np.flatnonzero(bptt_size > 0)
        out["bptt"][name] = int(nonzero[0]) if len(nonzero) else None
    return out


def signal_metrics(bptt: Traces, ep: Traces) -> dict[str, object]:
    """`arrival` of every layer and `signal_steps`: the EP arrival step of the deepest layer (the
    highest state index), i.e. the nudged steps the signal needs to reach the layer next to the
    input (docs/theory.md §2); None when it never does within the K steps."""
    steps = arrival(bptt, ep)
    deepest = max((n for n in bptt if is_state(n)), key=lambda n: int(n[1:]), default=None)
    return {
        "arrival": steps,
        "signal_steps": steps["ep"].get(deepest) if deepest else None,
    }
