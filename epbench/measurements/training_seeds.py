"""The seeds of one `train` cell trained at once, as one batched network (docs/theory.md §5).

What comes in: a backend's `SeedNetwork` (epbench.core.protocols: every parameter, batch, β, loss
and error count with a leading seed axis S), one set of canonical initial parameters per seed,
the dataset, the cell, the seeds, each seed's signed β, one checkpoint file per seed. What goes
out: one result per seed, exactly what `epbench.measurements.training.train_algorithm` returns
for that seed alone — the same curves, checkpoints and summary — plus `seeds_batched` (S) and
`seed_samples_per_s` (the samples of all S seeds per second: the throughput a batched run buys).

Each seed keeps everything it has in a sequential run: its initialisation, its shuffle
(`epoch_order(seed, epoch)`), its random signs (`epoch_betas`), its divergence check (a seed
whose loss turns non-finite is recorded `diverged` at that step and trained no further in the
record; its numbers stay inside the batch, where they touch no other seed), its test error, its
free-phase residual, its checkpoint after every epoch. So `--resume` continues a batched run from
the per-seed checkpoints, batched or not, and a batched run's records equal a sequential run's
up to rounding (tests/test_seed_batching.py). `samples_per_s` of a batched seed is its own
samples over the shared wall-clock; `epoch_seconds` is the wall-clock of the whole batch.
"""

from __future__ import annotations

import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from epbench.core.liveness import exit_if_orphaned
from epbench.core.params import feedback_angles_deg
from epbench.core.process_memory import reset_peak_memory
from epbench.core.protocols import SeedNetwork
from epbench.core.spec import TaskSpec
from epbench.measurements.training import (
    ANGLE_CURVE,
    CHECK_EVERY,
    LINE_SECONDS,
    NORM_CURVE,
    RESIDUAL_IMAGES,
    TrainingData,
    _divergence,
    _Run,
    _save,
    _step_function,
    _summary,
    epoch_betas,
    epoch_order,
)


@dataclass(frozen=True, kw_only=True)
class SeedRuns:
    """The per-seed side of a batched run: each seed's state, checkpoint and checkpoint identity."""

    seeds: tuple[int, ...]
    runs: list[_Run]
    checkpoints: list[Path]
    identities: list[dict[str, Any]]


def train_seeds(
    net: SeedNetwork,
    state: SeedRuns,
    data: TrainingData,
    *,
    spec: TaskSpec,
    algorithm: str,
    betas: list[float],
    symmetric: bool,
    progress: str | None = None,
    label: str = "",
) -> list[dict[str, Any]]:
    """Train `algorithm` for every seed of `state` from its run's epoch (all equal) to
    `train.epochs` as one batched network, writing each seed's checkpoint after every epoch.
    `betas`: each seed's signed β (`epbench.core.estimators.signed_beta`). Returns one summary
    per seed (module doc)."""
    B, epochs = spec.data.batch, spec.train.epochs
    steps_per_epoch = len(data.x) // B
    start_epoch = state.runs[0].done
    reset_peak_memory()
    step = _step_function(net, spec, algorithm=algorithm, symmetric=symmetric)
    warm = _warm_up(net, step, state, data, spec=spec, betas=betas)
    for run in state.runs:
        run.compile_seconds = warm if run.compile_seconds is None else run.compile_seconds
    params = net.load([run.params for run in state.runs])
    for epoch in range(start_epoch + 1, epochs + 1):
        active = [run.diverged is None for run in state.runs]
        if not any(active):
            break
        orders = [epoch_order(len(data.x), batch=B, seed=s, epoch=epoch) for s in state.seeds]
        signs = [
            epoch_betas(
                b, estimator=spec.dynamics.estimator, seed=s, epoch=epoch, steps=len(orders[0])
            )
            for b, s in zip(betas, state.seeds, strict=True)
        ]
        title = f"{label} {algorithm} epoch {epoch}/{epochs}".strip()
        params, sums, bad, seconds = _epoch(
            net, step, params, data, orders=orders, betas=signs, title=title, progress=progress
        )
        now = net.dump(params)
        done = {"sums": sums, "bad": bad, "seconds": seconds, "steps": len(orders[0])}
        _finish_epoch(net, params, state, data, now, spec=spec, epoch=epoch, active=active, **done)
        if progress is not None:
            _epoch_line(state, title, seconds=seconds, samples=len(orders[0]) * B)
    summaries = []
    for run in state.runs:
        summary = _summary(run, steps_per_epoch=steps_per_epoch, batch=B, resumed_from=start_epoch)
        speed = summary["samples_per_s"]
        summary["seeds_batched"] = len(state.seeds)
        summary["seed_samples_per_s"] = None if speed is None else speed * len(state.seeds)
        summaries.append(summary)
    return summaries


def _warm_up(
    net: SeedNetwork, step, state: SeedRuns, data: TrainingData, *, spec: TaskSpec, betas
) -> float:
    """Seconds of a throw-away first batched step and first test predictions (where JIT
    compilation happens), on copies of the weights."""
    B, T, test_batch = spec.data.batch, spec.dynamics.T, spec.train.test_batch
    S = len(state.seeds)
    start = time.perf_counter()
    x = np.broadcast_to(data.x[:B], (S, *data.x[:B].shape))
    y = np.broadcast_to(data.y[:B], (S, *data.y[:B].shape))
    scratch, loss, _ = step(net.load([run.params for run in state.runs]), x, y, np.array(betas))
    np.asarray(loss)
    for size in sorted({min(test_batch, len(data.x_test)), len(data.x_test) % test_batch}):
        if size:
            net.predict(scratch, data.x_test[:size], steps=T)
    net.residuals(scratch, data.x_test[:RESIDUAL_IMAGES], steps=T)
    net.synchronize()
    return time.perf_counter() - start


def _epoch(
    net: SeedNetwork,
    step,
    params: Any,
    data: TrainingData,
    *,
    orders: list[list[np.ndarray]],
    betas: list[list[float]],
    title: str,
    progress: str | None,
) -> tuple[Any, dict[str, np.ndarray], list[int | None], float]:
    """One epoch of batched steps: seed i takes its mini-batches `orders[i]` and signs
    `betas[i]`. Returns (params, {"loss", "errors"} summed per seed, per seed the 1-based step of
    its first non-finite loss or None, seconds). Losses are read every CHECK_EVERY steps."""
    steps, B, S = len(orders[0]), len(orders[0][0]), len(orders)
    rows = np.stack([np.stack(order) for order in orders], axis=1)  # (steps, S, B)
    beta = np.asarray(betas, dtype=np.float64).T  # (steps, S)
    bar = tqdm(total=steps * B * S, desc=title, unit="img", disable=progress != "bar",
               leave=False, file=sys.stderr, dynamic_ncols=True)  # fmt: skip
    loss_sum = errors_sum = None
    window: list[Any] = []
    bad: list[int | None] = [None] * S
    net.synchronize()
    start = last_line = time.perf_counter()
    for i in range(1, steps + 1):
        params, loss, errors = step(params, data.x[rows[i - 1]], data.y[rows[i - 1]], beta[i - 1])
        loss_sum = loss if loss_sum is None else loss_sum + loss
        errors_sum = errors if errors_sum is None else errors_sum + errors
        window.append(loss)
        if i % CHECK_EVERY == 0 or i == steps:
            _check_window(window, bad, first=i - len(window) + 1)
            bar.update(len(window) * B * S)
            window.clear()
            now = time.perf_counter()
            if progress == "lines" and now - last_line >= LINE_SECONDS:
                last_line = now
                speed = i * B * S / (now - start)
                print(f"{title}: {i * B:,}/{steps * B:,} img × {S} seeds, {speed:,.0f} img/s",
                      file=sys.stderr, flush=True)  # fmt: skip
    net.synchronize()
    seconds = time.perf_counter() - start
    bar.close()
    sums = {"loss": np.asarray(loss_sum, np.float64), "errors": np.asarray(errors_sum)}
    return params, sums, bad, seconds


def _check_window(window: list[Any], bad: list[int | None], *, first: int) -> None:
    """Record in `bad` the 1-based step of each seed's first non-finite loss in `window` (the
    losses of steps `first`, `first + 1`, …), for seeds that have none yet."""
    losses = np.asarray([np.asarray(v, np.float64) for v in window])  # (len(window), S)
    for seed, column in enumerate(losses.T):
        if bad[seed] is None and not np.all(np.isfinite(column)):
            bad[seed] = first + int(np.argmin(np.isfinite(column)))


def _finish_epoch(
    net: SeedNetwork,
    params: Any,
    state: SeedRuns,
    data: TrainingData,
    now: list[dict[str, np.ndarray]],
    *,
    spec: TaskSpec,
    epoch: int,
    active: list[bool],
    sums: dict[str, np.ndarray],
    bad: list[int | None],
    seconds: float,
    steps: int,
) -> None:
    """Each active seed's epoch as `training._record_epoch` records it (or its divergence), then
    its checkpoint."""
    B, T = spec.data.batch, spec.dynamics.T
    start = time.perf_counter()
    errors = _test_errors(net, params, data, steps=T, batch=spec.train.test_batch)
    test_seconds = time.perf_counter() - start
    x = data.x_test[:RESIDUAL_IMAGES]
    residuals = net.residuals(params, x, steps=T) / math.sqrt(len(x))
    for i, run in enumerate(state.runs):
        if not active[i]:
            continue
        run.diverged = _divergence(bad[i], now[i], epoch=epoch, steps=steps)
        if run.diverged is None:
            curves = run.curves
            curves["test_seconds"].append(test_seconds)
            curves["train_error"].append(100.0 * int(sums["errors"][i]) / (steps * B))
            curves["test_error"].append(float(errors[i]))
            curves["loss"].append(float(sums["loss"][i]) / steps)
            curves["epoch_seconds"].append(seconds)
            for name, angle in feedback_angles_deg(now[i]).items():
                curves[f"{ANGLE_CURVE}.{name}"].append(angle)
            with np.errstate(over="ignore"):
                for name, value in now[i].items():
                    curves[f"{NORM_CURVE}.{name}"].append(float(np.linalg.norm(value)))
            curves["free_residual"].append(float(residuals[i]))
            run.done = epoch
        exit_if_orphaned()  # a worker whose coordinator is gone writes nothing more
        _save(state.checkpoints[i], run, now[i], spec=spec, identity=state.identities[i])


def _test_errors(
    net: SeedNetwork, params: Any, data: TrainingData, *, steps: int, batch: int
) -> np.ndarray:
    """Every seed's test error in percent (`training.evaluate` for all seeds at once)."""
    wrong, m = 0, len(data.x_test)
    for start in range(0, m, batch):
        predicted = net.predict(params, data.x_test[start : start + batch], steps=steps)
        wrong = wrong + np.count_nonzero(predicted != data.labels_test[start : start + batch], 1)
    return 100.0 * np.asarray(wrong) / m


def _epoch_line(state: SeedRuns, title: str, *, seconds: float, samples: int) -> None:
    """The end-of-epoch progress line: each seed's errors and the batch's speed."""
    parts = [
        f"seed {seed} train {run.curves['train_error'][-1]:.2f} % "
        f"test {run.curves['test_error'][-1]:.2f} %"
        if run.diverged is None
        else f"seed {seed} diverged"
        for seed, run in zip(state.seeds, state.runs, strict=True)
    ]
    speed = samples * len(state.seeds) / seconds
    tqdm.write(f"{title}: {'; '.join(parts)}; {speed:,.0f} img/s", file=sys.stderr)
