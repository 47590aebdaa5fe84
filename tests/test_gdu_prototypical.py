"""GDU in the P setting (docs/theory.md §3, where the theorem holds only approximately): mnist-fc
P-1h at the paper's Fig. 3 configuration (tanh, β = 0.01, T = 150, K = 10, batch 20, the first MNIST
training batch), float32, on every installed backend, through the matrix as `epbench run` does."""

from __future__ import annotations

import pytest

from epbench.config.tasks import resolve
from epbench.measurements.inputs import load_batch
from epbench.plugins.registry import Registry
from epbench.run.matrix import run_measurement
from epbench.run.resolve import RunOptions
from epbench.run.store import environment


def test_p1h_paper_configuration(backend_name: str, mnist_available: None, tmp_path) -> None:
    registry = Registry()
    (spec,) = resolve(registry.get_task_path("mnist-fc"), selection={"model": "P-1h"})
    assert (spec.dynamics.T, spec.dynamics.K, spec.dynamics.beta, spec.data.batch) == (
        150,
        10,
        0.01,
        20,
    )
    backend = registry.get_backend(backend_name)
    if backend.supports(spec.model, dtype="float32", device="cpu"):
        pytest.skip(backend.supports(spec.model, dtype="float32", device="cpu"))
    options = RunOptions(dtype="float32", repeat=0)
    batch = load_batch(spec, seed=0, dtype="float32", data_dir=None)
    record = run_measurement(
        "gdu", spec, backend, batch, options=options, folder=tmp_path, env=environment()
    )
    assert record["status"] == "ok", record.get("reason")
    gdu = record["metrics"]["gdu"]
    for name in ("W0_1", "b0", "W1_x", "b1"):
        assert gdu[name]["cosine"] >= 0.999, (name, gdu[name]["cosine"])
    for name, metrics in gdu.items():
        assert metrics["rmse"] <= 0.1, (name, metrics["rmse"])
