"""The `train` measurement (docs/theory.md §5, Table 1): EP and BPTT trained from identical weights.

For one cell, backend, dtype and seed, each algorithm (`ep`, `bptt`) starts from the canonical
initial parameters `init_params(model, seed=seed)` and runs plain SGD (no momentum) with the
per-layer learning rates `train.lrs` (output layer first, `epbench.core.params.learning_rates`)
through the backend's own steps:

    ep     Network.ep_step:   θ ← θ + lr · (∂Φ/∂θ(s^β_K) − ∂Φ/∂θ(s_*)) / β_eff   (docs/theory.md §2)
    bptt   Network.bptt_step: θ ← θ − lr · ∂L/∂θ, BPTT truncated to the last K of T steps

Both see the same mini-batches in the same order: epoch e shuffles with a generator derived from
(seed, e) (`epoch_order`), so a run resumed at an epoch boundary continues exactly. The random-sign
estimator draws the sign of β per batch from (seed, e) too (`epoch_betas`); the other estimators
use `epbench.core.estimators.signed_beta` (a fixed ±β, or the symmetric ±β pair).

Per epoch the record gets the online train error (the errors the step reports at the free fixed
point, before that step's update, as the paper counts them), the test error of the free phase
(`predict` after T steps, in test batches of `train.test_batch`), the mean loss, the training
wall-clock (device synchronised before each clock read; the test evaluation is timed apart), the
Frobenius norm of every parameter (`weight_norm.<name>`) and the free phase's per-example residual
on the first test images (`free_residual`) — what shows a run drifting away from its fixed points
over long training. The run gets samples/s, the process's peak memory and the warm-up time
(building the network, the first training step and the first test predictions on a throw-away
copy of the weights, which is where JIT compilation happens). Losses and errors are summed as
backend 0-d arrays and read once every `CHECK_EVERY` steps (the divergence check, one device
sync) and at the end of the epoch.

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
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from epbench.config import datasets
from epbench.config.tasks import config_hash
from epbench.core.checkpoint import load_checkpoint, save_checkpoint
from epbench.core.errors import DataError, ResultsError, TaskError
from epbench.core.estimators import NUDGE_STREAM, points_of
from epbench.core.liveness import exit_if_orphaned
from epbench.core.params import feedback_angles_deg, feedback_names, learning_rates
from epbench.core.process_memory import peak_memory_bytes, reset_peak_memory
from epbench.core.protocols import Backend, Network
from epbench.core.spec import TaskSpec

ALGORITHMS = ("ep", "bptt")
CURVES = ("train_error", "test_error", "loss", "epoch_seconds", "test_seconds", "free_residual")
SHUFFLE_STREAM = 1  # second entry of the generator seeds [seed, stream, epoch]
STREAMS = {"shuffle": SHUFFLE_STREAM, "nudge": NUDGE_STREAM}
ANGLE_CURVE = "feedback_angle_deg"  # per-epoch curve prefix of asymmetric models
NORM_CURVE = "weight_norm"  # per-epoch curve prefix: the Frobenius norm of each parameter
RESIDUAL_IMAGES = 1000  # test images whose free-phase residual is recorded after each epoch
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
    test split, in `dtype`, from `data_dir` / `EPBENCH_DATA` / the cache
    (epbench.config.datasets)."""
    source = spec.data.source
    if source not in datasets.DATASETS:
        raise TaskError(spec.cell, "data.source", f"one of {', '.join(datasets.DATASETS)}", source)
    x, labels = datasets.load_split(source, "train", data_dir=data_dir, dtype=dtype)
    if spec.data.subset:
        x, labels = x[: spec.data.subset], labels[: spec.data.subset]
    x_test, labels_test = datasets.load_split(source, "test", data_dir=data_dir, dtype=dtype)
    y = datasets.one_hot(labels, classes=spec.model.outputs, dtype=dtype)
    return TrainingData(x=x, y=y, x_test=x_test, labels_test=labels_test)


RUN_KEY_IGNORES = ("epochs", "algorithms")  # `train` fields that do not change one run's course


def run_key(spec: TaskSpec) -> str:
    """Hash of the resolved configuration without the `train` fields of `RUN_KEY_IGNORES`: a run
    extended to more epochs keeps its key, and so does one algorithm's run whether the cell trains
    it alone (`train.algorithms = ["ep"]`) or beside the other (each algorithm has its own
    checkpoint file), so `--resume` finds its checkpoints either way."""
    config = {k: v for k, v in spec.config.items() if k != "train"}
    train = spec.config.get("train", {})
    config["train"] = {k: v for k, v in train.items() if k not in RUN_KEY_IGNORES}
    return config_hash(config)


def epoch_order(n: int, *, batch: int, seed: int, epoch: int) -> list[np.ndarray]:
    """The mini-batch index arrays of epoch `epoch` (1-based): one permutation drawn from
    `default_rng([seed, SHUFFLE_STREAM, epoch])`, the partial last batch dropped
    (data.epoch_batches)."""
    rng = np.random.default_rng([seed, SHUFFLE_STREAM, epoch])
    return datasets.epoch_batches(n, batch=batch, rng=rng)


def epoch_betas(beta: float, *, estimator: str, seed: int, epoch: int, steps: int) -> list[float]:
    """β of each training step of an epoch. `beta` is the signed β of
    `epbench.core.estimators.signed_beta`; random-sign draws
    the sign per batch, from `default_rng([seed, NUDGE_STREAM, epoch])` (docs/theory.md §7)."""
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


@dataclass(kw_only=True)
class _Run:
    """The state of one algorithm's training run: what a checkpoint holds."""

    params: dict[str, np.ndarray]
    curves: dict[str, list[float]]
    done: int = 0
    diverged: dict[str, Any] | None = None
    compile_seconds: float | None = None


def _discarded(checkpoint: Path, reason: str) -> None:
    """Say on stderr, in one line, that `checkpoint` is not resumed and why."""
    reason = " ".join(reason.removeprefix(f"{checkpoint}: ").split())
    for advice in (" (delete it or run without --resume)", "; delete it or run without --resume"):
        reason = reason.replace(advice, "")  # the advice of `load_checkpoint`: not needed here
    print(
        f"epbench: checkpoint {checkpoint} discarded: {reason}; training from scratch",
        file=sys.stderr,
        flush=True,
    )


def _shape_mismatch(saved: dict[str, np.ndarray], initial: dict[str, np.ndarray]) -> str | None:
    """How the parameters of a checkpoint differ in names or shapes from the configuration's
    (`initial`), or None when they agree."""
    if set(saved) != set(initial):
        return f"expected the parameters {sorted(initial)}, found {sorted(saved)}"
    for name, value in initial.items():
        if np.shape(saved[name]) != np.shape(value):
            found = np.shape(saved[name])
            return f"expected {name} of shape {np.shape(value)}, found {found}"
    return None


def _resumed(checkpoint: Path, run: _Run, *, expected: dict[str, Any], epochs: int) -> _Run:
    """`run` continued from `checkpoint` (the same run's, or a ResultsError saying why not).

    A checkpoint that cannot be read (empty, truncated, not a checkpoint: the ResultsError or
    DataError of `load_checkpoint`) or whose parameters do not match the configuration's names
    and shapes (those of `run.params`) is discarded with one line on stderr, and `run` is
    returned as it is: the cell trains from scratch (and overwrites the file after epoch 1)."""
    try:
        saved = load_checkpoint(checkpoint)
    except (ResultsError, DataError) as err:
        _discarded(checkpoint, str(err))
        return run
    except (EOFError, zipfile.BadZipFile) as err:  # what numpy raises for empty or torn files
        _discarded(checkpoint, f"expected an epbench checkpoint, found an unreadable file ({err})")
        return run
    if saved is None:
        return run
    found = {k: saved.meta.get(k) for k in expected}
    if found != expected:
        raise ResultsError(
            f"{checkpoint}: expected a checkpoint of {expected}, found {found}; "
            "delete it or run without --resume"
        )
    if saved.meta["epoch"] > epochs:
        raise ResultsError(
            f"{checkpoint}: expected at most train.epochs = {epochs} epochs, found a "
            f"checkpoint after {saved.meta['epoch']}; delete it or run without --resume"
        )
    mismatch = _shape_mismatch(saved.params, run.params)
    if mismatch is not None:
        _discarded(checkpoint, mismatch)
        return run
    return _Run(
        params=saved.params,
        curves={name: list(saved.curves.get(name, [])) for name in run.curves},
        done=saved.meta["epoch"],
        diverged=saved.meta["diverged"],
        compile_seconds=saved.meta.get("compile_seconds"),
    )


def _warm_up(net: Network, step: Callable, run: _Run, data: TrainingData, **like: Any) -> float:
    """Seconds of a throw-away first step and first test predictions (where JIT compilation
    happens), on a copy of the weights."""
    B, T, test_batch, beta = like["batch"], like["steps"], like["test_batch"], like["beta"]
    start = time.perf_counter()
    scratch, loss, _ = step(net.load(run.params), data.x[:B], data.y[:B], float(beta))
    float(loss)
    for size in sorted({min(test_batch, len(data.x_test)), len(data.x_test) % test_batch}):
        if size:
            net.predict(scratch, data.x_test[:size], steps=T)
    net.synchronize()
    return time.perf_counter() - start


def _epoch(
    net: Network,
    step: Callable,
    params: Any,
    data: TrainingData,
    *,
    order: list[np.ndarray],
    betas: list[float],
    title: str,
    progress: str | None,
) -> tuple[Any, Any, Any, int | None, float]:
    """One epoch of steps over the mini-batches `order`: (params, summed loss, summed errors,
    the 1-based step of the first non-finite loss or None, seconds). The losses are read once
    every CHECK_EVERY steps (one device sync): the divergence check and the progress."""
    B = len(order[0])
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
    bad_step = None
    net.synchronize()
    start = last_line = time.perf_counter()
    for i, rows in enumerate(order, 1):
        params, loss, errors = step(params, data.x[rows], data.y[rows], betas[i - 1])
        loss_sum = loss if loss_sum is None else loss_sum + loss
        errors_sum = errors if errors_sum is None else errors_sum + errors
        window.append(loss)
        if i % CHECK_EVERY == 0 or i == len(order):
            value = float(loss_sum)
            bar.update(len(window) * B)
            bar.set_postfix(loss=f"{value / i:.4f}", refresh=False)
            now = time.perf_counter()
            if progress == "lines" and now - last_line >= LINE_SECONDS:
                last_line = now
                print(
                    f"{title}: {i * B:,}/{len(order) * B:,} img, "
                    f"{i * B / (now - start):,.0f} img/s, loss {value / i:.4f}",
                    file=sys.stderr,
                    flush=True,
                )
            if not math.isfinite(value):  # the first step whose loss is NaN or inf
                bad = next(
                    (j for j, v in enumerate(window) if not math.isfinite(float(v))),
                    len(window) - 1,  # only the sum overflowed
                )
                bad_step = i - len(window) + bad + 1
                break
            window.clear()
    net.synchronize()
    seconds = time.perf_counter() - start
    bar.close()
    return params, loss_sum, errors_sum, bad_step, seconds


def _step_function(net: Network, spec: TaskSpec, *, algorithm: str, symmetric: bool) -> Callable:
    """(params, x, y, β) → (params, loss, errors): one training step of `algorithm` with the
    cell's T, K and learning rates (docs/theory.md §2: EP applies Σ_t ΔEP_θ, BPTT −∂L/∂θ)."""
    T, K = spec.dynamics.T, spec.dynamics.K
    lrs = learning_rates(spec.model, spec.train.lrs, feedback=spec.train.feedback)
    points = points_of(spec.dynamics)  # holomorphic EP (docs/theory.md §2.5); 0 otherwise
    extra = {"points": points} if points else {}

    def step(params: Any, x: np.ndarray, y: np.ndarray, b: float) -> tuple[Any, Any, Any]:
        if algorithm == "ep":
            return net.ep_step(
                params, x, y, free_steps=T, steps=K, beta=b, lrs=lrs, symmetric=symmetric, **extra
            )
        return net.bptt_step(params, x, y, free_steps=T, steps=K, lrs=lrs)

    return step


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
    the nudge (`epbench.core.estimators.signed_beta`), the checkpoint file; with `resume`, an
    existing checkpoint of the same run is continued (or returned as it is when it is complete
    or diverged); `progress` None, "bar" or "lines" (module doc), each line starting with `label`.
    Out: a JSON-ready dict: `status` ("ok" | "diverged"), `diverged` (None or epoch, step, what),
    the per-epoch lists of `CURVES`, `samples_per_s`, `peak_memory_bytes`, `compile_seconds`,
    `steps_per_epoch`, `epochs_done`, `resumed_from`. Backend exceptions propagate.
    """
    if progress is not None and progress not in PROGRESS:
        raise ValueError(f"progress: expected None or one of {PROGRESS}, found {progress!r}")
    T, B, epochs = spec.dynamics.T, spec.data.batch, spec.train.epochs
    steps_per_epoch = len(data.x) // B
    run, expected = start_run(
        spec, initial, algorithm=algorithm, seed=seed, steps_per_epoch=steps_per_epoch,
        checkpoint=checkpoint, resume=resume,
    )  # fmt: skip
    resumed_from = run.done

    def save(params: dict[str, np.ndarray]) -> None:
        exit_if_orphaned()  # a worker whose coordinator is gone writes nothing more
        _save(checkpoint, run, params, spec=spec, identity=expected)

    reset_peak_memory()
    if run.diverged is None and run.done < epochs:
        net = backend.build(spec.model, dtype=dtype, device=device)
        step = _step_function(net, spec, algorithm=algorithm, symmetric=symmetric)
        warm = _warm_up(
            net, step, run, data, batch=B, steps=T, test_batch=spec.train.test_batch, beta=beta
        )
        run.compile_seconds = warm if run.compile_seconds is None else run.compile_seconds
        params = net.load(run.params)
    while run.diverged is None and run.done < epochs:
        epoch = run.done + 1
        order = epoch_order(len(data.x), batch=B, seed=seed, epoch=epoch)
        betas = epoch_betas(
            beta, estimator=spec.dynamics.estimator, seed=seed, epoch=epoch, steps=len(order)
        )
        title = f"{label} {algorithm} epoch {epoch}/{epochs}".strip()
        params, loss_sum, errors_sum, bad_step, seconds = _epoch(
            net, step, params, data, order=order, betas=betas, title=title, progress=progress
        )
        now = net.dump(params)
        run.diverged = _divergence(bad_step, now, epoch=epoch, steps=len(order))
        if run.diverged is not None:
            save(now)
            break
        sums = {"loss": loss_sum, "errors": errors_sum, "seconds": seconds}
        _record_epoch(run.curves, net, params, data, now, spec=spec, order=order, sums=sums)
        run.done = epoch
        save(now)
        if progress is not None:
            train, test = run.curves["train_error"][-1], run.curves["test_error"][-1]
            tqdm.write(
                f"{title}: train {train:.2f} %, test {test:.2f} %, "
                f"{len(order) * B / seconds:,.0f} img/s",
                file=sys.stderr,
            )
    return _summary(run, steps_per_epoch=steps_per_epoch, batch=B, resumed_from=resumed_from)


def start_run(
    spec: TaskSpec,
    initial: dict[str, np.ndarray],
    *,
    algorithm: str,
    seed: int,
    steps_per_epoch: int,
    checkpoint: Path,
    resume: bool,
) -> tuple[_Run, dict[str, Any]]:
    """A run's state before its first epoch: from `initial` with empty curves, or (`resume`)
    continued from `checkpoint` (`_resumed`); and the identity its checkpoints carry (the key
    of `run_key`, the algorithm, the seed, the steps per epoch)."""
    curves: dict[str, list[float]] = {name: [] for name in CURVES}
    curves.update({f"{ANGLE_CURVE}.{name}": [] for name in feedback_names(spec.model)})
    curves.update({f"{NORM_CURVE}.{name}": [] for name in initial})
    run = _Run(params=initial, curves=curves)
    identity = {"key": run_key(spec), "algorithm": algorithm, "seed": seed}
    identity["steps"] = steps_per_epoch
    if resume:
        run = _resumed(checkpoint, run, expected=identity, epochs=spec.train.epochs)
    return run, identity


def _divergence(
    bad_step: int | None, params: dict[str, np.ndarray], *, epoch: int, steps: int
) -> dict[str, Any] | None:
    """How an epoch diverged — a non-finite loss at `bad_step`, or non-finite parameters at its
    end — or None."""
    if bad_step is not None:
        return {"epoch": epoch, "step": bad_step, "what": "non-finite loss"}
    if not _finite_params(params):
        return {"epoch": epoch, "step": steps, "what": "non-finite parameters"}
    return None


def _save(
    checkpoint: Path,
    run: _Run,
    params: dict[str, np.ndarray],
    *,
    spec: TaskSpec,
    identity: dict[str, Any],
) -> None:
    """Write the run's checkpoint after an epoch (epbench.core.checkpoint): `params`, the curves,
    and the meta a resume checks (`identity`: key, algorithm, seed, steps per epoch) and needs."""
    seed = identity["seed"]
    meta = {
        **identity,
        "epoch": run.done,
        "diverged": run.diverged,
        "compile_seconds": run.compile_seconds,
        "rng": {"seed": seed, "next_epoch": run.done + 1, "streams": STREAMS},
        "cell": spec.cell,
        "config_hash": config_hash(spec.config),
    }
    save_checkpoint(checkpoint, params=params, curves=run.curves, meta=meta)


def _summary(run: _Run, *, steps_per_epoch: int, batch: int, resumed_from: int) -> dict[str, Any]:
    """The metrics of a finished (or diverged) run, as `train_algorithm` returns them."""
    seconds = sum(run.curves["epoch_seconds"])
    samples = len(run.curves["epoch_seconds"]) * steps_per_epoch * batch
    return {
        "status": "ok" if run.diverged is None else "diverged",
        "diverged": run.diverged,
        **run.curves,
        "epochs_done": run.done,
        "steps_per_epoch": steps_per_epoch,
        "samples_per_s": samples / seconds if seconds > 0 else None,
        "peak_memory_bytes": peak_memory_bytes(),
        "compile_seconds": run.compile_seconds,
        "resumed_from": resumed_from,
    }


def _record_epoch(
    curves: dict[str, list[float]],
    net: Network,
    params: Any,
    data: TrainingData,
    now: dict[str, np.ndarray],
    *,
    spec: TaskSpec,
    order: list[np.ndarray],
    sums: dict[str, Any],
) -> None:
    """Append one finished epoch to the curves: the test error of the free phase (timed apart),
    the online train error and the mean loss (from the epoch's summed `loss` and `errors`), its
    `seconds`, the feedback angles, each parameter's norm and the free-phase residual."""
    loss_sum, errors_sum, seconds = sums["loss"], sums["errors"], sums["seconds"]
    B = spec.data.batch
    start = time.perf_counter()
    test = evaluate(net, params, data, steps=spec.dynamics.T, batch=spec.train.test_batch)
    curves["test_seconds"].append(time.perf_counter() - start)
    curves["train_error"].append(100.0 * int(errors_sum) / (len(order) * B))
    curves["test_error"].append(test)
    curves["loss"].append(float(loss_sum) / len(order))
    curves["epoch_seconds"].append(seconds)
    for name, angle in feedback_angles_deg(now).items():
        curves[f"{ANGLE_CURVE}.{name}"].append(angle)
    with np.errstate(over="ignore"):  # a huge but finite parameter has the norm inf
        for name, value in now.items():
            curves[f"{NORM_CURVE}.{name}"].append(float(np.linalg.norm(value)))
    curves["free_residual"].append(free_residual(net, params, data, steps=spec.dynamics.T))


def free_residual(net: Network, params: Any, data: TrainingData, *, steps: int) -> float:
    """How far the free phase is from its fixed point after `steps` (= T) steps, per example:
    ‖s_T − s_{T−1}‖ over the first RESIDUAL_IMAGES test images (all layers), divided by the
    square root of their number (docs/theory.md §4, residual). A value that grows over the epochs
    means the weights drive the dynamics away from a fixed point within T steps."""
    x = data.x_test[:RESIDUAL_IMAGES]
    _, residual = net.free_phase(params, x, steps=steps)
    return float(residual) / math.sqrt(len(x))


def paired_difference(
    ep: dict[str, Any] | None, bptt: dict[str, Any] | None, key: str
) -> float | None:
    """EP − BPTT of the last epoch's `key` (percent points), when both runs completed it (None
    when either was not trained in this cell: `train.algorithms`)."""
    if ep is None or bptt is None:
        return None
    if ep["status"] != "ok" or bptt["status"] != "ok" or not ep[key] or not bptt[key]:
        return None
    return ep[key][-1] - bptt[key][-1]
