"""The `seed-speed` measurement: what training several seeds as one batched network buys.

What comes in: a resolved `Cell` (a model of tasks/seed-speed.toml at its training settings), its
backend and mini-batch (`inputs = "batch"`). What goes out: `metrics["seeds"][algorithm]` for
`ep` (the cell's estimator) and `bptt`: per seed count S of `SEED_COUNTS` the seconds of one
training step of all S seeds, and `seed_samples_per_s` = S · B / step seconds — the samples of all
seeds per second, the throughput per seed-sample that decides how long a multi-seed Table 1 takes
— and `gain`, that throughput over the one at S = 1, measured in the same run.

Why the gain is what it is, from the same timings: a straight line through the step seconds over
S (least squares) splits a step into a fixed part, paid once whatever S (dispatch, loop overhead,
the device waiting), and a part per seed; `gain_limit` = (fixed + per seed) / per seed is the gain
as S grows without bound while the cost stays linear — what batching can amortise at most. Beside
it, the arithmetic: `flops_per_step` (one seed's step, the FLOP model of epbench.core.flops), the
rate `flops_per_s` each S reaches, and `machine_flops_per_s`, the rate of one large GEMM
(`REFERENCE_GEMM`, the faster of the backend and numpy: epbench.measurements.peak). A step with a
small fixed part and a low rate is held back by products too narrow to run fast (the 10 output
units), which S seeds do not widen: each seed has its own weights.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from epbench.core.estimators import signed_beta
from epbench.core.flops import total_flops, training_ops
from epbench.core.measurement import Cell, Output
from epbench.core.params import init_params
from epbench.core.protocols import Backend, SeedBatchingBackend
from epbench.measurements.peak import measure_ops
from epbench.measurements.training import _step_function

SEED_COUNTS = (1, 2, 5, 10)
ROUNDS = 3
MIN_SECONDS = 0.5  # steps timed per round and S, at least
ALGORITHMS = ("ep", "bptt")
REFERENCE_GEMM = ("gemm", 2048, 2048, 2048)  # large enough to run at a machine's dense rate


def _steppers(cell: Cell, backend: Backend, batch: tuple[np.ndarray, np.ndarray], S: int):
    """(step function, params, x, y, β) for `S` seeds of the cell, or None when S ≥ 2 and the
    backend does not batch seeds of this model."""
    spec, (x, y) = cell.spec, batch
    if S == 1:
        net = backend.build(spec.model, dtype=cell.dtype, device=cell.device)
        params = net.load(init_params(spec.model, seed=0, dtype=cell.dtype))
        beta, symmetric = signed_beta(spec.dynamics, seed=0)
        return net, params, x, y, beta, symmetric
    if not isinstance(backend, SeedBatchingBackend):
        return None
    net = backend.build_seeds(spec.model, dtype=cell.dtype, device=cell.device, seeds=S)
    if net is None:
        return None
    params = net.load([init_params(spec.model, seed=s, dtype=cell.dtype) for s in range(S)])
    signed = [signed_beta(spec.dynamics, seed=s) for s in range(S)]
    xs, ys = np.broadcast_to(x, (S, *x.shape)), np.broadcast_to(y, (S, *y.shape))
    return net, params, xs, ys, np.array([b for b, _ in signed]), signed[0][1]


def _timer(cell: Cell, setup: tuple, algorithm: str) -> Callable[[], float]:
    """A function that times training steps of `setup` for at least MIN_SECONDS and returns
    the seconds per step; two warm-up steps run first."""
    net, params, x, y, beta, symmetric = setup
    step = _step_function(net, cell.spec, algorithm=algorithm, symmetric=symmetric)
    state = {"params": params}

    def one() -> None:
        state["params"] = step(state["params"], x, y, beta)[0]

    for _ in range(2):
        one()
    net.synchronize()

    def timed() -> float:
        steps, start = 0, time.perf_counter()
        while True:
            one()
            steps += 1
            if steps >= 3 and steps % 3 == 0:
                net.synchronize()
                elapsed = time.perf_counter() - start
                if elapsed >= MIN_SECONDS:
                    return elapsed / steps

    return timed


def step_flops(cell: Cell, algorithm: str, *, symmetric: bool) -> int:
    """FLOPs of one seed's training step of `algorithm` (epbench.core.flops): the symmetric
    estimator's two nudged phases counted as such."""
    spec = cell.spec
    kind = "bptt" if algorithm == "bptt" else ("ep_symmetric" if symmetric else "ep")
    ops = training_ops(
        spec.model, batch=spec.data.batch, T=spec.dynamics.T, K=spec.dynamics.K, algorithm=kind
    )
    return total_flops(ops)


def linear_cost(step_seconds: dict[int, float]) -> dict[str, float | None]:
    """Least-squares line step seconds = fixed + S · per seed through the medians of each S, and
    `gain_limit` = (fixed + per seed) / per seed (module doc); None with fewer than two S, a
    per-seed part that is not positive (a cost that does not grow with S), or no fixed part (a
    line through or below the origin: the cost per seed grows with S, nothing to amortise)."""
    if len(step_seconds) < 2:
        return {"fixed_seconds": None, "seconds_per_seed": None, "gain_limit": None}
    counts = np.array(sorted(step_seconds), dtype=float)
    per_seed, fixed = np.polyfit(counts, [step_seconds[int(S)] for S in counts], 1)
    grows = per_seed > 1e-9 * max(step_seconds.values())  # not a flat line's rounding
    limit = (fixed + per_seed) / per_seed if grows and fixed > 0 else None
    return {
        "fixed_seconds": float(fixed),
        "seconds_per_seed": float(per_seed),
        "gain_limit": None if limit is None else float(limit),
    }


def machine_rate(cell: Cell, backend: Backend) -> dict[str, Any]:
    """FLOP/s of `REFERENCE_GEMM` on the cell's device and dtype (the faster of the backend and
    numpy, epbench.measurements.peak) and who reached it."""
    ops = measure_ops(backend, [REFERENCE_GEMM], dtype=cell.dtype, device=cell.device)
    measured = ops[REFERENCE_GEMM]
    return {
        "flops_per_s": measured["flops_per_s"],
        "source": measured["source"],
        "op": list(REFERENCE_GEMM),
    }


def run(cell: Cell, backend: Backend, batch: Any, output: Output) -> dict[str, Any]:
    """Time one training step of 1, 2, 5 and 10 seeds, EP and BPTT, and the machine's GEMM rate
    before and after (the faster counts: a slow spell of a shared machine lowers neither)
    (module doc)."""
    B = cell.spec.data.batch
    setups = {S: _steppers(cell, backend, batch, S) for S in SEED_COUNTS}
    counts = [S for S, setup in setups.items() if setup is not None]
    symmetric = setups[1][5]
    before = machine_rate(cell, backend)
    metrics: dict[str, Any] = {}
    for algorithm in ALGORITHMS:
        timers = {S: _timer(cell, setups[S], algorithm) for S in counts}
        seconds: dict[int, list[float]] = {S: [] for S in counts}
        for _ in range(ROUNDS):
            for S in counts:
                seconds[S].append(timers[S]())
        step = {S: statistics.median(v) for S, v in seconds.items()}
        base = B / step[1]
        flops = step_flops(cell, algorithm, symmetric=symmetric)
        metrics[algorithm] = {
            "flops_per_step": flops,
            **{
                str(S): {
                    "step_seconds": step[S],
                    "seed_samples_per_s": S * B / step[S],
                    "gain": S * B / step[S] / base,
                    "flops_per_s": S * flops / step[S],
                    "rounds": seconds[S],
                }
                for S in counts
            },
        }
    after = machine_rate(cell, backend)
    machine = max(before, after, key=lambda m: m["flops_per_s"] or 0.0)
    for block in metrics.values():
        block.update(linear_cost({S: block[str(S)]["step_seconds"] for S in counts}))
    part: dict[str, Any] = {
        "metrics": {"seeds": metrics, "machine": machine},
        "batched": len(counts) > 1,
    }
    if len(counts) == 1:
        part["reason"] = f"{backend.name} does not batch seeds of this model: S = 1 only"
    return part
