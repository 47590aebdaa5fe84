"""Runs the cells of the matrix (task cell × backend × seed): seeding, data, timing, skips, records.

Each cell runs the measurements its task lists: `gdu` (`run_gdu`, the GDU traces at the initial
weights) and `train` (`run_train`, EP and BPTT trained from the same weights, epbench.training).

Seeds: the canonical parameters come from `init_params(model, seed=seed)`; toy data from
`seed + TOY_DATA_OFFSET`; the random-sign estimator's sign from `default_rng([seed, 2])` (in
training: per batch, from `[seed, 2, epoch]`). So EP and BPTT, and every backend, see identical
weights and batches for the same seed.
"""

from __future__ import annotations

import math
import resource
import sys
import time
import traceback
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from . import data as datasets
from .checkpoint import checkpoint_path
from .errors import EpbenchError
from .metrics import gdu_metrics
from .params import init_params
from .protocols import Backend, Network
from .results import SCHEMA_VERSION, RecordWriter, environment
from .spec import TaskSpec
from .tasks import config_hash
from .training import (
    ALGORITHMS,
    TrainingData,
    load_training_data,
    paired_difference,
    run_key,
    train_algorithm,
)

TOY_DATA_OFFSET = 10_000


@dataclass(frozen=True, kw_only=True)
class RunOptions:
    """Settings of one `epbench run` that apply to every cell."""

    device: str = "cpu"
    dtype: str | None = None  # None: the task's own dtype
    seed: int = 0
    seeds: tuple[int, ...] = ()  # run every cell once per seed; empty: (seed,)
    data_dir: Path | None = None
    save_traces: bool = False
    repeat: int = 1  # steady-state repetitions timed after the first (warm-up) run
    resume: bool = False  # training: continue from the checkpoints of an interrupted run
    quiet: bool = False  # training: no progress bar (also off when stderr is not a terminal)


@dataclass(frozen=True, kw_only=True)
class GduResult:
    ep: dict[str, np.ndarray]
    bptt: dict[str, np.ndarray]
    residual: float
    seconds: dict[str, float]


def load_batch(spec: TaskSpec, *, seed: int, dtype: str, data_dir: Path | None) -> tuple:
    """The (x, y) mini-batch of a GDU cell: toy data from the seed, or batch `data.index` of the
    unshuffled training split of MNIST / Fashion-MNIST."""
    if spec.data.source == "toy":
        return datasets.toy_batch(
            inputs=spec.model.inputs,
            outputs=spec.model.outputs,
            batch=spec.data.batch,
            seed=seed + TOY_DATA_OFFSET,
            dtype=dtype,
        )
    images, labels = datasets.load_split(spec.data.source, "train", data_dir=data_dir, dtype=dtype)
    return datasets.batch_of(
        images,
        datasets.one_hot(labels, classes=spec.model.outputs, dtype=dtype),
        batch=spec.data.batch,
        index=spec.data.index,
    )


def nudge(spec: TaskSpec, *, seed: int) -> tuple[float, bool]:
    """(signed β, symmetric flag) for the task's estimator (PAPER.md §2)."""
    beta, estimator = abs(spec.dynamics.beta), spec.dynamics.estimator
    if estimator == "negative":
        return -beta, False
    if estimator == "symmetric":
        return beta, True
    if estimator == "random-sign":
        return (beta if np.random.default_rng([seed, 2]).random() < 0.5 else -beta), False
    return beta, False


def gdu_once(
    net: Network, params: Any, x: Any, y: Any, spec: TaskSpec, *, beta: float, symmetric: bool
) -> GduResult:
    """One GDU measurement: T − K free steps, K more (the residual), BPTT through those K steps,
    EP from the fixed point. Each phase is timed with the device synchronised around it."""
    T, K = spec.dynamics.T, spec.dynamics.K
    seconds: dict[str, float] = {}

    def timed(key: str, call: Callable[[], Any]) -> Any:
        net.synchronize()
        start = time.perf_counter()
        out = call()
        net.synchronize()
        seconds[key] = time.perf_counter() - start
        return out

    mid, _ = timed("free_before", lambda: net.free_phase(params, x, steps=T - K))
    star, residual = timed("free_last", lambda: net.free_phase(params, x, steps=K, start=mid))
    bptt = timed("bptt", lambda: net.bptt_trace(params, x, y, start=mid, steps=K))
    ep = timed(
        "ep",
        lambda: net.ep_trace(params, x, y, start=star, beta=beta, steps=K, symmetric=symmetric),
    )
    seconds["total"] = sum(seconds.values())
    return GduResult(ep=ep, bptt=bptt, residual=float(residual), seconds=seconds)


def _peak_rss_bytes() -> int:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)


def _finite(traces: dict[str, np.ndarray]) -> bool:
    return all(np.all(np.isfinite(v)) for v in traces.values())


def base_record(
    spec: TaskSpec, backend: Backend, options: RunOptions, dtype: str, env: dict[str, Any]
) -> dict[str, Any]:
    beta, symmetric = nudge(spec, seed=options.seed)
    return {
        "schema": SCHEMA_VERSION,
        "task": spec.name,
        "cell": spec.cell,
        "preset": spec.preset,
        "variant": dict(spec.variant),
        "config": spec.config,
        "config_hash": config_hash(spec.config),
        "measurement": "gdu",
        "backend": backend.name,
        "device": options.device,
        "dtype": dtype,
        "estimator": spec.dynamics.estimator,
        "beta_used": beta,
        "symmetric": symmetric,
        "seed": options.seed,
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "environment": env,
    }


def run_gdu(
    spec: TaskSpec,
    backend: Backend,
    batch: tuple,
    options: RunOptions,
    writer: RecordWriter,
    env: dict[str, Any],
) -> dict[str, Any]:
    """Measure one GDU cell on one backend and return its record (not yet written)."""
    dtype = options.dtype or spec.dtype
    record = base_record(spec, backend, options, dtype, env)
    record["environment"] = {
        **env,
        "backend_versions": backend.versions(),
        "device_info": backend.device_info(options.device),
    }
    reason = backend.unsupported(spec.model, dtype=dtype, device=options.device)
    if reason:
        return {**record, "status": "skipped", "reason": reason}
    x, y = (np.asarray(a, dtype=dtype) for a in batch)
    params_np = init_params(spec.model, seed=options.seed, dtype=dtype)
    beta, symmetric = record["beta_used"], record["symmetric"]
    try:
        start = time.perf_counter()
        net = backend.build(spec.model, dtype=dtype, device=options.device)
        params = net.load(params_np)
        first = gdu_once(net, params, x, y, spec, beta=beta, symmetric=symmetric)
        first_seconds = time.perf_counter() - start
        steady = [
            gdu_once(net, params, x, y, spec, beta=beta, symmetric=symmetric)
            for _ in range(options.repeat)
        ]
    except EpbenchError:
        raise
    except Exception as err:  # a backend failure fails this cell only
        detail = traceback.format_exception_only(type(err), err)[-1].strip().replace("\n", " ")
        return {**record, "status": "failed", "reason": detail}
    best = min(steady, key=lambda r: r.seconds["total"]) if steady else first
    timings = {
        "first_seconds": first_seconds,
        "steady_seconds": best.seconds["total"] if steady else None,
        "phases": best.seconds,
        "repeats": options.repeat,
    }
    record.update(timings=timings, peak_memory_bytes=_peak_rss_bytes())
    if not (_finite(first.ep) and _finite(first.bptt)) or not math.isfinite(first.residual):
        return {**record, "status": "diverged", "reason": "non-finite states or traces"}
    record["metrics"] = {"residual": first.residual, "gdu": gdu_metrics(first.bptt, first.ep)}
    if options.save_traces:
        record["traces"] = save_traces(writer, record, params_np, x, y, first)
    return {**record, "status": "ok", "reason": None}


def save_traces(
    writer: RecordWriter,
    record: dict[str, Any],
    params: dict[str, np.ndarray],
    x: np.ndarray,
    y: np.ndarray,
    result: GduResult,
) -> str:
    """Write params/<name>, data/x, data/y, ep/<name>, bptt/<name> to one .npz next to the records;
    returns its path relative to the JSONL file's folder."""
    writer.traces_folder.mkdir(parents=True, exist_ok=True)
    stem = f"{record['cell']}_{record['backend']}_{record['dtype']}_seed{record['seed']}"
    path = writer.traces_folder / (stem.replace("[", "(").replace("]", ")") + ".npz")
    arrays = {f"params/{k}": v for k, v in params.items()}
    arrays.update({"data/x": x, "data/y": y})
    arrays.update({f"ep/{k}": v for k, v in result.ep.items()})
    arrays.update({f"bptt/{k}": v for k, v in result.bptt.items()})
    tmp = path.with_suffix(".tmp.npz")
    np.savez_compressed(tmp, **arrays)
    tmp.replace(path)
    return str(path.relative_to(writer.folder))


def load_traces(path: Path) -> dict[str, dict[str, np.ndarray]]:
    """Read a saved-traces file back as {"params": …, "data": …, "ep": …, "bptt": …}."""
    out: dict[str, dict[str, np.ndarray]] = {"params": {}, "data": {}, "ep": {}, "bptt": {}}
    with np.load(path) as archive:
        for key in archive.files:
            group, _, name = key.partition("/")
            out[group][name] = archive[key]
    return out


def run_train(
    spec: TaskSpec,
    backend: Backend,
    data: TrainingData,
    options: RunOptions,
    writer: RecordWriter,
    env: dict[str, Any],
) -> dict[str, Any]:
    """Train one cell on one backend for `options.seed`, EP then BPTT from the same initial
    weights, and return its record (not yet written): `metrics["train"][algorithm]` per algorithm
    (epbench.training.train_algorithm), `metrics["ep_minus_bptt"]` of the last epoch. Status
    `diverged` when either run diverged (the other still runs), `failed` on a backend error."""
    dtype = options.dtype or spec.dtype
    record = base_record(spec, backend, options, dtype, env)
    record["measurement"] = "train"
    record["environment"] = {
        **env,
        "backend_versions": backend.versions(),
        "device_info": backend.device_info(options.device),
    }
    if spec.dynamics.estimator == "random-sign":
        record["beta_used"] = abs(spec.dynamics.beta)  # its sign is drawn per batch
    reason = backend.unsupported(spec.model, dtype=dtype, device=options.device)
    if reason:
        return {**record, "status": "skipped", "reason": reason}
    initial = init_params(spec.model, seed=options.seed, dtype=dtype)
    beta, symmetric = nudge(spec, seed=options.seed)
    folder = writer.folder / "checkpoints"
    results, paths = {}, {}
    try:
        for algorithm in ALGORITHMS:
            path = checkpoint_path(
                folder,
                cell=spec.cell,
                backend=backend.name,
                device=options.device,
                dtype=dtype,
                seed=options.seed,
                key=run_key(spec),
                algorithm=algorithm,
            )
            paths[algorithm] = str(path.relative_to(writer.folder))
            results[algorithm] = train_algorithm(
                backend,
                initial,
                data,
                spec=spec,
                algorithm=algorithm,
                dtype=dtype,
                device=options.device,
                seed=options.seed,
                beta=beta,
                symmetric=symmetric,
                checkpoint=path,
                resume=options.resume,
                show_progress=not options.quiet and sys.stderr.isatty(),
                label=f"{spec.cell} {backend.name} seed {options.seed}",
            )
    except EpbenchError:
        raise
    except Exception as err:  # a backend failure fails this cell only
        detail = traceback.format_exception_only(type(err), err)[-1].strip().replace("\n", " ")
        return {**record, "status": "failed", "reason": detail}
    record["metrics"] = {
        "train": results,
        "ep_minus_bptt": {
            key: paired_difference(results["ep"], results["bptt"], key)
            for key in ("test_error", "train_error")
        },
    }
    record["checkpoints"] = paths
    record["peak_memory_bytes"] = max(r["peak_memory_bytes"] for r in results.values())
    broken = [
        f"{name} diverged at epoch {r['diverged']['epoch']}, step {r['diverged']['step']} "
        f"({r['diverged']['what']})"
        for name, r in results.items()
        if r["status"] == "diverged"
    ]
    if broken:
        return {**record, "status": "diverged", "reason": "; ".join(broken)}
    return {**record, "status": "ok", "reason": None}


BATCH_MEASUREMENTS = ("gdu",)  # measurements that run on one mini-batch (`load_batch`)


def run_measurement(
    measure: str,
    spec: TaskSpec,
    backend: Backend,
    inputs: Any,
    options: RunOptions,
    writer: RecordWriter,
    env: dict[str, Any],
) -> dict[str, Any]:
    """Run measurement `measure` of one cell on one backend and return its record (not yet
    written). `inputs` is the `load_batch` mini-batch for the measurements of
    `BATCH_MEASUREMENTS`, the `TrainingData` for `train`."""
    if measure == "train":
        return run_train(spec, backend, inputs, options, writer, env)
    return run_gdu(spec, backend, inputs, options, writer, env)


def run_matrix(
    cells: Iterable[TaskSpec],
    backends: Iterable[Backend],
    *,
    options: RunOptions,
    writer: RecordWriter,
    on_record: Callable[[dict[str, Any]], None] | None = None,
    progress: Callable[[str], None] | None = None,
) -> list[dict[str, Any]]:
    """Run every cell on every backend for every seed, each measurement of the cell's task,
    appending each record to `writer` as soon as it is done.

    Datasets are loaded before the first cell runs, so a missing dataset stops the run before any
    work; a backend failure inside a cell is recorded as `failed`, a diverging training run as
    `diverged`, and the matrix goes on.
    """
    cells, backends = list(cells), list(backends)
    seeds = tuple(options.seeds) or (options.seed,)
    env = environment()
    batches: dict[tuple, tuple] = {}
    train_data: dict[tuple, TrainingData] = {}
    for spec in cells:
        dtype = options.dtype or spec.dtype
        if any(m in BATCH_MEASUREMENTS for m in spec.measure):
            for seed in seeds:
                key = (spec.cell, dtype, seed if spec.data.source == "toy" else None)
                if key not in batches:
                    batches[key] = load_batch(
                        spec, seed=seed, dtype=dtype, data_dir=options.data_dir
                    )
        if "train" in spec.measure:
            key = (spec.data.source, spec.data.subset, dtype)
            if key not in train_data:
                train_data[key] = load_training_data(spec, dtype=dtype, data_dir=options.data_dir)
    jobs = [
        (spec, backend, seed, measure)
        for spec in cells
        for backend in backends
        for seed in seeds
        for measure in spec.measure
    ]
    records = []
    for i, (spec, backend, seed, measure) in enumerate(jobs, 1):
        dtype = options.dtype or spec.dtype
        if progress:
            extra = (f" seed {seed}" if len(seeds) > 1 else "") + (
                f" ({measure})" if measure != "gdu" else ""
            )
            progress(f"[{i}/{len(jobs)}] {spec.cell} on {backend.name}{extra}")
        opts = replace(options, seed=seed)
        if measure == "train":
            inputs = train_data[(spec.data.source, spec.data.subset, dtype)]
        else:
            inputs = batches[(spec.cell, dtype, seed if spec.data.source == "toy" else None)]
        record = run_measurement(measure, spec, backend, inputs, opts, writer, env)
        writer.write(record)
        records.append(record)
        if on_record:
            on_record(record)
    return records
