"""The `train` measurement (PAPER.md §5, Table 1): EP and BPTT trained from identical weights.

For one cell, backend, dtype and seed, each algorithm (`ep`, `bptt`) starts from the canonical
initial parameters `init_params(model, seed=seed)` and runs plain SGD (no momentum) with the
per-layer learning rates `train.lrs` (output layer first, `epbench.core.params.learning_rates`) through
the backend's own steps:

    ep     Network.ep_step:   θ ← θ + lr · (∂Φ/∂θ(s^β_K) − ∂Φ/∂θ(s_*)) / β_eff   (PAPER.md §2)
    bptt   Network.bptt_step: θ ← θ − lr · ∂L/∂θ, BPTT truncated to the last K of T steps

Both see the same mini-batches in the same order: epoch e shuffles with a generator derived from
(seed, e) (`epoch_order`), so a run resumed at an epoch boundary continues exactly. The random-sign
estimator draws the sign of β per batch from (seed, e) too (`epoch_betas`); the other estimators
use `runner.nudge` semantics (a fixed ±β, or the symmetric ±β pair).

Per epoch the record gets the online train error (the errors the step reports at the free fixed
point, before that step's update, as the paper counts them), the test error of the free phase
(`predict` after T steps, in test batches of `train.test_batch`), the mean loss, the training
wall-clock (device synchronised before each clock read; the test evaluation is timed apart), and
the run gets samples/s, the process's peak memory and the warm-up time (building the network, the
first training step and the first test predictions on a throw-away copy of the weights, which is
where JIT compilation happens). Losses and errors are summed as backend 0-d arrays and read once
every `CHECK_EVERY` steps (the divergence check, one device sync) and at the end of the epoch.

Asymmetric models (`model.feedback_angle`): `train.feedback = "frozen"` gives the feedback
weights `B{n+1}_{n}` the learning rate 0 in both algorithms (`params.learning_rates`), and every
epoch records the angle between each B and its Wᵀ (degrees) as the curve
`feedback_angle_deg.B{n+1}_{n}`, so the weights' trajectory is visible.

A non-finite loss (which NaN states or parameters produce at the next step) or non-finite
parameters at the end of an epoch stop that algorithm's run: status `diverged`, with the epoch and
the step (1-based in the epoch) of the first non-finite loss, found when the check after at most
`CHECK_EVERY` steps fails. After every epoch a checkpoint
is written (epbench.core.checkpoint).

Progress (`progress`): "bar" draws a tqdm bar per epoch on stderr (a terminal); "lines" writes
plain lines instead (a log file: a cluster job, `nohup`, CI), one at most every `LINE_SECONDS`
within an epoch; both end each epoch with a line of its errors and speed. None: silent.
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

from epbench.config import datasets
from epbench.config.tasks import config_hash
from epbench.core.checkpoint import load_checkpoint, save_checkpoint
from epbench.core.errors import ResultsError, TaskError
from epbench.core.params import feedback_angles_deg, feedback_names, learning_rates
from epbench.core.process_memory import peak_memory_bytes, reset_peak_memory
from epbench.core.protocols import Backend, Network
from epbench.core.spec import TaskSpec

ALGORITHMS = ("ep", "bptt")
CURVES = ("train_error", "test_error", "loss", "epoch_seconds", "test_seconds")
SHUFFLE_STREAM, NUDGE_STREAM = 1, 2  # second entry of the generator seeds [seed, stream, epoch]
STREAMS = {"shuffle": SHUFFLE_STREAM, "nudge": NUDGE_STREAM}
ANGLE_CURVE = "feedback_angle_deg"  # per-epoch curve prefix of asymmetric models
CHECK_EVERY = 50  # training steps between divergence checks (one device sync each)
PROGRESS = ("bar", "lines")  # a tqdm bar (a terminal) or plain lines (a log file)
LINE_SECONDS = 60.0  # "lines" progress: at most one line per this many seconds within an epoch


@dataclass(frozen=True, kw_only=True)
class TrainingData:
    """One dataset in memory: training inputs and one-hot targets, test inputs and labels."""

    x: np.ndarray  # (n, inputs), pixels in [0, 1]
    y: np.ndarray  # (n, outputs) one-hot
    x_test: np.ndarray  # (m, inputs)
    labels_test: np.ndarray  # (m,) int64


def load_training_data(spec: TaskSpec, *, dtype: str, data_dir: Path | None) -> TrainingData:
    """The training split of `data.source` (its first `data.subset` images when > 0) and the whole
    test split, in `dtype`, from `data_dir` / `EPBENCH_DATA` / the cache (epbench.config.datasets)."""
    source = spec.data.source
    if source not in datasets.DATASETS:
        raise TaskError(spec.cell, "data.source", f"one of {', '.join(datasets.DATASETS)}", source)
    x, labels = datasets.load_split(source, "train", data_dir=data_dir, dtype=dtype)
    if spec.data.subset:
        x, labels = x[: spec.data.subset], labels[: spec.data.subset]
    x_test, labels_test = datasets.load_split(source, "test", data_dir=data_dir, dtype=dtype)
    y = datasets.one_hot(labels, classes=spec.model.outputs, dtype=dtype)
    return TrainingData(x=x, y=y, x_test=x_test, labels_test=labels_test)


def run_key(spec: TaskSpec) -> str:
    """Hash of the resolved configuration without `train.epochs`: a run extended to more epochs
    keeps its key, so its checkpoints are found by `--resume`."""
    config = {k: v for k, v in spec.config.items() if k != "train"}
    config["train"] = {k: v for k, v in spec.config.get("train", {}).items() if k != "epochs"}
    return config_hash(config)


def epoch_order(n: int, *, batch: int, seed: int, epoch: int) -> list[np.ndarray]:
    """The mini-batch index arrays of epoch `epoch` (1-based): one permutation drawn from
    `default_rng([seed, SHUFFLE_STREAM, epoch])`, the partial last batch dropped
    (data.epoch_batches)."""
    rng = np.random.default_rng([seed, SHUFFLE_STREAM, epoch])
    return datasets.epoch_batches(n, batch=batch, rng=rng)


def epoch_betas(beta: float, *, estimator: str, seed: int, epoch: int, steps: int) -> list[float]:
    """β of each training step of an epoch. `beta` is `runner.nudge`'s signed β; random-sign draws
    the sign per batch, from `default_rng([seed, NUDGE_STREAM, epoch])` (PAPER.md §7)."""
    if estimator != "random-sign":
        return [float(beta)] * steps
    draws = np.random.default_rng([seed, NUDGE_STREAM, epoch]).random(steps)
    return [abs(beta) if u < 0.5 else -abs(beta) for u in draws]


def evaluate(net: Network, params: Any, data: TrainingData, *, steps: int, batch: int) -> float:
    """Test error in percent: argmax of s⁰ after `steps` free steps (`predict`), test batches of
    `batch` (the last one may be smaller)."""
    wrong, m = 0, len(data.x_test)
    for start in range(0, m, batch):
        predicted = net.predict(params, data.x_test[start : start + batch], steps=steps)
        wrong += int(np.count_nonzero(predicted != data.labels_test[start : start + batch]))
    return 100.0 * wrong / m


def _finite_params(params: dict[str, np.ndarray]) -> bool:
    return all(bool(np.all(np.isfinite(v))) for v in params.values())


def train_algorithm(
    backend: Backend,
    initial: dict[str, np.ndarray],
    data: TrainingData,
    *,
    spec: TaskSpec,
    algorithm: str,
    dtype: str,
    device: str,
    seed: int,
    beta: float,
    symmetric: bool,
    checkpoint: Path,
    resume: bool = False,
    progress: str | None = None,
    label: str = "",
) -> dict[str, Any]:
    """Train one algorithm ("ep" or "bptt") for `train.epochs` epochs and return its metrics.

    In: the backend, the canonical initial parameters (numpy), the dataset, the cell, the seed and
    the nudge (`runner.nudge`), the checkpoint file; with `resume`, an existing checkpoint of the
    same run is continued (or returned as it is when it is complete or diverged); `progress`
    None, "bar" or "lines" (module doc), each line starting with `label`.
    Out: a JSON-ready dict: `status` ("ok" | "diverged"), `diverged` (None or epoch, step, what),
    the per-epoch lists of `CURVES`, `samples_per_s`, `peak_memory_bytes`, `compile_seconds`,
    `steps_per_epoch`, `epochs_done`, `resumed_from`. Backend exceptions propagate.
    """
    if progress is not None and progress not in PROGRESS:
        raise ValueError(f"progress: expected None or one of {PROGRESS}, found {progress!r}")
    T, K, B = spec.dynamics.T, spec.dynamics.K, spec.data.batch
    epochs, test_batch = spec.train.epochs, spec.train.test_batch
    lrs = learning_rates(spec.model, spec.train.lrs, feedback=spec.train.feedback)
    steps_per_epoch = len(data.x) // B
    key = run_key(spec)
    curves: dict[str, list[float]] = {name: [] for name in CURVES}
    curves.update({f"{ANGLE_CURVE}.{name}": [] for name in feedback_names(spec.model)})
    params_np, done, diverged, compile_seconds = initial, 0, None, None
    saved = load_checkpoint(checkpoint) if resume else None
    if saved is not None:
        expected = {"key": key, "algorithm": algorithm, "seed": seed, "steps": steps_per_epoch}
        found = {k: saved.meta.get(k) for k in expected}
        if found != expected:
            raise ResultsError(
                f"{checkpoint}: expected a checkpoint of {expected}, found {found}; "
                "delete it or run without --resume"
            )
        params_np, done, diverged = saved.params, saved.meta["epoch"], saved.meta["diverged"]
        curves.update({name: list(saved.curves.get(name, [])) for name in curves})
        compile_seconds = saved.meta.get("compile_seconds")
        if done > epochs:
            raise ResultsError(
                f"{checkpoint}: expected at most train.epochs = {epochs} epochs, found a "
                f"checkpoint after {done}; delete it or run without --resume"
            )
    resumed_from = done

    def step(params: Any, x: np.ndarray, y: np.ndarray, b: float) -> tuple[Any, Any, Any]:
        if algorithm == "ep":
            return net.ep_step(
                params, x, y, free_steps=T, steps=K, beta=b, lrs=lrs, symmetric=symmetric
            )
        return net.bptt_step(params, x, y, free_steps=T, steps=K, lrs=lrs)

    def save(params: dict[str, np.ndarray]) -> None:
        meta = {
            "key": key,
            "algorithm": algorithm,
            "seed": seed,
            "steps": steps_per_epoch,
            "epoch": done,
            "diverged": diverged,
            "compile_seconds": compile_seconds,
            "rng": {"seed": seed, "next_epoch": done + 1, "streams": STREAMS},
            "cell": spec.cell,
            "config_hash": config_hash(spec.config),
        }
        save_checkpoint(checkpoint, params=params, curves=curves, meta=meta)

    reset_peak_memory()
    if diverged is None and done < epochs:
        # Warm-up on a throw-away copy: build, first step, first predictions (compilation).
        start = time.perf_counter()
        net = backend.build(spec.model, dtype=dtype, device=device)
        scratch, loss, _ = step(net.load(params_np), data.x[:B], data.y[:B], float(beta))
        float(loss)
        for size in sorted({min(test_batch, len(data.x_test)), len(data.x_test) % test_batch}):
            if size:
                net.predict(scratch, data.x_test[:size], steps=T)
        net.synchronize()
        warm = time.perf_counter() - start
        compile_seconds = warm if compile_seconds is None else compile_seconds
        params = net.load(params_np)
    while diverged is None and done < epochs:
        epoch = done + 1
        order = epoch_order(len(data.x), batch=B, seed=seed, epoch=epoch)
        betas = epoch_betas(
            beta, estimator=spec.dynamics.estimator, seed=seed, epoch=epoch, steps=len(order)
        )
        title = f"{label} {algorithm} epoch {epoch}/{epochs}".strip()
        bar = tqdm(
            total=len(order) * B,
            desc=title,
            unit="img",
            disable=progress != "bar",
            leave=False,
            file=sys.stderr,
            dynamic_ncols=True,
        )
        loss_sum = errors_sum = None
        window: list[Any] = []  # the losses since the last check (0-d backend arrays)
        net.synchronize()
        start = last_line = time.perf_counter()
        for i, rows in enumerate(order, 1):
            params, loss, errors = step(params, data.x[rows], data.y[rows], betas[i - 1])
            loss_sum = loss if loss_sum is None else loss_sum + loss
            errors_sum = errors if errors_sum is None else errors_sum + errors
            window.append(loss)
            if i % CHECK_EVERY == 0 or i == len(order):
                value = float(loss_sum)  # one device sync per CHECK_EVERY steps
                bar.update(len(window) * B)
                bar.set_postfix(loss=f"{value / i:.4f}", refresh=False)
                now_s = time.perf_counter()
                if progress == "lines" and now_s - last_line >= LINE_SECONDS:
                    last_line = now_s
                    print(
                        f"{title}: {i * B:,}/{len(order) * B:,} img, "
                        f"{i * B / (now_s - start):,.0f} img/s, loss {value / i:.4f}",
                        file=sys.stderr,
                        flush=True,
                    )
                if not math.isfinite(value):  # the first step whose loss is NaN or inf
                    bad = next(
                        (j for j, v in enumerate(window) if not math.isfinite(float(v))),
                        len(window) - 1,  # only the sum overflowed
                    )
                    at = i - len(window) + bad + 1
                    diverged = {"epoch": epoch, "step": at, "what": "non-finite loss"}
                    break
                window.clear()
        net.synchronize()
        seconds = time.perf_counter() - start
        bar.close()
        now = net.dump(params)
        if diverged is None and not _finite_params(now):
            diverged = {"epoch": epoch, "step": len(order), "what": "non-finite parameters"}
        if diverged is not None:
            save(now)
            break
        start = time.perf_counter()
        test = evaluate(net, params, data, steps=T, batch=test_batch)
        curves["test_seconds"].append(time.perf_counter() - start)
        curves["train_error"].append(100.0 * int(errors_sum) / (len(order) * B))
        curves["test_error"].append(test)
        curves["loss"].append(float(loss_sum) / len(order))
        curves["epoch_seconds"].append(seconds)
        for name, angle in feedback_angles_deg(now).items():
            curves[f"{ANGLE_CURVE}.{name}"].append(angle)
        done = epoch
        save(now)
        if progress is not None:
            train = curves["train_error"][-1]
            tqdm.write(
                f"{title}: train {train:.2f} %, test {test:.2f} %, "
                f"{len(order) * B / seconds:,.0f} img/s",
                file=sys.stderr,
            )
    seconds = sum(curves["epoch_seconds"])
    samples = len(curves["epoch_seconds"]) * steps_per_epoch * B
    return {
        "status": "ok" if diverged is None else "diverged",
        "diverged": diverged,
        **curves,
        "epochs_done": done,
        "steps_per_epoch": steps_per_epoch,
        "samples_per_s": samples / seconds if seconds > 0 else None,
        "peak_memory_bytes": peak_memory_bytes(),
        "compile_seconds": compile_seconds,
        "resumed_from": resumed_from,
    }


def paired_difference(ep: dict[str, Any], bptt: dict[str, Any], key: str) -> float | None:
    """EP − BPTT of the last epoch's `key` (percent points), when both runs completed it."""
    if ep["status"] != "ok" or bptt["status"] != "ok" or not ep[key] or not bptt[key]:
        return None
    return ep[key][-1] - bptt[key][-1]
