"""tasks/depth-scaling.toml: its cells (P by default, EB on request; gdu with tanh and train with
sigm in one cell through `overrides.train`), the signal-arrival metric measured from real traces,
the per-depth table, and a symmetric-estimator training run at depth 3 that must not diverge.

The runs here are shrunk (narrow layers, short phases, 200 training images) to stay within
seconds; the quick preset itself is a benchmark run (README, tasks/README.md)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from epbench.config.tasks import resolve, split_measures
from epbench.core.errors import TaskError
from epbench.core.metrics import arrival, signal_metrics
from epbench.measurements.inputs import load_batch
from epbench.measurements.training import load_training_data
from epbench.plugins.registry import Registry
from epbench.run.matrix import run_measurement
from epbench.run.resolve import RunOptions
from epbench.views.pivot import depth_table, has_depths


def cells(preset: str = "quick", selection: dict | None = None, overrides=()) -> list:
    path = Registry().get_task_path("depth-scaling")
    return resolve(path, preset=preset, selection=selection, overrides=overrides)


def test_bare_task_runs_the_p_cells_with_two_measurements() -> None:
    specs = cells()
    assert [s.cell for s in specs[::2]] == [f"depth-scaling[model=P-{d}h]" for d in range(1, 7)]
    gdu, train = specs[::2], specs[1::2]
    for depth, (g, t) in enumerate(zip(gdu, train, strict=True), start=1):
        assert g.cell == t.cell and (g.measure, t.measure) == (("gdu",), ("train",))
        assert g.model.depth == t.model.depth == depth and g.model.setting == "P"
        assert (g.model.activation, g.dtype, g.data.batch) == ("tanh", "float64", 1)
        assert (t.model.activation, t.dtype, t.data.batch) == ("sigm", "float32", 20)
        assert g.model.sizes == (10,) + (512,) * depth  # GDU keeps 512 units in quick
        assert t.model.sizes == (10,) + (128,) * depth
        assert (t.train.epochs, t.data.subset, len(t.train.lrs)) == (1, 10000, depth + 1)
        assert "overrides" not in t.config and t.config["model"]["activation"] == "sigm"
        assert g.dynamics.K > depth and t.dynamics.K > depth  # the signal reaches layer N
    paper = cells("paper")
    assert [s.train.epochs for s in paper[1::2]] == [30, 50, 100, 100, 100, 100]
    assert all(s.model.sizes[1:] == (512,) * s.model.depth for s in paper)
    assert all(s.data.subset == 0 for s in paper)


def test_eb_cells_and_set_overrides_reach_the_train_measurement() -> None:
    eb = cells(selection={"model": "EB-*"})
    assert len(eb) == 12 and all(s.model.setting == "EB" for s in eb)
    assert {(s.measure, s.model.epsilon, s.model.clamp) for s in eb} == {
        (("gdu",), 0.08, False),
        (("train",), 0.2, True),
    }
    assert len(cells(selection={"model": "*"})) == 24
    # --set wins over the task's overrides.train (data.subset = 10000 in quick)
    specs = cells(
        selection={"model": "P-3h"},
        overrides=["data.subset=200", 'measure=["train"]', "dynamics.estimator=symmetric"],
    )
    assert [(s.measure, s.data.subset, s.dynamics.estimator) for s in specs] == [
        (("train",), 200, "symmetric")
    ]


def test_overrides_must_name_a_measurement_and_sections() -> None:
    config = {"measure": ["gdu"], "overrides": {"trian": {"model": {}}}}
    with pytest.raises(TaskError, match=r"overrides\.trian"):
        split_measures(config, "here")
    config = {"measure": ["gdu", "train"], "overrides": {"train": {"measure": ["gdu"]}}}
    with pytest.raises(TaskError, match=r"overrides\.train"):
        split_measures(config, "here")
    unused = {"measure": ["gdu"], "overrides": {"train": {"dtype": "float32"}}}
    assert split_measures(unused, "here") == [{"measure": ["gdu"]}]
    parts = split_measures(
        {"measure": ["gdu", "train"], "dtype": "float64", "overrides": {"train": {"dtype": "x"}}},
        "here",
    )
    assert parts == [
        {"measure": ["gdu"], "dtype": "float64"},
        {"measure": ["train"], "dtype": "x"},
    ]


def test_arrival_from_synthetic_traces() -> None:
    K = 6
    bptt = {f"s{n}": np.zeros((K, 1, 3)) for n in range(3)}
    ep = {f"s{n}": np.full((K, 3), 1e-6) for n in range(3)}  # drift of an inexact fixed point
    for n in range(3):
        bptt[f"s{n}"][n:] = 0.5
        ep[f"s{n}"][n:] = -0.3
    bptt["W0_1"] = ep["W0_1"] = np.ones((K, 2, 2))  # parameters are not looked at
    assert arrival(bptt, ep) == {
        "ep": {"s0": 0, "s1": 1, "s2": 2},
        "bptt": {"s0": 0, "s1": 1, "s2": 2},
    }
    ep["s2"][:] = 1.0  # the signal buried in a large drift (no fixed point): arrives "at once"
    bptt["s1"][:] = 0.0
    assert signal_metrics(bptt, ep)["signal_steps"] == 0
    assert arrival(bptt, ep)["bptt"]["s1"] is None


def test_signal_reaches_layer_n_after_n_steps(backend_name: str, tmp_path: Path) -> None:
    """Measured from the traces of a real GDU run at a fixed point (depth 3, 16 units): the EP
    neuron trace of layer n becomes substantial, and the BPTT one non-zero, at nudged step n;
    `signal_steps` = depth. Then the per-depth table of that record beside a depth-1 one."""
    (spec,) = cells(
        "quick",
        selection={"model": "P-3h"},
        overrides=['measure=["gdu"]', "model.sizes=[10, 16, 16, 16]", "dynamics.T=300"],
    )
    batch = load_batch(spec, seed=0, dtype="float64", data_dir=None)
    backend = Registry().get_backend(backend_name)
    options = RunOptions(repeat=0)
    record = run_measurement("gdu", spec, backend, batch, options=options, folder=tmp_path, env={})
    assert record["status"] == "ok", record.get("reason")
    m = record["metrics"]
    assert m["residual"] < 1e-8  # at the fixed point
    expected = {f"s{n}": n for n in range(4)}
    assert m["arrival"] == {"ep": expected, "bptt": expected}
    assert m["signal_steps"] == 3 == record["depth"]
    shallow = {**record, "depth": 1, "metrics": {**m, "signal_steps": 1}}
    shallow["metrics"]["arrival"] = {"ep": {"s1": 1}, "bptt": {"s1": 1}}
    table = depth_table([record, shallow])
    assert has_depths([record, shallow]) and not has_depths([record])
    # Training records alone (Table 1 over P-1h and P-2h) are no depth study: their seeds are
    # summarised by the training tables, of which depth_table would keep one seed.
    trains = [{**r, "measurement": "train"} for r in (record, shallow)]
    assert not has_depths(trains) and has_depths([record, shallow, *trains])
    rows = [line for line in table.splitlines() if line.startswith("| depth-scaling")]
    assert len(rows) == 2 and "| 1 (1) " in rows[0] and "| 3 (3) " in rows[1]
    assert rows[1].count(" / ") == 2 * 3  # RMSE and cosine for layers 0 … 3


@pytest.mark.usefixtures("mnist_available")
def test_symmetric_estimator_trains_depth_3(backend_name: str, tmp_path: Path) -> None:
    """Depth 3 with the symmetric estimator (quick preset, shrunk): EP and BPTT both finish
    without diverging and EP learns (its train error falls below chance)."""
    (spec,) = cells(
        selection={"model": "P-3h"},
        overrides=[
            'measure=["train"]',
            "dynamics.estimator=symmetric",
            "data.subset=400",
            "model.sizes=[10, 32, 32, 32]",
            "dynamics.T=30",
            "dynamics.K=10",
        ],
    )
    assert (spec.model.activation, spec.dynamics.estimator) == ("sigm", "symmetric")
    data = load_training_data(spec, dtype=spec.dtype, data_dir=None)
    backend = Registry().get_backend(backend_name)
    options = RunOptions(quiet=True)
    record = run_measurement("train", spec, backend, data, options=options, folder=tmp_path, env={})
    assert record["status"] == "ok", record.get("reason")
    assert record["symmetric"] is True and record["depth"] == 3
    ep, bptt = record["metrics"]["train"]["ep"], record["metrics"]["train"]["bptt"]
    assert all(np.isfinite(ep["loss"])) and all(np.isfinite(bptt["loss"]))
    assert ep["test_error"][-1] < 90.0  # chance is 90 %
