"""The `train` measurement: determinism, resume, divergence, checkpoints, tables and the CLI.

Runs are tiny (a 16-unit P model, T = 8, K = 4, 200 MNIST training images, the whole test set) so
that the file stays within seconds; the paper-scale acceptance runs are benchmarks, not tests.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from epbench.cli.options import parse_seeds
from epbench.config.tasks import resolve
from epbench.core.checkpoint import checkpoint_path, load_checkpoint, save_checkpoint
from epbench.core.errors import EpbenchError, ResultsError, TaskError
from epbench.measurements.training import (
    TrainingData,
    epoch_betas,
    epoch_order,
    load_training_data,
    run_key,
    train_algorithm,
)
from epbench.plugins.registry import Registry
from epbench.run.matrix import run_matrix, run_measurement
from epbench.run.resolve import RunOptions
from epbench.run.store import RecordWriter, environment
from epbench.views.tables import overview, paper_table, seed_summary_table

TINY = (Path(__file__).parent / "support" / "tiny-train.toml").read_text(encoding="utf-8")

# A learning rate so large that EP's updates overflow float32 within a few steps: inf weights, NaN
# states and loss. (BPTT's sigmoid saturates first and its gradient vanishes: it stays finite.)
TWO_CELLS = (
    TINY
    + """
[variants.lr.huge]
train = { lrs = [1e38, 1e38] }
[variants.lr.ok]
train = { epochs = 1 }
"""
)


@pytest.fixture
def tiny(tmp_path: Path):
    path = tmp_path / "tiny.toml"
    path.write_text(TINY)

    def cells(*overrides: str):
        return resolve(path, overrides=overrides)

    return cells


@pytest.fixture(scope="module")
def data(mnist_available: None, tmp_path_factory: pytest.TempPathFactory) -> TrainingData:
    path = tmp_path_factory.mktemp("task") / "tiny.toml"
    path.write_text(TINY)
    (spec,) = resolve(path)
    return load_training_data(spec, dtype="float32", data_dir=None)


def backend(name: str):
    backends = Registry().get_backends()
    if name not in backends:
        pytest.skip(f"the {name} backend is not installed")
    return backends[name]


def train(spec, name: str, data: TrainingData, out: Path, *, seed: int = 0, resume=False):
    options = RunOptions(seed=seed, resume=resume, quiet=True)
    writer = RecordWriter(out, commit="test")
    record = run_measurement(
        "train", spec, backend(name), data, options=options, folder=writer.folder, env=environment()
    )
    return record, writer


def final_params(record: dict, writer: RecordWriter, algorithm: str) -> dict[str, np.ndarray]:
    saved = load_checkpoint(writer.folder / record["checkpoints"][algorithm])
    assert saved is not None
    return saved.params


CURVES = ("train_error", "test_error", "loss")


@pytest.mark.parametrize(
    "name",
    ["torch", pytest.param("jax", marks=pytest.mark.slow)],  # jax: compilations
)
def test_same_seed_gives_identical_records_and_parameters(
    name: str, tiny, data: TrainingData, tmp_path: Path
) -> None:
    (spec,) = tiny("train.epochs=1")
    first, w1 = train(spec, name, data, tmp_path / "a")
    again, w2 = train(spec, name, data, tmp_path / "b")
    assert first["status"] == again["status"] == "ok", (first["reason"], again["reason"])
    for algorithm in ("ep", "bptt"):
        a, b = first["metrics"]["train"][algorithm], again["metrics"]["train"][algorithm]
        for key in CURVES:
            assert a[key] == b[key] and len(a[key]) == 1, (algorithm, key)
        assert 0 < a["test_error"][0] < 90 and a["loss"][0] > 0
        pa, pb = final_params(first, w1, algorithm), final_params(again, w2, algorithm)
        assert all(np.array_equal(pa[n], pb[n]) for n in pa), algorithm
    if name == "torch":  # the seed matters (one backend is enough to show it)
        other, w3 = train(spec, name, data, tmp_path / "c", seed=1)
        po, pa = final_params(other, w3, "ep"), final_params(first, w1, "ep")
        assert not np.array_equal(pa["W0_1"], po["W0_1"]), "another seed, other weights"
    ep, bptt = first["metrics"]["train"]["ep"], first["metrics"]["train"]["bptt"]
    assert ep["loss"] != bptt["loss"], "EP and BPTT are different algorithms"
    assert first["metrics"]["ep_minus_bptt"]["test_error"] == pytest.approx(
        ep["test_error"][-1] - bptt["test_error"][-1]
    )
    for block in (ep, bptt):
        assert block["samples_per_s"] > 0 and block["peak_memory_bytes"] > 0
        assert block["compile_seconds"] > 0 and len(block["epoch_seconds"]) == 1
        assert block["steps_per_epoch"] == 10


def test_one_algorithm_alone_resumes_the_run_a_cell_of_both_left(
    tiny, data: TrainingData, tmp_path: Path
) -> None:
    """`train.algorithms` is not part of a run's key: EP's checkpoint of a cell that trains EP and
    BPTT is continued by a cell that trains EP alone (a long run split into parallel cells)."""
    (two,) = tiny()
    (one,) = tiny("train.epochs=1")
    (ep_only,) = tiny('train.algorithms=["ep"]')
    assert run_key(ep_only) == run_key(two) != run_key(tiny("model.sizes=[10, 8]")[0])
    whole, _ = train(two, "torch", data, tmp_path / "whole")
    train(one, "torch", data, tmp_path / "part")
    resumed, _ = train(ep_only, "torch", data, tmp_path / "part", resume=True)
    assert resumed["status"] == "ok" and list(resumed["metrics"]["train"]) == ["ep"]
    a, b = whole["metrics"]["train"]["ep"], resumed["metrics"]["train"]["ep"]
    assert b["resumed_from"] == 1 and b["epochs_done"] == 2
    for key in CURVES:
        assert a[key] == b[key], key


def test_resume_after_epoch_1_gives_the_uninterrupted_final_parameters(
    tiny, data: TrainingData, tmp_path: Path
) -> None:
    (two,) = tiny()
    (one,) = tiny("train.epochs=1")
    assert run_key(one) == run_key(two)
    whole, w_whole = train(two, "torch", data, tmp_path / "whole")
    # The run "stopped" after epoch 1 (its checkpoint is the one an interrupted 2-epoch run
    # leaves: the key does not include train.epochs), then resumed to 2 epochs.
    part, w_part = train(one, "torch", data, tmp_path / "part")
    resumed, _ = train(two, "torch", data, tmp_path / "part", resume=True)
    assert whole["status"] == part["status"] == resumed["status"] == "ok"
    for algorithm in ("ep", "bptt"):
        a, b = whole["metrics"]["train"][algorithm], resumed["metrics"]["train"][algorithm]
        assert b["resumed_from"] == 1 and b["epochs_done"] == 2
        for key in CURVES:
            assert a[key] == b[key] and len(a[key]) == 2, (algorithm, key)
        assert part["metrics"]["train"][algorithm]["loss"] == a["loss"][:1]
        pa, pb = final_params(whole, w_whole, algorithm), final_params(resumed, w_part, algorithm)
        assert all(np.array_equal(pa[n], pb[n]) for n in pa), algorithm
    # Resuming a finished run trains nothing and reports the same curves.
    done, _ = train(two, "torch", data, tmp_path / "part", resume=True)
    assert done["metrics"]["train"]["ep"]["resumed_from"] == 2
    assert (
        done["metrics"]["train"]["ep"]["epoch_seconds"]
        == (resumed["metrics"]["train"]["ep"]["epoch_seconds"])
    )
    # A checkpoint with more epochs than asked for is refused, not silently reused.
    with pytest.raises(ResultsError, match=r"at most train\.epochs = 1"):
        train(one, "torch", data, tmp_path / "part", resume=True)


def test_diverging_run_is_recorded_and_the_next_cell_still_runs(
    mnist_available: None, tmp_path: Path
) -> None:
    task = tmp_path / "two.toml"
    task.write_text(TWO_CELLS)
    cells = resolve(task)
    writer = RecordWriter(tmp_path / "out", commit="test")
    options = RunOptions(quiet=True)
    records = run_matrix(cells, [backend("torch")], options=options, writer=writer)
    huge, ok = records
    assert huge["cell"] == "two[lr=huge]" and huge["status"] == "diverged"
    ep = huge["metrics"]["train"]["ep"]
    assert ep["status"] == "diverged" and ep["test_error"] == [] and ep["epochs_done"] == 0
    assert ep["diverged"]["epoch"] == 1 and 1 < ep["diverged"]["step"] <= 10
    assert huge["reason"].startswith("ep diverged at epoch 1, step ")
    checkpoint = load_checkpoint(writer.folder / huge["checkpoints"]["ep"])
    assert checkpoint.meta["diverged"] == ep["diverged"]
    assert ok["cell"] == "two[lr=ok]" and ok["status"] == "ok"
    lines = [json.loads(line) for line in writer.path.read_text().splitlines()]
    assert [r["status"] for r in lines] == ["diverged", "ok"]
    assert "diverged" in overview(lines)


def test_progress_as_a_bar_as_lines_or_quiet(
    tiny, data: TrainingData, tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch
) -> None:
    """A bar (terminal) or plain lines (log file) end each epoch with a line; "lines" also reports
    within the epoch every LINE_SECONDS (here 0: at every divergence check); None is silent."""
    (spec,) = tiny("train.epochs=1")
    from epbench.core.params import init_params
    from epbench.measurements import training

    monkeypatch.setattr(training, "LINE_SECONDS", 0.0)
    initial = init_params(spec.model, seed=0, dtype="float32")
    for progress in ("bar", "lines", None):
        train_algorithm(
            backend("torch"),
            initial,
            data,
            spec=spec,
            algorithm="bptt",
            dtype="float32",
            device="cpu",
            seed=0,
            beta=0.2,
            symmetric=False,
            checkpoint=tmp_path / f"{progress}.npz",
            progress=progress,
            label="tiny",
        )
        err = capsys.readouterr().err
        assert ("tiny bptt epoch 1/1: train" in err) is (progress is not None), err
        assert (" img/s, loss " in err) is (progress == "lines"), err
    with pytest.raises(ValueError, match="progress: expected"):
        train_algorithm(
            backend("torch"), initial, data, spec=spec, algorithm="bptt", dtype="float32",
            device="cpu", seed=0, beta=0.2, symmetric=False, checkpoint=tmp_path / "x.npz",
            progress="yes",
        )  # fmt: skip


def test_checkpoints_are_atomic_npz_without_pickle(tmp_path: Path) -> None:
    path = checkpoint_path(
        tmp_path / "checkpoints",
        cell="table1[model=P-1h]",
        backend="torch",
        device="cpu",
        dtype="float32",
        seed=2,
        key="abc",
        algorithm="ep",
    )
    assert path.name == "table1(model=P-1h)_torch_cpu_float32_seed2_abc_ep.npz"
    params = {"W0_1": np.arange(6, dtype=np.float32).reshape(2, 3), "b0": np.ones(2)}
    save_checkpoint(path, params=params, curves={"loss": [0.5, 0.25]}, meta={"epoch": 2})
    save_checkpoint(path, params=params, curves={"loss": [0.5, 0.25]}, meta={"epoch": 2})
    assert [p.name for p in path.parent.iterdir()] == [path.name], "no temporary files left"
    with np.load(path, allow_pickle=False) as archive:
        assert all(archive[name].dtype != object for name in archive.files)
    saved = load_checkpoint(path)
    assert saved.meta["epoch"] == 2 and saved.curves == {"loss": [0.5, 0.25]}
    assert saved.params["W0_1"].dtype == np.float32
    assert np.array_equal(saved.params["W0_1"], params["W0_1"])
    assert load_checkpoint(tmp_path / "none.npz") is None
    path.write_bytes(b"not a zip file")
    with pytest.raises(ResultsError, match="unreadable"):
        load_checkpoint(path)


def test_shuffling_and_random_signs_derive_from_seed_and_epoch() -> None:
    first = epoch_order(100, batch=20, seed=0, epoch=1)
    assert len(first) == 5 and sorted(np.concatenate(first).tolist()) == list(range(100))
    assert all(
        np.array_equal(a, b)
        for a, b in zip(first, epoch_order(100, batch=20, seed=0, epoch=1), strict=True)
    )
    assert not np.array_equal(first[0], epoch_order(100, batch=20, seed=0, epoch=2)[0])
    assert not np.array_equal(first[0], epoch_order(100, batch=20, seed=1, epoch=1)[0])
    signs = epoch_betas(0.5, estimator="random-sign", seed=0, epoch=1, steps=200)
    assert set(signs) == {0.5, -0.5} and 60 < signs.count(0.5) < 140
    assert signs == epoch_betas(-0.5, estimator="random-sign", seed=0, epoch=1, steps=200)
    assert signs != epoch_betas(0.5, estimator="random-sign", seed=0, epoch=2, steps=200)
    assert epoch_betas(-0.5, estimator="negative", seed=0, epoch=1, steps=3) == [-0.5] * 3


def test_table1_holds_the_paper_settings() -> None:
    path = Registry().get_task_paths()["table1"]
    cells = {c.variant[0][1]: c for c in resolve(path)}
    assert list(cells) == ["EB-1h", "EB-2h", "P-1h", "P-2h", "P-3h", "P-conv"]
    expected = {  # docs/theory.md §5, Table 1: T, K, β, ε, epochs, learning rates (output first)
        "EB-1h": (100, 12, 0.5, 0.2, 30, (0.05, 0.1)),
        "EB-2h": (400, 40, 0.5, 0.2, 50, (0.01, 0.1, 0.4)),
        "P-1h": (40, 15, 0.1, 1.0, 30, (0.04, 0.08)),
        "P-2h": (100, 20, 0.5, 1.0, 50, (0.005, 0.05, 0.2)),
        "P-3h": (180, 20, 0.5, 1.0, 100, (0.002, 0.01, 0.05, 0.2)),
        "P-conv": (200, 10, 0.4, 1.0, 40, (0.015, 0.035, 0.15)),
    }
    for name, (T, K, beta, eps, epochs, lrs) in expected.items():
        c = cells[name]
        found = (c.dynamics.T, c.dynamics.K, c.dynamics.beta, c.model.epsilon, c.train.epochs)
        assert (*found, c.train.lrs) == (T, K, beta, eps, epochs, lrs), name
        activation = "hardsigm" if name == "P-conv" else "sigm"
        assert (c.model.activation, c.model.clamp) == (activation, name.startswith("EB"))
        assert (c.data.batch, c.train.test_batch, c.dtype, c.measure) == (
            20,
            1000,
            "float32",
            ("train",),
        )
        assert (c.data.source, c.data.subset) == ("mnist", 0)
    conv = cells["P-conv"].model.conv  # theory §3.4: 5×5 convs, 32 and 64 channels, 2×2 pools
    assert (conv.input, conv.channels, conv.kernel, conv.padding, conv.pool) == (
        (1, 28, 28),
        (32, 64),
        5,
        0,
        2,
    )
    assert conv.layer_shapes() == ((32, 12, 12), (64, 4, 4))
    quick = resolve(
        path, preset="quick", selection={"model": "P-1h"}, overrides=["data.name=fashion-mnist"]
    )
    assert (quick[0].train.epochs, quick[0].data.subset, quick[0].data.source) == (
        1,
        10000,
        "fashion-mnist",
    )


def test_train_cells_are_validated(tiny) -> None:
    with pytest.raises(TaskError, match=r"data\.source: expected mnist or fashion-mnist"):
        tiny('data.source="toy"', "model.inputs=5")
    with pytest.raises(TaskError, match=r"train\.lrs: expected 2 learning rates"):
        tiny("train.lrs=[]")
    with pytest.raises(TaskError, match=r"data\.subset"):
        tiny("data.subset=5")


def _record(seed: int, ep: float, bptt: float) -> dict:
    def block(test: float, seconds: float) -> dict:
        return {
            "status": "ok",
            "test_error": [9.0, test],
            "train_error": [10.0, 5.0],
            "epoch_seconds": [seconds, seconds],
            "samples_per_s": 1000 / seconds,
            "epochs_done": 2,
        }

    return {
        "measurement": "train",
        "cell": "table1[model=P-1h]",
        "preset": "paper",
        "backend": "torch",
        "device": "cpu",
        "dtype": "float32",
        "seed": seed,
        "status": "ok",
        "config_hash": "h",
        "variant": {"model": "P-1h"},
        "config": {"data": {"source": "mnist"}},
        "metrics": {
            "train": {"ep": block(ep, 2.0), "bptt": block(bptt, 1.0)},
            "ep_minus_bptt": {"test_error": ep - bptt},
        },
    }


def test_seed_summary_pairs_ep_and_bptt_by_seed() -> None:
    # EP − BPTT per seed: +1, +2, +3 → mean 2, sample std 1; EP alone: 3, 5, 7 → 5 ± 2.
    records = [_record(0, 3.0, 2.0), _record(1, 5.0, 3.0), _record(2, 7.0, 4.0)]
    table = seed_summary_table(records)
    assert "5.00 ± 2.00" in table and "3.00 ± 1.00" in table and "+2.00 ± 1.00" in table
    assert "0,1,2" in table and "2.00" in table  # EP/BPTT time ratio 2 s / 1 s
    versus = paper_table(records)
    assert "≈ 2.0" in versus and "2 / 30" in versus and "P-1h" in versus


def test_seed_summary_counts_a_cell_that_trains_ep_alone_as_ok() -> None:
    # train.algorithms = ["ep"] (an estimator's cell): its seeds are ok, with nothing to pair.
    records = []
    for seed, ep in enumerate((3.0, 5.0)):
        record = _record(seed, ep, 0.0)
        del record["metrics"]["train"]["bptt"], record["metrics"]["ep_minus_bptt"]
        records.append(record)
    header, _, row = seed_summary_table(records).splitlines()[:3]
    names, values = ([c.strip() for c in line.split("|")] for line in (header, row))
    cells = dict(zip(names, values, strict=True))
    assert cells["seeds"] == "0,1" and cells["not ok"] == ""
    assert cells["EP test %"] == "4.00 ± 1.41" and cells["EP − BPTT (paired)"] == "—"


def test_seed_tables_read_a_cell_that_trains_one_algorithm() -> None:
    # train.algorithms = ["bptt"] (an RNN baseline) or ["ep"]: both tables show the epochs run by
    # the algorithm there is, and nothing to pair.
    for gone in ("ep", "bptt"):
        records = []
        for seed in (0, 1):
            record = _record(seed, 3.0, 2.0)
            del record["metrics"]["train"][gone], record["metrics"]["ep_minus_bptt"]
            records.append(record)
        assert "0,1" in seed_summary_table(records)
        header, _, row = paper_table(records).splitlines()[:3]
        names, values = ([c.strip() for c in line.split("|")] for line in (header, row))
        cells = dict(zip(names, values, strict=True))
        assert cells["epochs (ours / paper)"] == "2 / 30" and cells["EP − BPTT"] == "—"


def test_cli_seeds_resume_and_table_against_paper(mnist_available: None, tmp_path: Path) -> None:
    task = tmp_path / "tiny.toml"
    task.write_text(TINY)
    out = tmp_path / "results"
    # Epoch 1 of seeds 0 and 1 in this process (as a run stopped after epoch 1 leaves them) ...
    cells = resolve(task, overrides=["train.epochs=1"])
    writer = RecordWriter(out, commit="test")
    run_matrix(
        cells, [backend("torch")], options=RunOptions(seeds=(0, 1), quiet=True), writer=writer
    )
    # ... then the command line resumes both to the task's 2 epochs.
    env = {**os.environ, "EPBENCH_LOAD_PLUGINS": "torch"}

    def epbench(*args: str) -> subprocess.CompletedProcess:
        command = [sys.executable, "-m", "epbench", *args]
        return subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)

    run = ["run", str(task), "--backend", "torch", "--seeds", "0,1", "--out", str(out)]
    resumed = epbench(*run, "--resume", "--quiet")
    assert resumed.returncode == 0, resumed.stderr
    assert resumed.stderr == "", "quiet: no progress"
    assert "over seeds" in resumed.stdout and "EP − BPTT (paired)" in resumed.stdout
    records = [json.loads(line) for path in sorted(out.rglob("*.jsonl")) for line in path.open()]
    assert [(r["seed"], r["metrics"]["train"]["ep"]["resumed_from"]) for r in records] == [
        (0, 0),
        (1, 0),
        (0, 1),
        (1, 1),
    ]
    assert all(len(r["metrics"]["train"]["bptt"]["test_error"]) == 2 for r in records[2:])
    assert len(list(out.rglob("checkpoints/*.npz"))) == 4
    table = epbench("table", str(out), "--against", "paper")
    assert table.returncode == 0, table.stderr
    assert "against the paper" in table.stdout and "EP/BPTT time" in table.stdout
    assert parse_seeds("0,1,2") == (0, 1, 2) and parse_seeds(None) == ()
    for bad in ("0,x", "1,1", "-1", ""):
        with pytest.raises(EpbenchError, match="--seeds: expected distinct"):
            parse_seeds(bad)
