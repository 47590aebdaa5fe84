"""One cell measured: the record's common fields, the skip, the failure, and the measurement's
own fields, for every registered measurement alike.

What comes in: a `Measurement` from the registry, the resolved `Cell` (epbench.core.measurement),
the backend, the inputs the measurement declared, the `Output`. What goes out: the whole record
(a dict of schema `SCHEMA_VERSION`), not yet written — the coordinator writes it.

    start_record    the fields every record has: task, cell, preset, variant, configuration and
                    its hash, measurement, backend, device, dtype, estimator, depth, angle, the
                    nudge used, seed, start time, environment (with the backend's versions and
                    device description)
    measure         start_record; `skipped` with the reason when the backend cannot run the
                    cell (epbench.core.support); else the measurement's `run`, whose fields are
                    merged in (status `ok` unless it says otherwise); a backend exception makes
                    the record `failed` with the error as its one-line reason (the matrix goes
                    on), an `EpbenchError` propagates (it stops the run)
    measure_cell    the records of a cell: `measure`'s one, or for a cell of several seeds
                    (`Cell.seeds`, a `SeedBatchedMeasurement`) one per seed from `run_seeds`,
                    each with its seed's common fields; a skip or a failure applies to them all
"""

from __future__ import annotations

import time
import traceback
from typing import Any

from epbench.config.tasks import config_hash
from epbench.core.errors import EpbenchError
from epbench.core.estimators import signed_beta
from epbench.core.measurement import Cell, Measurement, Output, SeedBatchedMeasurement
from epbench.core.protocols import Backend
from epbench.core.record import SCHEMA_VERSION
from epbench.core.support import estimator_reason, support_reason


def start_record(cell: Cell, env: dict[str, Any]) -> dict[str, Any]:
    """The common fields of `cell`'s record (module doc), without status."""
    spec = cell.spec
    beta, symmetric = signed_beta(spec.dynamics, seed=cell.seed)
    return {
        "schema": SCHEMA_VERSION,
        "task": spec.name,
        "cell": spec.cell,
        "preset": spec.preset,
        "variant": dict(spec.variant),
        "config": spec.config,
        "config_hash": config_hash(spec.config),
        "measurement": cell.measurement,
        "backend": cell.backend,
        "device": cell.device,
        "dtype": cell.dtype,
        "estimator": spec.dynamics.estimator,
        "depth": spec.model.depth,
        "angle": spec.model.feedback_angle,
        "beta_used": beta,
        "symmetric": symmetric,
        "seed": cell.seed,
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "environment": env,
    }


def error_line(err: BaseException) -> str:
    """An exception as one line: `Type: message`, newlines folded."""
    return traceback.format_exception_only(type(err), err)[-1].strip().replace("\n", " ")


def _skip_reason(cell: Cell, backend: Backend) -> str | None:
    """Why `backend` cannot run `cell` (epbench.core.support): the model, dtype and device, then
    the estimator (holomorphic EP needs a holomorphic activation and no clamp); None if it can."""
    spec = cell.spec
    found = support_reason(backend, spec.model, dtype=cell.dtype, device=cell.device)
    return found or estimator_reason(spec.model, spec.dynamics)


def _environment(output: Output, backend: Backend, device: str) -> dict[str, Any]:
    """The run's environment with the backend's versions and device description."""
    return {
        **output.environment,
        "backend_versions": backend.versions(),
        "device_info": backend.device_info(device),
    }


def measure(
    measurement: Measurement, cell: Cell, backend: Backend, inputs: Any, output: Output
) -> dict[str, Any]:
    """Run `measurement` on `cell` and return the whole record (module doc)."""
    env = _environment(output, backend, cell.device)
    record = start_record(cell, env)
    reason = _skip_reason(cell, backend)
    if reason:
        return {**record, "status": "skipped", "reason": reason}
    try:
        part = measurement.run(cell, backend, inputs, output)
    except EpbenchError:
        raise
    except Exception as err:  # a backend failure fails this cell only
        return {**record, "status": "failed", "reason": error_line(err)}
    return {**record, "status": "ok", "reason": None, **part}


def measure_cell(
    measurement: Measurement, cell: Cell, backend: Backend, inputs: Any, output: Output
) -> list[dict[str, Any]]:
    """The records of `cell`, one per seed of `cell.group`, in that order (module doc)."""
    if not cell.seeds:
        return [measure(measurement, cell, backend, inputs, output)]
    if not isinstance(measurement, SeedBatchedMeasurement):
        raise TypeError(f"{cell.measurement}: a cell of several seeds needs run_seeds")
    env = _environment(output, backend, cell.device)
    records = [start_record(cell.one_seed(seed), env) for seed in cell.group]
    reason = _skip_reason(cell, backend)
    if reason:
        return [{**record, "status": "skipped", "reason": reason} for record in records]
    try:
        parts = measurement.run_seeds(cell, backend, inputs, output)
    except EpbenchError:
        raise
    except Exception as err:  # a backend failure fails these seeds only
        return [{**record, "status": "failed", "reason": error_line(err)} for record in records]
    return [
        {**record, "status": "ok", "reason": None, **part}
        for record, part in zip(records, parts, strict=True)
    ]
