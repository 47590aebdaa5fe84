"""Parity between backends: the same cell, the same canonical parameters and batch, two backends.

For each compared quantity — free-phase states, EP traces, BPTT traces, and the parameters after one
EP and one BPTT training step — the relative Frobenius difference ‖a − b‖ / ‖a‖ per canonical name,
with the first backend as the reference.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from epbench.config.tasks import config_hash
from epbench.core.params import init_params, learning_rates
from epbench.core.protocols import Backend
from epbench.core.records import SCHEMA_VERSION, RecordWriter, environment
from epbench.core.spec import TaskSpec
from epbench.run.matrix import load_batch, nudge


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
    beta, symmetric = nudge(spec, seed=seed)
    params_np = init_params(spec.model, seed=seed, dtype=dtype)
    lrs = (
        learning_rates(spec.model, spec.train.lrs)
        if spec.train.lrs
        else dict.fromkeys(params_np, 0.01)
    )
    net = backend.build(spec.model, dtype=dtype, device=device)
    params = net.load(params_np)
    mid, _ = net.free_phase(params, x, steps=T - K)
    star, _ = net.free_phase(params, x, steps=K, start=mid)
    out = {
        "free states": net.states(star),
        "EP traces": net.ep_trace(
            params, x, y, start=star, beta=beta, steps=K, symmetric=symmetric
        ),
        "BPTT traces": net.bptt_trace(params, x, y, start=mid, steps=K),
    }
    stepped, _, _ = net.ep_step(
        net.load(params_np), x, y, free_steps=T, steps=K, beta=beta, lrs=lrs, symmetric=symmetric
    )
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


def default_tolerance(dtype: str) -> float:
    """The agreement epbench promises between backends: 1e-10 in float64, 1e-4 in float32."""
    return 1e-10 if dtype == "float64" else 1e-4


def run_parity(
    cells: list[TaskSpec],
    backends: list[Backend],
    *,
    dtype: str | None,
    device: str,
    seed: int,
    data_dir: Path | None,
    writer: RecordWriter,
    tolerance: float | None = None,
) -> list[dict[str, Any]]:
    """Compare every backend after the first with the first, cell by cell; one record per pair,
    status `ok` when every difference is within `tolerance`, else `failed`."""
    env = environment()
    records = []
    for spec in cells:
        cell_dtype = dtype or spec.dtype
        batch = load_batch(spec, seed=seed, dtype=cell_dtype, data_dir=data_dir)
        limit = tolerance if tolerance is not None else default_tolerance(cell_dtype)
        reference, others = backends[0], backends[1:]
        skip = reference.supports(spec.model, dtype=cell_dtype, device=device)
        ref_out = (
            None
            if skip
            else outputs(spec, reference, batch, dtype=cell_dtype, device=device, seed=seed)
        )
        for other in others:
            record = {
                "schema": SCHEMA_VERSION,
                "task": spec.name,
                "cell": spec.cell,
                "preset": spec.preset,
                "variant": dict(spec.variant),
                "config": spec.config,
                "config_hash": config_hash(spec.config),
                "measurement": "parity",
                "backend": other.name,
                "reference": reference.name,
                "device": device,
                "dtype": cell_dtype,
                "seed": seed,
                "tolerance": limit,
                "environment": env,
            }
            reason = skip or other.supports(spec.model, dtype=cell_dtype, device=device)
            if reason:
                record.update(status="skipped", reason=reason)
            else:
                diffs = compare_outputs(
                    ref_out, outputs(spec, other, batch, dtype=cell_dtype, device=device, seed=seed)
                )
                summary = parity_record(diffs)
                ok = summary["max"] <= limit
                record.update(
                    metrics={"parity": summary},
                    status="ok" if ok else "failed",
                    reason=None
                    if ok
                    else f"max relative difference {summary['max']:.2e} > {limit:.0e}",
                )
            writer.write(record)
            records.append(record)
    return records
