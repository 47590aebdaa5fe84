"""The `speed` measurement: EP (one-sided and symmetric) against BPTT, one training step at a time.

For one cell on one backend, at the cell's batch, T, K, β and learning rates (`train.lrs`; 0.01
per layer when the task has none: the values do not change the cost), for every algorithm of
ALGORITHMS — `ep` (one-sided, +|β|), `ep_symmetric` (±|β|) and `bptt` (truncated to the last K
steps) — through the Network protocol only (`ep_step`, `bptt_step`, `free_phase`, `synchronize`):

    compile_seconds     a fresh network: build + load + the first training step (JIT compilation
                        happens here), device synchronised; as `training.compile_seconds`
    step_seconds        steady-state seconds per training step: the median over repetitions,
                        each of n back-to-back steps between two synchronised clock reads (one
                        step in the first repetition, which calibrates n so that a repetition
                        lasts about REP_SECONDS; REPEATS repetitions, more with --repeat, fewer
                        past BUDGET_SECONDS); `step_seconds_best`, `step_seconds_all` beside
    samples_per_s       batch / step_seconds
    phases              `free`: a free phase of T steps (`free_phase` timed alone, median; with
                        its call overhead: inputs put on the device, the residual read back);
                        EP `nudged` = step − free (the nudged phase(s) and the update);
                        BPTT `free` = free · (T − K) / T, `recorded_backward` = step − that free
                        part, `backward` = step − free (the backward pass and the update beyond
                        the forward cost of the last K steps). Differences of medians, ≥ 0.
    peak_memory_bytes   during the timed steps: the framework allocator's peak on a GPU (the
                        backend's optional `memory_stats`; None when the allocator cannot reset
                        its peak — jax — and that peak was reached before these steps), else
                        the process's peak resident set (VmHWM, reset before the steps). For
                        the memory of one step against K (a process per case) see
                        epbench.memory_sweep.
    flops               one training step's FLOPs (epbench.flops)
    flop_bound_seconds  Σ count · seconds(op) of the same ops timed alone (epbench.peak), before
                        and after the cell's steps, the faster of the two for each op
    flop_fraction       flop_bound_seconds / step_seconds: the share of the FLOP-bound limit the
                        step reaches on this machine (above 1 where the step runs its products
                        faster than alone: tiny products whose call overhead a compiled phase
                        fuses away, work the model counts that a backend skips, or a machine
                        that ran slower through both timings of the ops than through the steps)
    achieved_flops_per_s  flops / step_seconds

The record also holds `metrics["throughput"]` (each op's measured time and source) and, where the
backend re-creates the paper's reference implementation for the model (epbench.reference),
`metrics["reference"]`: EP and BPTT steps of both, interleaved, with the speed-up of each. The
throughput targets (`speed_report.TARGETS`, and `REFERENCE_TARGETS` for the speed-ups) are shown
beside the numbers by `epbench run speed`.
`profile_steps` runs some steps under cProfile and the backend's own profiler (`epbench profile`).

Timed steps reuse one mini-batch (numpy, converted by the backend on every step as in training)
and update the parameters as training does. Several cases share the machine with whatever else
runs on it: the median of repetitions is reported, and the spread is kept in the record.
"""

from __future__ import annotations

import cProfile
import io
import pstats
import statistics
import time
import traceback
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from .errors import EpbenchError
from .flops import ALGORITHMS, phase_ops, total_flops, training_ops
from .memory import peak_memory_bytes, reset_peak_memory
from .params import init_params, learning_rates, param_shapes
from .peak import fastest, flop_bound_seconds, measure_ops
from .protocols import Backend, Network
from .reference import PAIRS, reference_of, time_against_reference
from .results import RecordWriter
from .runner import RunOptions, measurement_record
from .spec import TaskSpec

REPEATS = 3  # repetitions per algorithm (the first is a single step); --repeat raises it
REP_SECONDS = 0.25  # target length of one repetition
BUDGET_SECONDS = 3.0  # per algorithm: slow cases get fewer repetitions (at least two)
MAX_STEPS = 200  # steps per repetition
DEFAULT_LR = 0.01


def lrs_of(spec: TaskSpec) -> dict[str, float]:
    """The cell's per-parameter learning rates, or DEFAULT_LR for every parameter."""
    if spec.train.lrs:
        return learning_rates(spec.model, spec.train.lrs)
    return dict.fromkeys(param_shapes(spec.model), DEFAULT_LR)


def step_function(
    net: Network, spec: TaskSpec, x: Any, y: Any, *, algorithm: str
) -> Callable[[Any], tuple[Any, Any, Any]]:
    """params → (params, loss, errors): one training step of `algorithm` at the cell's T, K, β."""
    T, K, beta, lrs = spec.dynamics.T, spec.dynamics.K, abs(spec.dynamics.beta), lrs_of(spec)
    if algorithm == "bptt":
        return lambda p: net.bptt_step(p, x, y, free_steps=T, steps=K, lrs=lrs)
    if algorithm not in ALGORITHMS:
        raise EpbenchError(f"algorithm: expected one of {', '.join(ALGORITHMS)}, found {algorithm}")
    symmetric = algorithm == "ep_symmetric"
    return lambda p: net.ep_step(
        p, x, y, free_steps=T, steps=K, beta=beta, lrs=lrs, symmetric=symmetric
    )


def run_steps(net: Network, step: Callable, params: Any, n: int) -> tuple[Any, float]:
    """n back-to-back steps between two synchronised clock reads: (params, seconds)."""
    net.synchronize()
    start = time.perf_counter()
    for _ in range(n):
        params, _, _ = step(params)
    net.synchronize()
    return params, time.perf_counter() - start


def repetitions(first: float, *, repeats: int) -> tuple[int, int]:
    """(steps per repetition, further repetitions) after a first single step of `first` s."""
    n = int(min(MAX_STEPS, max(1, round(REP_SECONDS / max(first, 1e-9)))))
    more = max(1, repeats - 1)
    while more > 1 and (more * n + 1) * first > BUDGET_SECONDS:
        more -= 1
    return n, more


def _memory(backend: Backend, device: str, *, reset: bool) -> dict[str, Any] | None:
    """The backend's allocator statistics on a GPU (optional method), else None."""
    method = getattr(backend, "memory_stats", None)
    return method(device, reset=reset) if method is not None and device != "cpu" else None


def time_algorithm(
    backend: Backend,
    spec: TaskSpec,
    params_np: dict[str, np.ndarray],
    x: np.ndarray,
    y: np.ndarray,
    *,
    algorithm: str,
    dtype: str,
    device: str,
    repeats: int,
) -> dict[str, Any]:
    """compile_seconds, step timings and peak memory of one algorithm on a fresh network."""
    start = time.perf_counter()
    net = backend.build(spec.model, dtype=dtype, device=device)
    step = step_function(net, spec, x, y, algorithm=algorithm)
    params, _, _ = step(net.load(params_np))
    net.synchronize()
    compile_seconds = time.perf_counter() - start
    allocator = _memory(backend, device, reset=True)
    reset_peak_memory()
    params, first = run_steps(net, step, params, 1)
    n, more = repetitions(first, repeats=repeats)
    per_step = [first]
    for _ in range(more):
        params, seconds = run_steps(net, step, params, n)
        per_step.append(seconds / n)
    after = _memory(backend, device, reset=False) if allocator is not None else None
    if after is None:
        peak = peak_memory_bytes()
    elif after["resettable"] or after["peak_bytes"] > allocator["peak_bytes"]:
        peak = after["peak_bytes"]
    else:  # jax cannot reset its peak: it was reached before these steps, theirs is unknown
        peak = None
    step_seconds = statistics.median(per_step)
    return {
        "samples_per_s": spec.data.batch / step_seconds,
        "step_seconds": step_seconds,
        "step_seconds_best": min(per_step),
        "step_seconds_all": per_step,
        "steps_timed": 1 + n * more,
        "compile_seconds": compile_seconds,
        "peak_memory_bytes": peak,
        "memory_source": "allocator" if after else "process",
    }


def time_free_phase(
    backend: Backend,
    spec: TaskSpec,
    params_np: dict[str, np.ndarray],
    x: np.ndarray,
    *,
    dtype: str,
    device: str,
    repeats: int,
) -> dict[str, Any]:
    """Seconds of one free phase of T steps (`free_phase`, which synchronises for its residual):
    the first call (compilation) apart, then repetitions as for the training steps (median)."""
    net = backend.build(spec.model, dtype=dtype, device=device)
    params = net.load(params_np)
    T = spec.dynamics.T

    def calls(n: int) -> float:
        net.synchronize()
        start = time.perf_counter()
        for _ in range(n):
            net.free_phase(params, x, steps=T)
        return time.perf_counter() - start

    first = calls(1)
    once = calls(1)
    n, more = repetitions(once, repeats=repeats)
    times = [once] + [calls(n) / n for _ in range(more)]
    return {"free_seconds": statistics.median(times), "free_first_seconds": first}


def phases(algorithm: str, step: float, free: float, *, T: int, K: int) -> dict[str, float]:
    """The phase breakdown of one step (module doc), from the step and free-phase medians."""
    if algorithm == "bptt":
        early = free * (T - K) / T
        return {
            "free": early,
            "recorded_backward": max(step - early, 0.0),
            "backward": max(step - free, 0.0),
        }
    return {"free": free, "nudged": max(step - free, 0.0)}


def run_speed(
    spec: TaskSpec,
    backend: Backend,
    batch: tuple,
    options: RunOptions,
    writer: RecordWriter,
    env: dict[str, Any],
) -> dict[str, Any]:
    """Measure one speed cell on one backend and return its record (not yet written):
    `metrics["speed"][algorithm]` for each of ALGORITHMS (module doc), `metrics["phases"]` (the
    free phase alone), `metrics["throughput"]` (the ops timed alone), `metrics["flops"]`."""
    dtype = options.dtype or spec.dtype
    record = measurement_record(spec, backend, options, env, measurement="speed")
    if record.get("status") == "skipped":
        return record
    x, y = (np.asarray(a, dtype=dtype) for a in batch)
    params_np = init_params(spec.model, seed=options.seed, dtype=dtype)
    T, K, B = spec.dynamics.T, spec.dynamics.K, x.shape[0]
    repeats = max(REPEATS, options.repeat)
    started = time.perf_counter()
    try:
        counts = {a: training_ops(spec.model, batch=B, T=T, K=K, algorithm=a) for a in ALGORITHMS}
        every: Counter = sum(counts.values(), Counter())
        before = measure_ops(backend, every, dtype=dtype, device=options.device)
        free = time_free_phase(
            backend, spec, params_np, x, dtype=dtype, device=options.device, repeats=repeats
        )
        results = {
            algorithm: time_algorithm(
                backend,
                spec,
                params_np,
                x,
                y,
                algorithm=algorithm,
                dtype=dtype,
                device=options.device,
                repeats=repeats,
            )
            for algorithm in ALGORITHMS
        }
        reference = reference_of(backend, spec, dtype=dtype, device=options.device)
        against = None
        if reference is not None:
            against = time_against_reference(
                backend,
                reference,
                spec,
                params_np,
                x,
                y,
                step_function=step_function,
                dtype=dtype,
                device=options.device,
                pairs=max(PAIRS, options.repeat),
            )
        after = measure_ops(backend, every, dtype=dtype, device=options.device)
        measured = fastest(before, after)
    except EpbenchError:
        raise
    except Exception as err:  # a backend failure fails this cell only
        detail = traceback.format_exception_only(type(err), err)[-1].strip().replace("\n", " ")
        return {**record, "status": "failed", "reason": detail}
    for algorithm, result in results.items():
        step = result["step_seconds"]
        bound = flop_bound_seconds(counts[algorithm], measured)
        flops = total_flops(counts[algorithm])
        by_phase = phase_ops(spec.model, batch=B, T=T, K=K, algorithm=algorithm)
        result.update(
            phases=phases(algorithm, step, free["free_seconds"], T=T, K=K),
            flops=flops,
            flops_by_phase={name: total_flops(ops) for name, ops in by_phase.items()},
            achieved_flops_per_s=flops / step,
            flop_bound_seconds=bound,
            flop_fraction=bound / step if bound is not None else None,
        )
    record["metrics"] = {
        "speed": results,
        "phases": free,
        "throughput": {
            "ops": [{"op": list(op), **values} for op, values in measured.items()],
            "peak_flops_per_s": max(
                (v["flops_per_s"] for v in measured.values() if v["flops_per_s"]), default=None
            ),
        },
    }
    if against is not None:
        record["metrics"]["reference"] = against
    record["timings"] = {"seconds": time.perf_counter() - started, "repeats": repeats}
    peaks = [r["peak_memory_bytes"] for r in results.values() if r["peak_memory_bytes"]]
    record["peak_memory_bytes"] = max(peaks, default=None)
    return {**record, "status": "ok", "reason": None}


def profile_steps(
    spec: TaskSpec,
    backend: Backend,
    batch: tuple,
    *,
    algorithm: str,
    steps: int,
    dtype: str,
    device: str,
    seed: int,
    folder: Path,
    rows: int = 30,
) -> dict[str, Any]:
    """Where the time of `steps` training steps of `algorithm` goes: they run (after one warm-up
    step) under cProfile — `folder`/<stem>.prof and the top `rows` functions by own time in
    <stem>.txt — then once more under the backend's own profiler when it offers the optional
    `profile_summary` (torch: per-op table; jax: a trace), written to the folder <stem>/.
    Returns the paths, the seconds per step and both summaries."""
    x, y = (np.asarray(a, dtype=dtype) for a in batch)
    net = backend.build(spec.model, dtype=dtype, device=device)
    step = step_function(net, spec, x, y, algorithm=algorithm)
    params, _, _ = step(net.load(init_params(spec.model, seed=seed, dtype=dtype)))
    net.synchronize()
    folder.mkdir(parents=True, exist_ok=True)
    stem = f"{spec.cell}_{backend.name}_{device}_{algorithm}".replace("[", "(").replace("]", ")")
    profiler = cProfile.Profile()
    start = time.perf_counter()
    profiler.enable()
    params, _ = run_steps(net, step, params, steps)
    profiler.disable()
    seconds = (time.perf_counter() - start) / steps
    profiler.dump_stats(folder / f"{stem}.prof")
    text = io.StringIO()
    pstats.Stats(profiler, stream=text).sort_stats("tottime").print_stats(rows)
    (folder / f"{stem}.txt").write_text(text.getvalue(), encoding="utf-8")
    own = getattr(backend, "profile_summary", None)
    summary = None
    if own is not None:
        summary = own(
            lambda: run_steps(net, step, params, steps), device=device, folder=folder / stem
        )
    return {
        "cprofile": str(folder / f"{stem}.prof"),
        "cprofile_text": str(folder / f"{stem}.txt"),
        "cprofile_summary": text.getvalue(),
        "backend_summary": summary,
        "seconds_per_step": seconds,
    }
