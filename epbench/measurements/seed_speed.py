"""The `seed-speed` measurement: what training several seeds as one batched network buys.

What comes in: a resolved `Cell` (a model of tasks/seed-speed.toml at its training settings), its
backend and mini-batch (`inputs = "batch"`). What goes out: `metrics["seeds"][algorithm]` for
`ep` (the cell's estimator) and `bptt`: per seed count S of `SEED_COUNTS` the seconds of one
training step of all S seeds, and `seed_samples_per_s` = S · B / step seconds — the samples of all
seeds per second, the throughput per seed-sample that decides how long a multi-seed Table 1 takes
— and `gain`, that throughput over the one at S = 1, measured in the same run.

S = 1 is the backend's ordinary `Network` (how seeds run one after the other); S ≥ 2 its
`SeedNetwork` (`epbench.core.protocols.SeedBatchingBackend`). A backend without the capability,
or one that does not batch this model, gets a record with the reason (`batched: false`) and only
S = 1. Timing: after two warm-up steps per S (compilation), rounds over every S in turn — so that
a load which comes and goes on a shared machine touches all alike — each timing at least
`MIN_SECONDS` of steps, device synchronised; the median of `ROUNDS` rounds.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from epbench.core.estimators import signed_beta
from epbench.core.measurement import Cell, Output
from epbench.core.params import init_params
from epbench.core.protocols import Backend, SeedBatchingBackend
from epbench.measurements.training import _step_function

SEED_COUNTS = (1, 2, 5, 10)
ROUNDS = 3
MIN_SECONDS = 0.5  # steps timed per round and S, at least
ALGORITHMS = ("ep", "bptt")


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


def run(cell: Cell, backend: Backend, batch: Any, output: Output) -> dict[str, Any]:
    """Time one training step of 1, 2, 5 and 10 seeds, EP and BPTT (module doc)."""
    B = cell.spec.data.batch
    setups = {S: _steppers(cell, backend, batch, S) for S in SEED_COUNTS}
    counts = [S for S, setup in setups.items() if setup is not None]
    metrics: dict[str, Any] = {}
    for algorithm in ALGORITHMS:
        timers = {S: _timer(cell, setups[S], algorithm) for S in counts}
        seconds: dict[int, list[float]] = {S: [] for S in counts}
        for _ in range(ROUNDS):
            for S in counts:
                seconds[S].append(timers[S]())
        step = {S: statistics.median(v) for S, v in seconds.items()}
        base = B / step[1]
        metrics[algorithm] = {
            str(S): {
                "step_seconds": step[S],
                "seed_samples_per_s": S * B / step[S],
                "gain": S * B / step[S] / base,
                "rounds": seconds[S],
            }
            for S in counts
        }
    part: dict[str, Any] = {"metrics": {"seeds": metrics}, "batched": len(counts) > 1}
    if len(counts) == 1:
        part["reason"] = f"{backend.name} does not batch seeds of this model: S = 1 only"
    return part
