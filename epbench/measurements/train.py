"""The `train` measurement: EP and BPTT trained from the same initial weights (docs/theory.md §5).

What comes in: a resolved `Cell`, its backend, the training and test sets (`inputs = "training"`)
and the records' folder, below which each run keeps its checkpoints (`checkpoints/`, resumed with
`cell.resume`). What goes out: `metrics["train"][algorithm]` per algorithm (the per-epoch curves
and run summary of `epbench.measurements.training.train_algorithm`), `metrics["ep_minus_bptt"]`
of the last epoch, the checkpoint paths relative to the records' folder, and status `diverged`
when either run diverged (the other still runs).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from epbench.core.checkpoint import checkpoint_path
from epbench.core.estimators import signed_beta
from epbench.core.measurement import Cell, Output
from epbench.core.params import init_params
from epbench.core.paths import output_path
from epbench.core.protocols import Backend, SeedBatchingBackend
from epbench.core.spec import TaskSpec
from epbench.measurements.training import (
    TrainingData,
    _summary,
    paired_difference,
    run_key,
    start_run,
    train_algorithm,
)
from epbench.measurements.training_seeds import SeedRuns, train_seeds


def _checkpoint(cell: Cell, backend: Backend, output: Output, *, seed: int, algorithm: str):
    """The checkpoint file of one seed's run of `algorithm` (below `checkpoints/`)."""
    return checkpoint_path(
        output_path(output.folder, "checkpoints"),
        cell=cell.spec.cell,
        backend=backend.name,
        device=cell.device,
        dtype=cell.dtype,
        seed=seed,
        key=run_key(cell.spec),
        algorithm=algorithm,
    )


def run(cell: Cell, backend: Backend, data: TrainingData, output: Output) -> dict[str, Any]:
    """Train the cell with each algorithm of `train.algorithms` (EP first by default): the
    record's fields."""
    spec = cell.spec
    initial = init_params(spec.model, seed=cell.seed, dtype=cell.dtype)
    beta, symmetric = signed_beta(spec.dynamics, seed=cell.seed)
    results, paths = {}, {}
    for algorithm in spec.train.algorithms:
        path = _checkpoint(cell, backend, output, seed=cell.seed, algorithm=algorithm)
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
    return _fields(spec, results, paths)


def run_seeds(
    cell: Cell, backend: Backend, data: TrainingData, output: Output
) -> list[dict[str, Any]]:
    """Train every seed of `cell.group` with each algorithm of `train.algorithms`: as one
    batched network (`epbench.measurements.training_seeds`) where the backend builds one for the
    model (`SeedBatchingBackend`) and the seeds' runs stand at the same epoch, else one seed
    after the other as `run` does. One record's fields per seed, in order."""
    spec, seeds = cell.spec, cell.group
    results: dict[int, dict[str, Any]] = {seed: {} for seed in seeds}
    paths: dict[int, dict[str, str]] = {seed: {} for seed in seeds}
    for algorithm in spec.train.algorithms:
        files = {s: _checkpoint(cell, backend, output, seed=s, algorithm=algorithm) for s in seeds}
        for seed, path in files.items():
            paths[seed][algorithm] = str(path.relative_to(output.folder))
        for seed, result in _train_together(cell, backend, data, files, algorithm).items():
            results[seed][algorithm] = result
    return [_fields(spec, results[seed], paths[seed]) for seed in seeds]


def _train_together(
    cell: Cell,
    backend: Backend,
    data: TrainingData,
    files: dict[int, Path],
    algorithm: str,
) -> dict[int, dict[str, Any]]:
    """One algorithm for the seeds of `files` (seed → checkpoint): batched where it can be
    (`run_seeds`), each seed's result by seed."""
    spec, seeds = cell.spec, list(files)
    steps = len(data.x) // spec.data.batch
    starts = [
        start_run(
            spec,
            init_params(spec.model, seed=seed, dtype=cell.dtype),
            algorithm=algorithm,
            seed=seed,
            steps_per_epoch=steps,
            checkpoint=files[seed],
            resume=cell.resume,
        )
        for seed in seeds
    ]
    todo = [
        i for i, (r, _) in enumerate(starts) if r.diverged is None and r.done < spec.train.epochs
    ]
    net = None
    if len(todo) > 1 and len({starts[i][0].done for i in todo}) == 1:
        if isinstance(backend, SeedBatchingBackend):
            model, dtype, device = spec.model, cell.dtype, cell.device
            net = backend.build_seeds(model, dtype=dtype, device=device, seeds=len(todo))
    if net is None:  # one seed after the other, each resumed as `run` resumes it
        return {seed: _sequential(cell, backend, data, files, algorithm, seed) for seed in seeds}
    signed = [signed_beta(spec.dynamics, seed=seeds[i]) for i in todo]
    state = SeedRuns(
        seeds=tuple(seeds[i] for i in todo),
        runs=[starts[i][0] for i in todo],
        checkpoints=[files[seeds[i]] for i in todo],
        identities=[starts[i][1] for i in todo],
    )
    batched = train_seeds(
        net,
        state,
        data,
        spec=spec,
        algorithm=algorithm,
        betas=[b for b, _ in signed],
        symmetric=signed[0][1],
        progress=cell.progress,
        label=f"{spec.cell} {backend.name} seeds {','.join(map(str, state.seeds))}",
    )
    out = dict(zip(state.seeds, batched, strict=True))
    for i, seed in enumerate(seeds):  # runs already complete (or diverged) on resume
        if i not in todo:
            run = starts[i][0]
            out[seed] = _summary(run, steps_per_epoch=steps, batch=spec.data.batch,
                                 resumed_from=run.done)  # fmt: skip
    return {seed: out[seed] for seed in seeds}


def _sequential(
    cell: Cell, backend: Backend, data: TrainingData, files: dict[int, Path], algorithm: str,
    seed: int,
) -> dict[str, Any]:  # fmt: skip
    """`train_algorithm` of one seed of a batched cell (the fallback of `_train_together`)."""
    spec = cell.spec
    beta, symmetric = signed_beta(spec.dynamics, seed=seed)
    return train_algorithm(
        backend,
        init_params(spec.model, seed=seed, dtype=cell.dtype),
        data,
        spec=spec,
        algorithm=algorithm,
        dtype=cell.dtype,
        device=cell.device,
        seed=seed,
        beta=beta,
        symmetric=symmetric,
        checkpoint=files[seed],
        resume=cell.resume,
        progress=cell.progress,
        label=f"{spec.cell} {backend.name} seed {seed}",
    )


def _fields(
    spec: TaskSpec, results: dict[str, dict[str, Any]], paths: dict[str, str]
) -> dict[str, Any]:
    """One seed's record fields from its algorithms' results and checkpoint paths."""
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
