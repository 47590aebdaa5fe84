"""The convergence measurement (epbench.measurements.convergence): for EB-1h in float64 the GDU
error of EP against BPTT falls as the free phase gets longer, with the residual and the distance to
the fixed point, until it meets the floor β's bias sets; its grid, views, figure and bad grids."""

from __future__ import annotations

from itertools import pairwise
from pathlib import Path

import pytest

from epbench.cli import main
from epbench.config.tasks import resolve
from epbench.measurements.convergence import default_grid, grid_of
from epbench.measurements.inputs import load_batch
from epbench.plugins.registry import Registry
from epbench.run.matrix import run_measurement
from epbench.run.resolve import RunOptions
from epbench.views.plots import convergence_curves
from epbench.views.tables import format_record, overview

# EB-1h of the quick preset with 32 hidden units: the same ε, β and K, a shorter grid.
SMALL = ["model.sizes=[10, 32]", "dynamics.sweep_T=[3, 12, 48, 200, 800, 1600]"]


def test_default_grid_is_logarithmic_from_a_few_steps_to_4T() -> None:
    grid = default_grid(400)
    assert grid[0] == 2 and grid[-1] == 1600 and list(grid) == sorted(set(grid))
    ratios = [b / a for a, b in pairwise(grid)]
    assert max(ratios) / min(ratios) < 1.3  # evenly spaced in log T
    spec = resolve(Registry().get_task_path("convergence"), preset="quick")[0]
    assert grid_of(spec) == default_grid(spec.dynamics.T)


def test_eb_error_falls_with_the_residual_to_the_beta_floor(
    backend_name: str, tmp_path: Path
) -> None:
    """Acceptance: EB-1h, float64: the residual and the distance to s_ref fall along the grid,
    the relative error falls with them (within 1 % between neighbours) from ≫ 1 to the floor,
    which the two longest runs share (within 5 %) and which is small (β = 0.001: O(β))."""
    registry = Registry()
    path = registry.get_task_path("convergence")
    spec = resolve(path, preset="quick", selection={"model": "EB-1h"}, overrides=SMALL)[0]
    assert (spec.model.setting, spec.dtype) == ("EB", "float64")
    batch = load_batch(spec, seed=0, dtype="float64", data_dir=None)
    record = run_measurement(
        "convergence", spec, registry.get_backend(backend_name), batch, folder=tmp_path,
        options=RunOptions(), env={},
    )  # fmt: skip
    assert record["status"] == "ok", record.get("reason")
    m = record["metrics"]
    assert m["T"] == [3, 12, 48, 200, 800, 1600] and m["K"] == [3, 12, 40, 40, 40, 40]
    for key in ("residual", "distance", "error"):
        values = m[key]
        assert all(b <= a * 1.01 for a, b in pairwise(values)), (key, values)
    assert m["error"][0] > 100 * m["floor"]
    assert m["floor"] < 0.01 and abs(m["error"][-2] / m["floor"] - 1) < 0.05
    assert m["residual"][-1] < 1e-9 and m["update_cosine"][-1] > 0.999
    assert m["update_cosine"][0] < 0.9  # a free phase cut short: EP's update points elsewhere
    assert "rel. error" in format_record(record) and "convergence" in overview([record])
    pytest.importorskip("matplotlib")
    assert convergence_curves([record]) is not None


@pytest.mark.parametrize("grid", ["[0, 10]", "[-3]", "[2.5]", "5", "[]"])
def test_bad_grids_exit_2_with_one_line(grid: str, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(
        ["run", "convergence[model=toy]", "--preset", "quick", "--set", f"dynamics.sweep_T={grid}"]
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "dynamics.sweep_T" in err[0], err
    assert "a list of positive integers" in err[0] and "Traceback" not in err[0]
