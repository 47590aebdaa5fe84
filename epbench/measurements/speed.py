"""The `speed` measurement: EP (one-sided, symmetric, holomorphic) against BPTT, one training step
at a time.

For one cell on one backend, at the cell's batch, T, K, β and learning rates (`train.lrs`; 0.01
per layer when the task has none: the values do not change the cost), for every algorithm of
ALGORITHMS — `ep` (one-sided, +|β|), `ep_symmetric` (±|β|) and `bptt` (truncated to the last K
steps) — and, for a cell with `dynamics.estimator = "holomorphic"`, `ep_holomorphic` (N =
`dynamics.points` complex nudges, docs/theory.md §2.5; `{"skipped": reason}` where the model does
not allow it, epbench.core.support.estimator_reason; its `flops` fields are None: the FLOP model
of epbench.core.flops counts real ops only) — through the Network protocol only (`ep_step`,
`bptt_step`, `free_phase`, `synchronize`):

    compile_seconds     a fresh network: build + load + the first training step (JIT compilation
                        happens here), device synchronised; as `training.compile_seconds`
    step_seconds        steady-state seconds per training step: the median of the first step
                        after compilation and of one value per round; each round times the free
                        phase and every algorithm in turn, n back-to-back calls each between two
                        synchronised clock reads (n so that they last about REP_SECONDS), so that
                        all see the machine in the same state (`time_rounds`); REPEATS − 1
                        rounds, more with --repeat, fewer past BUDGET_SECONDS;
                        `step_seconds_best`, `step_seconds_all` beside
    samples_per_s       batch / step_seconds
    phases              `free`: a free phase of T steps (`free_phase`, timed in the same rounds;
                        with its call overhead: inputs put on the device, the residual read back);
                        EP `nudged` = step − free (the nudged phase(s) and the update);
                        BPTT `free` = free · (T − K) / T, `recorded_backward` = step − that free
                        part, `backward` = step − free (the backward pass and the update beyond
                        the forward cost of the last K steps). Each difference is taken within a
                        round (step and free phase timed back to back), then the median, ≥ 0.
    peak_memory_bytes   during the first steady step: the framework allocator's peak on a GPU (the
                        backend's optional `memory_stats`; None when the allocator cannot reset
                        its peak — jax — and that peak was reached before these steps), else
                        the process's peak resident set (VmHWM, reset before the steps). For
                        the memory of one step against K (a process per case) see
                        epbench.measurements.memory.
    flops               one training step's FLOPs (epbench.core.flops)
    flop_bound_seconds  Σ count · seconds(op) of the same ops timed alone
    (epbench.measurements.peak), before
                        and after the cell's steps, the faster of the two for each op
    flop_fraction       flop_bound_seconds / step_seconds: the share of the FLOP-bound limit the
                        step reaches on this machine (above 1 where the step runs its products
                        faster than alone: tiny products whose call overhead a compiled phase
                        fuses away, work the model counts that a backend skips, or a machine
                        that ran slower through both timings of the ops than through the steps)
    achieved_flops_per_s  flops / step_seconds

The record also holds `metrics["throughput"]` (each op's measured time and source) and, where the
backend re-creates the paper's reference implementation for the model
(epbench.measurements.reference),
`metrics["reference"]`: EP and BPTT steps of both, interleaved, with the speed-up of each. The
throughput targets (`speed_report.TARGETS`, and `REFERENCE_TARGETS` for the speed-ups) are shown
beside the numbers by `epbench run speed`.
`profile_steps` runs some steps under cProfile and the backend's own profiler (`epbench profile`).

Timed steps reuse one mini-batch (numpy, converted by the backend on every step as in training)
and update the parameters as training does. Several cases share the machine with whatever else
runs on it: the median of repetitions is reported, and the spread is kept in the record.
"""

from __future__ import annotations

import statistics
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from epbench.core.errors import EpbenchError
from epbench.core.estimators import points_of
from epbench.core.flops import ALGORITHMS, phase_ops, total_flops, training_ops
from epbench.core.measurement import Cell, Output
from epbench.core.params import init_params, learning_rates, param_shapes
from epbench.core.process_memory import peak_memory_bytes, reset_peak_memory
from epbench.core.protocols import Backend, MemoryStatsBackend, Network
from epbench.core.spec import TaskSpec
from epbench.core.support import estimator_reason
from epbench.measurements.peak import fastest, flop_bound_seconds, measure_ops
from epbench.measurements.reference import PAIRS, reference_of, time_against_reference

REPEATS = 3  # repetitions per algorithm (the first is a single step); --repeat raises it
REP_SECONDS = 0.25  # target length of one repetition
BUDGET_SECONDS = 3.0  # per algorithm: slow cases get fewer repetitions (at least two)
MAX_STEPS = 200  # steps per repetition
DEFAULT_LR = 0.01
HOLOMORPHIC = "ep_holomorphic"


def algorithms_of(spec: TaskSpec) -> tuple[str, ...]:
    """ALGORITHMS, and `ep_holomorphic` when the cell's estimator is holomorphic and its model
    allows it (module doc)."""
    if points_of(spec.dynamics) and estimator_reason(spec.model, spec.dynamics) is None:
        return (*ALGORITHMS, HOLOMORPHIC)
    return ALGORITHMS


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
    if algorithm == HOLOMORPHIC and points_of(spec.dynamics):
        N = points_of(spec.dynamics)
        return lambda p: net.ep_step(
            p, x, y, free_steps=T, steps=K, beta=beta, lrs=lrs, points=N
        )  # fmt: skip
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


def calls_per_round(first: float) -> int:
    """Calls per timed batch, so that it lasts about REP_SECONDS after a first call of `first` s."""
    return int(min(MAX_STEPS, max(1, round(REP_SECONDS / max(first, 1e-9)))))


def _memory(backend: Backend, device: str, *, reset: bool) -> dict[str, Any] | None:
    """The backend's allocator statistics on a GPU (optional method), else None."""
    if device == "cpu" or not isinstance(backend, MemoryStatsBackend):
        return None
    return backend.memory_stats(device, reset=reset)


@dataclass(frozen=True)
class Timed:
    """One thing a speed cell times: `run(n)` → seconds of n back-to-back calls, synchronised;
    `first` the seconds of the first steady call; `info` what was measured while preparing it."""

    run: Callable[[int], float]
    first: float
    info: dict[str, Any]


def prepare_algorithm(
    backend: Backend,
    spec: TaskSpec,
    params_np: dict[str, np.ndarray],
    x: np.ndarray,
    y: np.ndarray,
    *,
    algorithm: str,
    dtype: str,
    device: str,
) -> Timed:
    """A fresh network of one algorithm, compiled, its first steady step timed alone with the peak
    memory of that step: `info` = {compile_seconds, peak_memory_bytes, memory_source}."""
    start = time.perf_counter()
    net = backend.build(spec.model, dtype=dtype, device=device)
    step = step_function(net, spec, x, y, algorithm=algorithm)
    state = {"params": step(net.load(params_np))[0]}
    net.synchronize()
    compile_seconds = time.perf_counter() - start

    def run(n: int) -> float:
        state["params"], seconds = run_steps(net, step, state["params"], n)
        return seconds

    allocator = _memory(backend, device, reset=True)
    reset_peak_memory()
    first = run(1)
    after = _memory(backend, device, reset=False) if allocator is not None else None
    if after is None:
        peak = peak_memory_bytes()
    elif after["resettable"] or after["peak_bytes"] > allocator["peak_bytes"]:
        peak = after["peak_bytes"]
    else:  # jax cannot reset its peak: it was reached before this step, the step's is unknown
        peak = None
    info = {
        "compile_seconds": compile_seconds,
        "peak_memory_bytes": peak,
        "memory_source": "allocator" if after else "process",
    }
    return Timed(run=run, first=first, info=info)


def prepare_free_phase(
    backend: Backend, spec: TaskSpec, params_np: dict[str, np.ndarray], x: np.ndarray, **like: str
) -> Timed:
    """One free phase of T steps (`free_phase`, which synchronises for its residual), its first
    call (compilation) apart: `info` = {free_first_seconds}."""
    net = backend.build(spec.model, **like)
    params = net.load(params_np)
    T = spec.dynamics.T

    def run(n: int) -> float:
        net.synchronize()
        start = time.perf_counter()
        for _ in range(n):
            net.free_phase(params, x, steps=T)
        return time.perf_counter() - start

    compiled = run(1)
    return Timed(run=run, first=run(1), info={"free_first_seconds": compiled})


def time_rounds(
    timed: dict[str, Timed], *, repeats: int
) -> tuple[dict[str, list[float]], dict[str, int]]:
    """Seconds per call of each timed thing — its `first`, then one value per round — and how many
    calls were timed. A round runs every thing once in turn (n calls each, n from
    `calls_per_round`), so each round sees the machine in one state for all of them: a shared
    machine's speed drifts (by up to 2× within an hour on a small cloud machine), and ratios of
    things timed minutes apart drift with it. REPEATS − 1 rounds (more with --repeat), fewer past
    BUDGET_SECONDS per thing (at least one)."""
    counts = {name: calls_per_round(t.first) for name, t in timed.items()}
    rounds = max(1, repeats - 1)
    one_round = sum(counts[name] * t.first for name, t in timed.items())
    while rounds > 1 and rounds * one_round > BUDGET_SECONDS * len(timed):
        rounds -= 1
    per_call = {name: [t.first] for name, t in timed.items()}
    for _ in range(rounds):
        for name, t in timed.items():
            per_call[name].append(t.run(counts[name]) / counts[name])
    return per_call, {name: 1 + rounds * n for name, n in counts.items()}


def step_summary(per_step: list[float], *, batch: int, calls: int) -> dict[str, Any]:
    """Median, best and all per-step seconds of one algorithm (module doc)."""
    step_seconds = statistics.median(per_step)
    return {
        "samples_per_s": batch / step_seconds,
        "step_seconds": step_seconds,
        "step_seconds_best": min(per_step),
        "step_seconds_all": per_step,
        "steps_timed": calls,
    }


def phases(algorithm: str, step: float, free: float, *, T: int, K: int) -> dict[str, float]:
    """The phase breakdown of one step (module doc) from a step and a free phase timed together."""
    if algorithm == "bptt":
        early = free * (T - K) / T
        return {
            "free": early,
            "recorded_backward": max(step - early, 0.0),
            "backward": max(step - free, 0.0),
        }
    return {"free": free, "nudged": max(step - free, 0.0)}


def paired_phases(
    algorithm: str, steps: list[float], frees: list[float], *, T: int, K: int
) -> dict[str, float]:
    """`phases` of each round (step and free phase timed in the same round), then the median."""
    rounds = [phases(algorithm, s, f, T=T, K=K) for s, f in zip(steps, frees, strict=True)]
    return {key: statistics.median(r[key] for r in rounds) for key in rounds[0]}


def _time_cell(
    backend: Backend,
    spec: TaskSpec,
    params_np: dict,
    x: np.ndarray,
    y: np.ndarray,
    *,
    counts: dict[str, Counter],
    dtype: str,
    device: str,
    repeats: int,
    pairs: int,
) -> dict[str, Any]:
    """The timed part of a speed cell: the ops alone before, the free phase and ALGORITHMS in
    interleaved rounds, the reference re-creation where there is one, the ops alone after."""
    every: Counter = sum(counts.values(), Counter())
    before = measure_ops(backend, every, dtype=dtype, device=device)
    like = {"dtype": dtype, "device": device}
    timed = {"free": prepare_free_phase(backend, spec, params_np, x, **like)}
    for algorithm in algorithms_of(spec):
        timed[algorithm] = prepare_algorithm(
            backend, spec, params_np, x, y, algorithm=algorithm, **like
        )
    per_call, calls = time_rounds(timed, repeats=repeats)
    reference = reference_of(backend, spec, dtype=dtype, device=device)
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
            device=device,
            pairs=pairs,
        )
    after = measure_ops(backend, every, dtype=dtype, device=device)
    return {
        "per_call": per_call,
        "calls": calls,
        "info": {k: t.info for k, t in timed.items()},
        "against": against,
        "measured": fastest(before, after),
    }


def run(cell: Cell, backend: Backend, batch: tuple, output: Output) -> dict[str, Any]:
    """Measure one speed cell on one backend: the record's fields — `metrics["speed"][algorithm]`
    for each of ALGORITHMS (module doc), `metrics["phases"]` (the free phase alone),
    `metrics["throughput"]` (the ops timed alone), `metrics["reference"]` where the backend
    re-creates the paper's implementation."""
    spec, dtype = cell.spec, cell.dtype
    x, y = (np.asarray(a, dtype=dtype) for a in batch)
    params_np = init_params(spec.model, seed=cell.seed, dtype=dtype)
    T, K, B = spec.dynamics.T, spec.dynamics.K, x.shape[0]
    repeats = max(REPEATS, cell.repeat)
    started = time.perf_counter()
    counts = {a: training_ops(spec.model, batch=B, T=T, K=K, algorithm=a) for a in ALGORITHMS}
    got = _time_cell(
        backend,
        spec,
        params_np,
        x,
        y,
        counts=counts,
        dtype=dtype,
        device=cell.device,
        repeats=repeats,
        pairs=max(PAIRS, cell.repeat),
    )
    per_call, measured = got["per_call"], got["measured"]
    free = {"free_seconds": statistics.median(per_call["free"]), **got["info"]["free"]}
    results = {}
    for algorithm in algorithms_of(spec):
        result = {
            **step_summary(per_call[algorithm], batch=B, calls=got["calls"][algorithm]),
            **got["info"][algorithm],
        }
        if algorithm == HOLOMORPHIC:
            results[algorithm] = {**result, **_uncounted(algorithm, per_call, T=T, K=K)}
            continue
        step = result["step_seconds"]
        bound = flop_bound_seconds(counts[algorithm], measured)
        flops = total_flops(counts[algorithm])
        by_phase = phase_ops(spec.model, batch=B, T=T, K=K, algorithm=algorithm)
        results[algorithm] = {
            **result,
            # paired per round, without the unpaired first calls
            "phases": paired_phases(
                algorithm, per_call[algorithm][1:], per_call["free"][1:], T=T, K=K
            ),
            "flops": flops,
            "flops_by_phase": {name: total_flops(ops) for name, ops in by_phase.items()},
            "achieved_flops_per_s": flops / step,
            "flop_bound_seconds": bound,
            "flop_fraction": bound / step if bound is not None else None,
        }
    metrics: dict[str, Any] = {
        "speed": results,
        "phases": free,
        "throughput": {
            "ops": [{"op": list(op), **values} for op, values in measured.items()],
            "peak_flops_per_s": max(
                (v["flops_per_s"] for v in measured.values() if v["flops_per_s"]), default=None
            ),
        },
    }
    if points_of(spec.dynamics) and HOLOMORPHIC not in results:
        results[HOLOMORPHIC] = {"skipped": estimator_reason(spec.model, spec.dynamics)}
    if got["against"] is not None:
        metrics["reference"] = got["against"]
    peaks = [r["peak_memory_bytes"] for r in results.values() if r.get("peak_memory_bytes")]
    return {
        "metrics": metrics,
        "timings": {"seconds": time.perf_counter() - started, "repeats": repeats},
        "peak_memory_bytes": max(peaks, default=None),
    }


def _uncounted(algorithm: str, per_call: dict[str, list[float]], *, T: int, K: int) -> dict:
    """The phases of a step the FLOP model does not count (holomorphic EP), its FLOP fields None."""
    return {
        "phases": paired_phases(algorithm, per_call[algorithm][1:], per_call["free"][1:], T=T, K=K),
        "flops": None,
        "flops_by_phase": None,
        "achieved_flops_per_s": None,
        "flop_bound_seconds": None,
        "flop_fraction": None,
    }
