"""The beta-sweep measurement (epbench.measurements.beta_sweep): on the toy model in float64 at its
fixed point the
EP error against BPTT falls like β one-sided and like β² symmetric (docs/theory.md §2), on every
installed backend; the slope fit, the error definition and the grid's validation."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from epbench.config.tasks import resolve
from epbench.core.errors import TaskError
from epbench.measurements.beta_sweep import DEFAULT_BETAS, betas_of, fit_slope, sweep_error
from epbench.measurements.inputs import load_batch
from epbench.plugins.registry import Registry
from epbench.run.matrix import run_measurement
from epbench.run.resolve import RunOptions
from epbench.views.tables import format_record, overview

GRID = "dynamics.betas=[0.001, 0.01, 0.1]"


def test_fit_slope_recovers_power_laws() -> None:
    betas = [1e-3, 1e-2, 1e-1]
    assert fit_slope(betas, [3 * b for b in betas]) == pytest.approx(1.0)
    assert fit_slope(betas, [0.5 * b**2 for b in betas]) == pytest.approx(2.0)
    assert fit_slope(betas, [1e-4, 1e-4, 1e-4]) == pytest.approx(0.0, abs=1e-12)
    assert fit_slope(betas, [0.0, 1e-3, 1e-2]) is None  # log of 0
    assert fit_slope([1e-2], [1e-3]) is None


def test_sweep_error_is_relative_over_parameters_only() -> None:
    bptt = {"W0_1": np.ones((2, 3)), "b0": np.zeros((2, 1)), "s0": np.ones((2, 1))}
    ep = {"W0_1": -np.ones((2, 3)), "b0": np.full((2, 1), 0.6), "s0": np.full((2, 1), 5.0)}
    # ‖ep + bptt‖ = sqrt(2 · 0.36) over W0_1 and b0; ‖bptt‖ = sqrt(6); the state s0 is left out
    assert sweep_error(bptt, ep) == pytest.approx(math.sqrt(0.72 / 6))
    assert sweep_error(bptt, {k: -v for k, v in bptt.items()}) == 0.0


def test_grid_comes_from_the_task_or_the_default() -> None:
    path = Registry().get_task_path("beta-sweep")
    spec = resolve(path, preset="quick", overrides=[GRID])[0]
    assert betas_of(spec) == [0.001, 0.01, 0.1]
    spec = resolve(path, preset="quick", overrides=["dynamics.betas=[]"])[0]
    assert betas_of(spec) == sorted(DEFAULT_BETAS)
    assert Registry().get_measurement("beta-sweep").inputs == "batch"


@pytest.mark.parametrize("grid", ["[0.01]", "[0.01, 0.01]", "[0.01, -0.1]", "0.01", "[0.01, true]"])
def test_bad_grids_are_refused(grid: str) -> None:
    path = Registry().get_task_path("beta-sweep")
    with pytest.raises(TaskError, match=r"dynamics\.betas"):
        resolve(path, preset="quick", overrides=[f"dynamics.betas={grid}"])


def test_default_grid_when_none_is_given(tmp_path: Path) -> None:
    text = Registry().get_task_path("beta-sweep").read_text()
    own = tmp_path / "own.toml"
    own.write_text("\n".join(line for line in text.splitlines() if "betas" not in line))
    assert betas_of(resolve(own, preset="quick")[0]) == sorted(DEFAULT_BETAS)


def test_beta_sweep_slopes_on_the_toy_model(backend_name: str, tmp_path: Path) -> None:
    """Acceptance: float64, toy model at its fixed point, |β| from 1e-3 to 1e-1: fitted slope in
    [0.9, 1.1] one-sided (+β and −β) and in [1.8, 2.2] symmetric."""
    registry = Registry()
    spec = resolve(registry.get_task_path("beta-sweep"), preset="quick", overrides=[GRID])[0]
    assert (spec.model.setting, spec.dtype, spec.measure) == ("EB", "float64", ("beta-sweep",))
    batch = load_batch(spec, seed=0, dtype="float64", data_dir=None)
    backend = registry.get_backend(backend_name)
    record = run_measurement(
        "beta-sweep", spec, backend, batch, options=RunOptions(), folder=tmp_path, env={}
    )
    assert record["status"] == "ok", record.get("reason")
    assert record["measurement"] == "beta-sweep" and record["depth"] == 1
    m = record["metrics"]
    assert m["residual"] <= 1e-10 and m["betas"] == [0.001, 0.01, 0.1]
    for estimator in ("positive", "negative"):
        assert 0.9 <= m["slope"][estimator] <= 1.1, (estimator, m["error"][estimator])
        assert 0.9 <= m["slope_max"][estimator] <= 1.1
    assert 1.8 <= m["slope"]["symmetric"] <= 2.2, m["error"]["symmetric"]
    assert 1.8 <= m["slope_max"]["symmetric"] <= 2.2
    # the symmetric estimator beats the one-sided ones at every β, by a factor ≈ 1/β at small β
    for i in range(3):
        assert m["error"]["symmetric"][i] < m["error"]["positive"][i] / 5
    assert set(m["per_name"]["positive"]) == {"W0_1", "W0_x", "W1_x", "b0", "b1", "s0", "s1"}
    assert "slope" in format_record(record) and "β sweep" in overview([record])
