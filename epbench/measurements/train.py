"""The `train` measurement: EP and BPTT trained from the same initial weights (docs/theory.md §5).

What comes in: a resolved `Cell`, its backend, the training and test sets (`inputs = "training"`)
and the records' folder, below which each run keeps its checkpoints (`checkpoints/`, resumed with
`cell.resume`). What goes out: `metrics["train"][algorithm]` per algorithm (the per-epoch curves
and run summary of `epbench.measurements.training.train_algorithm`), `metrics["ep_minus_bptt"]`
of the last epoch, the checkpoint paths relative to the records' folder, and status `diverged`
when either run diverged (the other still runs).
"""

from __future__ import annotations

from typing import Any

from epbench.core.checkpoint import checkpoint_path
from epbench.core.estimators import signed_beta
from epbench.core.measurement import Cell, Output
from epbench.core.params import init_params
from epbench.core.paths import output_path
from epbench.core.protocols import Backend
from epbench.measurements.training import (
    TrainingData,
    paired_difference,
    run_key,
    train_algorithm,
)


def run(cell: Cell, backend: Backend, data: TrainingData, output: Output) -> dict[str, Any]:
    """Train the cell with each algorithm of `train.algorithms` (EP first by default): the
    record's fields."""
    spec = cell.spec
    initial = init_params(spec.model, seed=cell.seed, dtype=cell.dtype)
    beta, symmetric = signed_beta(spec.dynamics, seed=cell.seed)
    results, paths = {}, {}
    for algorithm in spec.train.algorithms:
        path = checkpoint_path(
            output_path(output.folder, "checkpoints"),
            cell=spec.cell,
            backend=backend.name,
            device=cell.device,
            dtype=cell.dtype,
            seed=cell.seed,
            key=run_key(spec),
            algorithm=algorithm,
        )
        paths[algorithm] = str(path.relative_to(output.folder))
        results[algorithm] = train_algorithm(
            backend,
            initial,
            data,
            spec=spec,
            algorithm=algorithm,
            dtype=cell.dtype,
            device=cell.device,
            seed=cell.seed,
            beta=beta,
            symmetric=symmetric,
            checkpoint=path,
            resume=cell.resume,
            progress=cell.progress,
            label=f"{spec.cell} {backend.name} seed {cell.seed}",
        )
    part: dict[str, Any] = {
        "metrics": {
            "train": results,
            "ep_minus_bptt": {
                key: paired_difference(results.get("ep"), results.get("bptt"), key)
                for key in ("test_error", "train_error")
            },
        },
        "checkpoints": paths,
        "peak_memory_bytes": max(r["peak_memory_bytes"] for r in results.values()),
    }
    if spec.dynamics.estimator == "random-sign":
        part["beta_used"] = abs(spec.dynamics.beta)  # its sign is drawn per batch
    broken = [
        f"{name} diverged at epoch {r['diverged']['epoch']}, step {r['diverged']['step']} "
        f"({r['diverged']['what']})"
        for name, r in results.items()
        if r["status"] == "diverged"
    ]
    if broken:
        return {**part, "status": "diverged", "reason": "; ".join(broken)}
    return part
