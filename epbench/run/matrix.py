"""Runs the cells of the matrix (task cell × backend × seed): seeding, data, timing, skips, records.

Each cell runs the measurements its task lists: `gdu` (`run_gdu`, the GDU traces at the initial
weights) and `train` (`run_train`, EP and BPTT trained from the same weights, epbench.measurements.training).

Seeds: the canonical parameters come from `init_params(model, seed=seed)`; toy data from
`seed + TOY_DATA_OFFSET`; the random-sign estimator's sign from `default_rng([seed, 2])` (in
training: per batch, from `[seed, 2, epoch]`). So EP and BPTT, and every backend, see identical
weights and batches for the same seed.

`run_matrix` is the coordinator of a matrix: it checks the data, hands each cell to an executor
(epbench.run.executors: in this process, local worker subprocesses, or a Dask cluster) as a picklable
`CellJob` that the worker runs through `run_measurement`, retries failed cells, skips cells with an
`ok` record on `--resume`, reports progress, and writes every record itself, atomically.
"""

from __future__ import annotations

import math
import sys
import time
import traceback
from collections import deque
from collections.abc import Callable, Iterable
from concurrent.futures import FIRST_COMPLETED, Future, wait
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from epbench.config import datasets
from epbench.config.tasks import config_hash
from epbench.core.checkpoint import checkpoint_path
from epbench.core.errors import EpbenchError
from epbench.core.metrics import gdu_metrics, signal_metrics
from epbench.core.params import init_params
from epbench.core.process_memory import peak_memory_bytes
from epbench.core.protocols import Backend, Network
from epbench.core.records import SCHEMA_VERSION, RecordWriter, cell_key, environment, ok_records
from epbench.core.spec import TaskSpec
from epbench.measurements.training import (
    ALGORITHMS,
    TrainingData,
    paired_difference,
    run_key,
    train_algorithm,
)

if TYPE_CHECKING:
    from epbench.run.executors import CellJob, Executor

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
    quiet: bool = False  # training: no progress (a bar on a terminal, else plain lines)


@dataclass(frozen=True, kw_only=True)
class GduResult:
    ep: dict[str, np.ndarray]
    bptt: dict[str, np.ndarray]
    residual: float
    seconds: dict[str, float]
    saturated: float | None  # share of output units at a bound at s_* (`saturated_outputs`)


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


def saturated_outputs(spec: TaskSpec, net: Network, star: Any) -> float | None:
    """The share of output units (over the batch) exactly at 0 or 1 at the fixed point `star`,
    where σ' = 0, for a model that saturates (hardsigm or clamp); None for the others. On those
    units the paper's nudge moves s⁰ and BPTT passes no gradient, so the larger the share, the
    further EP's update is from BPTT's in the P setting (`unsaturated_target`)."""
    if spec.model.activation != "hardsigm" and not spec.model.clamp:
        return None
    s0 = np.asarray(net.states(star)["s0"])
    return float(np.mean((s0 == 0.0) | (s0 == 1.0)))


def unsaturated_target(net: Network, star: Any, y: Any) -> np.ndarray:
    """The EP target of `dynamics.nudge = "unsaturated"`: y, except s⁰_* on the output units at
    a bound of the hard sigmoid or the clamp (exactly 0 or 1) at the fixed point `star`. There σ'
    is 0, BPTT passes no gradient, and the paper's nudge β (y − s⁰) would still move the unit
    (it is added after σ): linearising both phases around s_* shows EP then estimates BPTT's
    gradient only for y on the unsaturated units. Same dtype as y."""
    y = np.asarray(y)
    s0 = np.asarray(net.states(star)["s0"], dtype=y.dtype)
    return np.where((s0 == 0.0) | (s0 == 1.0), s0, y)


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
    target = y if spec.dynamics.nudge == "output" else unsaturated_target(net, star, y)
    ep = timed(
        "ep",
        lambda: net.ep_trace(
            params, x, target, start=star, beta=beta, steps=K, symmetric=symmetric
        ),
    )
    seconds["total"] = sum(seconds.values())
    saturated = saturated_outputs(spec, net, star)
    return GduResult(
        ep=ep, bptt=bptt, residual=float(residual), seconds=seconds, saturated=saturated
    )


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
        "depth": spec.model.depth,
        "angle": getattr(spec.model, "feedback_angle", None),
        "beta_used": beta,
        "symmetric": symmetric,
        "seed": options.seed,
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "environment": env,
    }


def measurement_record(
    spec: TaskSpec,
    backend: Backend,
    options: RunOptions,
    env: dict[str, Any],
    *,
    measurement: str,
) -> dict[str, Any]:
    """The start of every measurement's record: `base_record` for `measurement`, with the
    backend's framework versions and device description added to the environment. Where the
    backend cannot run the cell (`Backend.supports`) the record is already final: status
    `skipped` and the reason."""
    dtype = options.dtype or spec.dtype
    record = base_record(spec, backend, options, dtype, env)
    record["measurement"] = measurement
    record["environment"] = {
        **env,
        "backend_versions": backend.versions(),
        "device_info": backend.device_info(options.device),
    }
    reason = backend.supports(spec.model, dtype=dtype, device=options.device)
    if reason:
        record.update(status="skipped", reason=reason)
    return record


def error_line(err: BaseException) -> str:
    """An exception as one line: `Type: message`, newlines folded."""
    return traceback.format_exception_only(type(err), err)[-1].strip().replace("\n", " ")


def failed_record(record: dict[str, Any], err: BaseException) -> dict[str, Any]:
    """`record` made final after a backend failure: status `failed`, the error as the reason (a
    failing backend fails its cell only; the matrix goes on)."""
    return {**record, "status": "failed", "reason": error_line(err)}


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
    record = measurement_record(spec, backend, options, env, measurement="gdu")
    if record.get("status") == "skipped":
        return record
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
        return failed_record(record, err)
    best = min(steady, key=lambda r: r.seconds["total"]) if steady else first
    timings = {
        "first_seconds": first_seconds,
        "steady_seconds": best.seconds["total"] if steady else None,
        "phases": best.seconds,
        "repeats": options.repeat,
    }
    record.update(timings=timings, peak_memory_bytes=peak_memory_bytes())
    if not (_finite(first.ep) and _finite(first.bptt)) or not math.isfinite(first.residual):
        return {**record, "status": "diverged", "reason": "non-finite states or traces"}
    record["metrics"] = {
        "residual": first.residual,
        "saturated_outputs": first.saturated,
        "gdu": gdu_metrics(first.bptt, first.ep),
        **signal_metrics(first.bptt, first.ep),
    }
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
    (epbench.measurements.training.train_algorithm), `metrics["ep_minus_bptt"]` of the last epoch. Status
    `diverged` when either run diverged (the other still runs), `failed` on a backend error."""
    dtype = options.dtype or spec.dtype
    record = measurement_record(spec, backend, options, env, measurement="train")
    if spec.dynamics.estimator == "random-sign":
        record["beta_used"] = abs(spec.dynamics.beta)  # its sign is drawn per batch
    if record.get("status") == "skipped":
        return record
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
                progress=None if options.quiet else "bar" if sys.stderr.isatty() else "lines",
                label=f"{spec.cell} {backend.name} seed {options.seed}",
            )
    except EpbenchError:
        raise
    except Exception as err:  # a backend failure fails this cell only
        return failed_record(record, err)
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


# run on one mini-batch (`load_batch`)
BATCH_MEASUREMENTS = ("gdu", "speed", "memory", "beta-sweep", "rtrl")


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
    if measure == "beta-sweep":  # epbench.measurements.beta_sweep (it imports this module)
        from epbench.measurements.beta_sweep import run_beta_sweep

        return run_beta_sweep(spec, backend, inputs, options, writer, env)
    if measure == "rtrl":  # epbench.measurements.rtrl (it imports this module)
        from epbench.measurements.rtrl import run_rtrl

        return run_rtrl(spec, backend, inputs, options, writer, env)
    if measure in (
        "speed",
        "memory",
    ):  # epbench.measurements.speed, epbench.measurements.memory (they import this)
        from epbench.measurements.memory import run_memory
        from epbench.measurements.speed import run_speed

        run = run_speed if measure == "speed" else run_memory
        return run(spec, backend, inputs, options, writer, env)
    return run_gdu(spec, backend, inputs, options, writer, env)


def run_matrix(
    cells: Iterable[TaskSpec],
    backends: Iterable[Backend],
    *,
    options: RunOptions,
    writer: RecordWriter,
    executor: Executor | None = None,
    retries: int = 0,
    on_record: Callable[[dict[str, Any]], None] | None = None,
    progress: Callable[[str], None] | None = None,
) -> list[dict[str, Any]]:
    """Run every cell on every backend for every seed, each measurement of the cell's task, on
    `executor` (default: in this process, one cell after the other; epbench.run.executors), writing
    each record to `writer` from this process as soon as its cell ends.

    Datasets are loaded here before the first cell runs, so a missing dataset stops the run before
    any work. A backend failure inside a cell, or the death of the worker running it, is recorded
    as `failed` and the cell is run again up to `retries` more times (its record says how many
    `attempts`); a diverging training run is recorded as `diverged`; the matrix goes on. An
    `EpbenchError` raised in a cell (a refused checkpoint, an unknown backend) stops the run.

    With `options.resume`, a cell with an `ok` record in `writer.folder` (same cell, preset,
    configuration hash, measurement, backend, device, dtype and seed: `results.record_key`) is
    not run again, and that record stands in for it; the other cells run (training ones from their
    last checkpoint). Returns the records in matrix order. `progress` gets the lines of
    `executors.progress.MatrixProgress`, `on_record` each new record.
    """
    from epbench.run.executors import (  # lazy: the executors import this module
        CellJob,
        plugin_knobs,
    )
    from epbench.run.executors.inline import InlineExecutor
    from epbench.run.executors.progress import MatrixProgress

    cells, backends = list(cells), list(backends)
    seeds = tuple(options.seeds) or (options.seed,)
    own = executor is None
    executor = executor if executor is not None else InlineExecutor()
    try:
        _check_data(cells, seeds, options, keep=executor.in_process)
        env = {**environment(), "executor": executor.name}
        select, block = plugin_knobs()
        parallel = executor.slots() > 1
        bars_off = options.quiet or parallel or not executor.terminal
        matrix = [
            (spec, backend, seed, measure)
            for spec in cells
            for backend in backends
            for seed in seeds
            for measure in spec.measure
        ]
        jobs = [
            CellJob(
                index=i,
                spec=spec,
                backend=backend.name,
                measure=measure,
                options=replace(options, seed=seed, quiet=bars_off),
                records=writer.path,
                env=env,
                select=select,
                block=block,
            )
            for i, (spec, backend, seed, measure) in enumerate(matrix)
        ]
        records: list[dict[str, Any] | None] = [None] * len(jobs)
        if options.resume:
            done = ok_records(writer.folder)
            records = [done.get(_key(*cell, options)) for cell in matrix]
        todo = deque(i for i, record in enumerate(records) if record is None)
        meter = MatrixProgress(len(todo), parallel=parallel, emit=progress)
        if progress and len(todo) < len(jobs):
            progress(f"{len(jobs) - len(todo)} of {len(jobs)} cells have ok records: not run again")
        attempts = [0] * len(jobs)
        running: dict[Future, int] = {}
        try:
            while todo or running:
                while todo and len(running) < executor.slots():
                    i = todo.popleft()
                    attempts[i] += 1
                    meter.started(jobs[i].label)
                    running[executor.submit(jobs[i], matrix[i][1])] = i
                finished, _ = wait(running, timeout=POLL_SECONDS, return_when=FIRST_COMPLETED)
                for future in sorted(finished, key=running.__getitem__):
                    i = running.pop(future)
                    record = _cell_record(future, jobs[i], matrix[i][1], env, executor.in_process)
                    if record["status"] == "failed" and attempts[i] <= retries:
                        meter.ended(jobs[i].label, "failed", retry=f"attempt {attempts[i] + 1}")
                        todo.appendleft(i)
                        continue
                    record["attempts"] = attempts[i]
                    writer.write(record)
                    records[i] = record
                    meter.ended(jobs[i].label, record["status"])
                    if on_record:
                        on_record(record)
        finally:
            for future in running:
                future.cancel()
        return [record for record in records if record is not None]
    finally:
        if own:
            executor.close()


POLL_SECONDS = 5.0  # how often run_matrix looks for new cluster workers while cells run


def _check_data(
    cells: list[TaskSpec], seeds: tuple[int, ...], options: RunOptions, *, keep: bool
) -> None:
    """Load every dataset the matrix needs once (a DataError stops the run before any cell);
    `keep` them in this process's cache when the cells run here."""
    from epbench.run.executors.cell import cell_inputs, input_key, load_inputs

    checked = set()
    for spec in cells:
        dtype = options.dtype or spec.dtype
        for measure, seed in ((m, s) for m in spec.measure for s in seeds):
            key = input_key(spec, measure, seed=seed, dtype=dtype, data_dir=options.data_dir)
            if key is not None and key not in checked:
                checked.add(key)
                load = cell_inputs if keep else load_inputs
                load(spec, measure, seed=seed, dtype=dtype, data_dir=options.data_dir)


def _key(spec: TaskSpec, backend: Backend, seed: int, measure: str, options: RunOptions) -> tuple:
    """`results.record_key` of the record this cell will have."""
    return cell_key(
        cell=spec.cell,
        preset=spec.preset,
        config_hash=config_hash(spec.config),
        measurement=measure,
        backend=backend.name,
        device=options.device,
        dtype=options.dtype or spec.dtype,
        seed=seed,
    )


def _cell_record(
    future: Future, job: CellJob, backend: Backend, env: dict[str, Any], in_process: bool
) -> dict[str, Any]:
    """The record a finished cell job gives: the worker's, or a `failed` one when the worker
    died or could not run it. An `EpbenchError` (raised here, or sent back as text) stops the run,
    and so does any other exception of a cell run `in_process` (there is no worker to lose).
    """
    try:
        outcome = future.result()
    except EpbenchError:
        raise
    except Exception as err:  # BrokenProcessPool, KilledWorker, a worker's import error, …
        if in_process:
            raise
        detail = error_line(err)
        dtype = job.options.dtype or job.spec.dtype
        record = base_record(job.spec, backend, job.options, dtype, env)
        record["measurement"] = job.measure
        return {**record, "status": "failed", "reason": f"worker lost: {detail}"}
    if outcome.error is not None:
        raise EpbenchError(outcome.error)
    return outcome.record
