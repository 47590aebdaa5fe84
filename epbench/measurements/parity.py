"""Parity between backends: the same cell, the same canonical parameters and batch, two backends.

For each compared quantity — free-phase states, EP traces, BPTT traces, and the parameters after one
EP and one BPTT training step — the relative Frobenius difference ‖a − b‖ / ‖a‖ per canonical name,
against a reference backend. A parity cell runs on one backend with the reference named in its
arguments (`epbench parity TASK --backend REFERENCE,OTHER…` makes one cell per other backend), so
it goes through the matrix like every measurement: executors, `--resume`, records — e.g.
`run_matrix(with_measurement(cells, "parity"), others, options=RunOptions(arguments=(("against",
"torch"), ("tolerance", None))), writer=writer)` (epbench.run.resolve.with_measurement).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from epbench.core import tolerance as tol
from epbench.core.errors import EpbenchError
from epbench.core.estimators import nudge_keywords, signed_beta
from epbench.core.measurement import Cell, Output
from epbench.core.params import init_params, learning_rates
from epbench.core.protocols import Backend
from epbench.core.spec import TaskSpec
from epbench.core.support import support_reason
from epbench.plugins.registry import Registry


def relative_difference(reference: np.ndarray, other: np.ndarray) -> float:
    """‖other − reference‖_F / ‖reference‖_F (the absolute difference when the reference is 0)."""
    ref = np.asarray(reference, dtype=np.float64)
    diff = float(np.linalg.norm(np.asarray(other, dtype=np.float64) - ref))
    scale = float(np.linalg.norm(ref))
    return diff / scale if scale > 0 else diff


def outputs(
    spec: TaskSpec, backend: Backend, batch: tuple, *, dtype: str, device: str, seed: int
) -> dict[str, dict[str, np.ndarray]]:
    """Everything parity compares, from one backend, as numpy: {group: {name: array}}."""
    x, y = (np.asarray(a, dtype=dtype) for a in batch)
    T, K = spec.dynamics.T, spec.dynamics.K
    nudge = nudge_keywords(spec.dynamics, seed=seed)  # β, symmetric, holomorphic points
    params_np = init_params(spec.model, seed=seed, dtype=dtype)
    lrs = step_lrs(spec, params_np)
    net = backend.build(spec.model, dtype=dtype, device=device)
    params = net.load(params_np)
    mid, _ = net.free_phase(params, x, steps=T - K)
    star, _ = net.free_phase(params, x, steps=K, start=mid)
    out = {
        "free states": net.states(star),
        "EP traces": net.ep_trace(params, x, y, start=star, steps=K, **nudge),
        "BPTT traces": net.bptt_trace(params, x, y, start=mid, steps=K),
    }
    stepped, _, _ = net.ep_step(net.load(params_np), x, y, free_steps=T, steps=K, lrs=lrs, **nudge)
    out["EP step"] = net.dump(stepped)
    stepped, _, _ = net.bptt_step(net.load(params_np), x, y, free_steps=T, steps=K, lrs=lrs)
    out["BPTT step"] = net.dump(stepped)
    return out


def compare_outputs(
    reference: dict[str, dict[str, np.ndarray]], other: dict[str, dict[str, np.ndarray]]
) -> dict[str, dict[str, float]]:
    """Relative differences per group and canonical name."""
    return {
        group: {name: relative_difference(arrays[name], other[group][name]) for name in arrays}
        for group, arrays in reference.items()
    }


def parity_record(diffs: dict[str, dict[str, float]]) -> dict[str, Any]:
    """Summary for records and tables: the maximum per group and overall."""
    worst = {group: max(values.values()) for group, values in diffs.items()}
    return {"max": max(worst.values()), "per_group": worst, "per_name": diffs}


def step_lrs(spec: TaskSpec, params: dict[str, np.ndarray]) -> dict[str, float]:
    """The learning rates of the compared training steps: the task's, else 0.01 for all."""
    if spec.train.lrs:
        return learning_rates(spec.model, spec.train.lrs)
    return dict.fromkeys(params, 0.01)


def limits(
    spec: TaskSpec, reference: dict[str, dict[str, np.ndarray]], *, dtype: str, seed: int
) -> dict[str, dict[str, float]]:
    """The relative tolerance of every compared quantity (epbench.core.tolerance), from the
    reference backend's outputs: plain float rounding for states, BPTT traces and the BPTT step;
    for EP traces the cancellation of their differences divided by β_eff; for the EP step the
    rounding of an update made of such a difference. In Frobenius norms (`tolerance.rms`)."""
    beta, _ = signed_beta(spec.dynamics, seed=seed)
    plain = tol.plain_rtol(dtype)
    out = {group: dict.fromkeys(arrays, plain) for group, arrays in reference.items()}
    divisor = tol.beta_eff(setting=spec.model.setting, beta=beta, epsilon=spec.model.epsilon)
    out["EP traces"] = tol.ep_trace_rtols(
        dtype,
        traces=reference["EP traces"],
        states=reference["free states"],
        beta_eff=divisor,
        scale=tol.rms,
    )
    lrs = step_lrs(spec, reference["EP step"])
    out["EP step"] = {
        name: tol.ep_step_rtol(dtype, lr=lrs[name], beta=beta, param_scale=max(tol.rms(v), 1e-300))
        for name, v in reference["EP step"].items()
    }
    return out


def run(cell: Cell, backend: Backend, batch: tuple, output: Output) -> dict[str, Any]:
    """Compare `backend` with the cell's reference backend (`cell.argument("against")`, found by
    name among the installed ones) on the cell's parameters and batch: the record's fields,
    status `ok` when every difference is within its tolerance (`limits`, or the run's
    `cell.argument("tolerance")` for all), else `failed`; a skip when the reference cannot run
    the cell. `metrics.parity` holds the differences, the tolerances and `worst_share`, the
    largest difference as a share of its tolerance."""
    against = cell.argument("against")
    if not against:
        raise EpbenchError("parity: expected a reference backend (--backend REFERENCE,OTHER)")
    reference = Registry().get_backend(against)
    given = cell.argument("tolerance")
    part: dict[str, Any] = {"reference": against, "tolerance": given}
    reason = support_reason(reference, cell.spec.model, dtype=cell.dtype, device=cell.device)
    if reason:
        return {**part, "status": "skipped", "reason": f"reference {against}: {reason}"}
    like = {"dtype": cell.dtype, "device": cell.device, "seed": cell.seed}
    want = outputs(cell.spec, reference, batch, **like)
    diffs = compare_outputs(want, outputs(cell.spec, backend, batch, **like))
    bound = limits(cell.spec, want, dtype=cell.dtype, seed=cell.seed)
    if given is not None:
        bound = {group: dict.fromkeys(values, given) for group, values in bound.items()}
    shares = {g: {n: d / bound[g][n] for n, d in values.items()} for g, values in diffs.items()}
    worst = max((share, g, n) for g, values in shares.items() for n, share in values.items())
    part["metrics"] = {"parity": {**parity_record(diffs), "limits": bound, "worst_share": worst[0]}}
    if worst[0] > 1:
        _, group, name = worst
        return {
            **part,
            "status": "failed",
            "reason": f"{group} {name}: relative difference {diffs[group][name]:.2e} > "
            f"tolerance {bound[group][name]:.1e}",
        }
    return part
