"""Several seeds trained as one batched network give the records of a sequential run.

A backend that offers `SeedBatchingBackend` trains the seeds of a `train` cell at once; every seed
keeps its initialisation, shuffle, random signs, curves and checkpoints. So the records (curves
and final parameters) must equal those of the same seeds run one after the other: to 1e-10
relative in float64 and with identical test errors in float32 — after one epoch on 200 MNIST
images with a tiny P model (tests/support/tiny-train.toml). A batched run extended by `--resume`
from its per-seed checkpoints ends where an uninterrupted one does; a backend without the
capability runs the seeds one after the other.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from epbench.config.tasks import resolve
from epbench.core.checkpoint import load_checkpoint
from epbench.core.protocols import SeedBatchingBackend
from epbench.plugins.registry import Registry
from epbench.run.matrix import run_matrix
from epbench.run.resolve import RunOptions
from epbench.run.store import RecordWriter

TINY = Path(__file__).parent / "support" / "tiny-train.toml"
SEEDS = (0, 1, 2)


def batching_backend(name: str):
    backends = Registry().get_backends()
    if name not in backends:
        pytest.skip(f"the {name} backend is not installed")
    backend = backends[name]
    if not isinstance(backend, SeedBatchingBackend):
        pytest.skip(f"the {name} backend does not batch seeds")
    return backend


def train(backend, out: Path, *overrides: str, batch: bool, resume: bool = False) -> list[dict]:
    cells = resolve(TINY, overrides=overrides)
    options = RunOptions(seeds=SEEDS, batch_seeds=batch, resume=resume, quiet=True)
    writer = RecordWriter(out, commit="test")
    records = run_matrix(cells, [backend], options=options, writer=writer)
    assert [r["seed"] for r in records] == list(SEEDS)
    assert all(r["status"] == "ok" for r in records), [r["reason"] for r in records]
    return [{**r, "folder": writer.folder} for r in records]


def params(record: dict, algorithm: str) -> dict[str, np.ndarray]:
    saved = load_checkpoint(record["folder"] / record["checkpoints"][algorithm])
    assert saved is not None
    return saved.params


def relative(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-300))


@pytest.fixture(scope="module", params=["jax", "torch"])
def float64_runs(
    request: pytest.FixtureRequest, mnist_available: None, tmp_path_factory: pytest.TempPathFactory
) -> dict:
    """One backend, float64, seeds 0–2, 2 epochs: batched and sequential."""
    backend = batching_backend(request.param)
    root = tmp_path_factory.mktemp("seeds")
    return {
        "name": request.param,
        "batched": train(backend, root / "b", "dtype=float64", batch=True),
        "sequential": train(backend, root / "s", "dtype=float64", batch=False),
    }


def test_batched_seeds_equal_sequential_seeds_in_float64(float64_runs: dict) -> None:
    batched, alone = float64_runs["batched"], float64_runs["sequential"]
    for b, s in zip(batched, alone, strict=True):
        for algorithm in ("ep", "bptt"):
            rb, rs = b["metrics"]["train"][algorithm], s["metrics"]["train"][algorithm]
            assert rb["seeds_batched"] == len(SEEDS) and "seeds_batched" not in rs
            assert len(rb["test_error"]) == 2
            assert rb["test_error"] == rs["test_error"], (b["seed"], algorithm)
            assert rb["train_error"] == rs["train_error"], (b["seed"], algorithm)
            assert rb["loss"] == pytest.approx(rs["loss"], rel=1e-10)
            assert rb["free_residual"] == pytest.approx(rs["free_residual"], rel=1e-6, abs=1e-12)
            pb, ps = params(b, algorithm), params(s, algorithm)
            worst = max(relative(pb[k], ps[k]) for k in ps)
            assert worst <= 1e-10, (b["seed"], algorithm, worst)
    # Seeds differ from each other: the batch did not give every seed the same run.
    assert params(batched[0], "ep")["W0_1"].tolist() != params(batched[1], "ep")["W0_1"].tolist()


def test_a_batched_run_resumed_from_its_checkpoints_ends_as_an_uninterrupted_one(
    float64_runs: dict, tmp_path: Path
) -> None:
    if float64_runs["name"] != "jax":
        pytest.skip("one backend shows it (the checkpoints and resume are the core's)")
    backend = batching_backend("jax")
    # Stopped after epoch 1 (the checkpoints a killed 2-epoch run leaves: the run key does not
    # include train.epochs), then resumed to 2 epochs from them, batched again.
    train(backend, tmp_path / "p", "dtype=float64", "train.epochs=1", batch=True)
    resumed = train(backend, tmp_path / "p", "dtype=float64", batch=True, resume=True)
    for a, b in zip(float64_runs["batched"], resumed, strict=True):
        for algorithm in ("ep", "bptt"):
            ra, rb = a["metrics"]["train"][algorithm], b["metrics"]["train"][algorithm]
            assert rb["resumed_from"] == 1 and rb["epochs_done"] == 2
            assert ra["test_error"] == rb["test_error"] and ra["loss"] == rb["loss"]
            pa, pb = params(a, algorithm), params(b, algorithm)
            assert all(np.array_equal(pa[k], pb[k]) for k in pa), (a["seed"], algorithm)


def test_batched_seeds_give_the_sequential_test_errors_in_float32(
    mnist_available: None, tmp_path: Path
) -> None:
    backend = batching_backend("torch")  # (jax: its float64 runs agree to the last bit)
    batched = train(backend, tmp_path / "b", "train.epochs=1", batch=True)
    alone = train(backend, tmp_path / "s", "train.epochs=1", batch=False)
    for b, s in zip(batched, alone, strict=True):
        for algorithm in ("ep", "bptt"):
            rb, rs = b["metrics"]["train"][algorithm], s["metrics"]["train"][algorithm]
            assert rb["test_error"] == rs["test_error"], (b["seed"], algorithm)


def test_seeds_at_different_epochs_resume_one_after_the_other(
    mnist_available: None, tmp_path: Path
) -> None:
    backend = batching_backend("torch")
    cells = resolve(TINY, overrides=("dtype=float64", "train.epochs=1"))
    writer = RecordWriter(tmp_path / "out", commit="test")
    one = RunOptions(seeds=(1,), quiet=True)
    run_matrix(cells, [backend], options=one, writer=writer)  # seed 1 alone, one epoch
    # Resumed with all three seeds to 2 epochs: seed 1 stands at epoch 1, the others at 0.
    cells = resolve(TINY, overrides=("dtype=float64",))
    options = RunOptions(seeds=SEEDS, batch_seeds=True, resume=True, quiet=True)
    records = run_matrix(cells, [backend], options=options, writer=writer)
    runs = {r["seed"]: r["metrics"]["train"]["ep"] for r in records}
    assert runs[1]["resumed_from"] == 1 and runs[0]["resumed_from"] == 0
    assert all(run["epochs_done"] == 2 and "seeds_batched" not in run for run in runs.values())
