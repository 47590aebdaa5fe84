"""The `rtrl` measurement (epbench.measurements.rtrl, docs/theory.md §6.3): RTRL's forward-in-time
gradient against
BPTT's on the `rtrl` task, with time and memory of RTRL, BPTT and EP; and its skips."""

from __future__ import annotations

from pathlib import Path

import pytest

from epbench.config.tasks import resolve
from epbench.measurements.inputs import load_batch
from epbench.measurements.rtrl import METHODS
from epbench.plugins.registry import Registry
from epbench.run.matrix import run_measurement
from epbench.run.resolve import RunOptions
from epbench.views.rtrl import rtrl_table


def test_rtrl_task_resolves() -> None:
    assert Registry().get_measurement("rtrl").inputs == "batch"
    cells = resolve(Registry().get_task_path("rtrl"), preset="paper")
    assert [c.cell for c in cells] == ["rtrl[model=toy]", "rtrl[model=P-20-30-10]"]
    toy, small = cells
    assert (toy.model.sizes, toy.model.input_layers, toy.dynamics.T, toy.dynamics.K) == (
        (10, 50),
        (0, 1),
        5000,
        80,
    )
    assert (small.model.setting, small.model.inputs, small.model.sizes) == ("P", 20, (10, 30))
    assert all(c.measure == ("rtrl",) for c in cells)


def test_rtrl_measurement_matches_bptt(backend_name: str, tmp_path: Path) -> None:
    """Every installed backend (conftest parametrizes `backend_name`)."""
    backend = Registry().get_backend(backend_name)
    (spec,) = resolve(
        Registry().get_task_path("rtrl"), preset="quick", selection={"model": "P-20-30-10"}
    )
    batch = load_batch(spec, seed=0, dtype="float64", data_dir=None)
    options = RunOptions(seed=0, repeat=1)
    record = run_measurement("rtrl", spec, backend, batch, options=options, folder=tmp_path, env={})
    assert record["status"] == "ok", record.get("reason")
    assert record["measurement"] == "rtrl"
    found = record["metrics"]["rtrl"]
    assert found["max_rel_diff"] < 1e-10
    assert set(found["rel_diff"]) == {"W0_1", "b0", "W1_x", "b1"}
    assert (found["params"], found["states"]) == (10 * 30 + 10 + 30 * 20 + 30, 20 * 40)
    methods = record["timings"]["methods"]
    assert set(methods) == set(METHODS)
    assert all(m["steady_seconds"] > 0 and m["first_seconds"] > 0 for m in methods.values())
    table = rtrl_table([record])
    assert "rtrl[model=P-20-30-10]" in table and "RTRL vs BPTT" in table


def test_rtrl_skips_large_models_and_networks_without_it(tmp_path: Path) -> None:
    backend = Registry().get_backends().get("torch")
    if backend is None:
        pytest.skip("needs the torch backend")
    path = Registry().get_task_path("rtrl")
    options = RunOptions(seed=0)
    (big,) = resolve(
        path,
        selection={"model": "P-20-30-10"},
        overrides=["model.inputs=784", "model.sizes=[10, 512]", "data.batch=20"],
    )
    batch = load_batch(big, seed=0, dtype="float64", data_dir=None)
    record = run_measurement("rtrl", big, backend, batch, options=options, folder=tmp_path, env={})
    assert record["status"] == "skipped" and "sensitivities" in record["reason"]
    conv = {
        "input": [1, 8, 8],
        "channels": [2],
        "kernel": 3,
        "padding": 1,
        "pool": 2,
    }
    (small_conv,) = resolve(
        path,
        selection={"model": "P-20-30-10"},
        overrides=[
            "model.inputs=64",
            "model.sizes=[10, 32]",
            "model.activation=hardsigm",
            "model.conv={ " + ", ".join(f"{k} = {v}" for k, v in conv.items()) + " }",
            "data.batch=2",
        ],
    )
    batch = load_batch(small_conv, seed=0, dtype="float64", data_dir=None)
    record = run_measurement(
        "rtrl", small_conv, backend, batch, options=options, folder=tmp_path, env={}
    )
    assert record["status"] == "skipped" and "no rtrl_gradient" in record["reason"]
