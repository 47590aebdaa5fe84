"""The gradient-flow measurement (epbench.measurements.gradient_flow) and the `FlowNetwork`
capability of both backends: the power-iteration spectral radius equals the largest |eigenvalue|
of a dense finite-difference Jacobian; at a stable fixed point BPTT's state gradients decay at
ρ per step (within 10 %); weights scaled up until the free phase stops converging are recorded as
non-convergent with a reason (status ok, exit 0) and GDU is not applicable there."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from epbench.cli import main
from epbench.core.params import init_params
from epbench.core.protocols import FlowNetwork, capabilities
from epbench.core.spec import ModelSpec
from epbench.measurements.gradient_flow import decay_rate, spectral_radius
from epbench.plugins.registry import Registry
from epbench.views.plots import gradient_flow_curves
from epbench.views.tables import overview

MODELS = {
    "P-sigm": ModelSpec(setting="P", inputs=5, sizes=(3, 6, 4), activation="sigm"),
    "EB-toy": ModelSpec(setting="EB", inputs=5, sizes=(4, 6), input_to=(0, 1), epsilon=0.08),
    "lstm": ModelSpec(setting="P", inputs=5, sizes=(3, 4, 2), cell="lstm"),
}
# A P model on toy data: scales 1 and 2 converge, 6 oscillates (a 2-cycle: no fixed point).
TASK = """\
measure = ["gradient-flow"]
dtype = "float64"
[model]
setting = "P"
inputs = 20
sizes = [10, 40]
activation = "tanh"
[dynamics]
T = 400
K = 40
beta = 0.001
[data]
source = "toy"
batch = 2
[variants.scale.x1]
model = { weight_scale = 1.0 }
[variants.scale.x2]
model = { weight_scale = 2.0 }
[variants.scale.x6]
model = { weight_scale = 6.0 }
"""


def dense_jacobian(net, params, x, at) -> np.ndarray:
    """∂F/∂s at `at` (batch 1) by central differences of one free step, states flattened."""
    s = net.states(at)
    names, sizes = list(s), [s[k].size for k in s]
    flat = np.concatenate([s[k].ravel() for k in names])

    def step(v: np.ndarray) -> np.ndarray:
        parts = np.split(v, np.cumsum(sizes)[:-1])
        start = [p.reshape(s[k].shape) for p, k in zip(parts, names, strict=True)]
        out = net.states(net.free_phase(params, x, steps=1, start=start)[0])
        return np.concatenate([out[k].ravel() for k in names])

    h, eye = 1e-6, np.eye(flat.size)
    return np.stack([(step(flat + h * e) - step(flat - h * e)) / (2 * h) for e in eye], axis=1)


@pytest.mark.parametrize("name", MODELS)
def test_spectral_radius_equals_the_dense_eigenvalues(backend_name: str, name: str) -> None:
    model = MODELS[name]
    net = Registry().get_backend(backend_name).build(model, dtype="float64", device="cpu")
    assert isinstance(net, FlowNetwork) and "flow" in capabilities(net)
    params = net.load(init_params(model, seed=3, dtype="float64"))
    x = np.random.default_rng(1).random((1, model.inputs))
    at, _ = net.free_phase(params, x, steps=300)
    want = float(np.max(np.abs(np.linalg.eigvals(dense_jacobian(net, params, x, at)))))
    shapes = {k: v.shape for k, v in net.states(at).items()}
    got = spectral_radius(net, params, x, at=at, shapes=shapes, seed=0)
    assert want > 0.05 and got == pytest.approx(want, rel=1e-3), (got, want)


def lines(path: Path) -> list[str]:
    """The lines of a records file."""
    return path.read_text().splitlines()


def test_decay_rate_fits_the_second_half_above_the_floor() -> None:
    assert decay_rate([3 * 0.5**t for t in range(20)]) == pytest.approx(0.5)
    noisy = [0.8**t if t < 30 else 1e-20 for t in range(60)]  # EP traces stuck at round-off
    assert decay_rate(noisy, relative_floor=1e-10) == pytest.approx(0.8)
    assert decay_rate([1.0, None, 0.5]) is None


def test_gradient_flow_cells_on_both_backends(tmp_path: Path, capsys) -> None:
    """Acceptance: exit 0; convergent cells: |BPTT rate − ρ| / ρ ≤ 10 %, EP's traces too, a GDU
    error; the scaled-up cell: not convergent with a reason, GDU not applicable."""
    task = tmp_path / "flow.toml"
    task.write_text(TASK)
    out = tmp_path / "results"
    code = main(
        ["run", str(task), "--backend", "torch,jax", "--out", str(out), "--executor", "inline"]
    )
    assert code == 0, capsys.readouterr().err
    records = [
        json.loads(line) for f in out.rglob("*.jsonl") for line in f.read_text().splitlines()
    ]
    assert len(records) == 6 and all(r["status"] == "ok" for r in records)
    for r in records:
        m = r["metrics"]
        if r["cell"].endswith("x6]"):
            assert not m["converged"] and m["why"].startswith("residual does not fall")
            assert m["gdu_error"] is None and m["ep_norm"] is None
        else:
            assert m["converged"] and m["why"] == "" and m["rho"] < 1
            assert m["rate_error"] <= 0.1 and abs(m["ep_rate"] / m["rho"] - 1) <= 0.1
            assert m["gdu_error"] is not None  # P setting: F only close to a gradient
    by_cell = {}
    for r in records:
        by_cell.setdefault(r["cell"], []).append(r["metrics"]["rho"])
    for rhos in by_cell.values():  # torch and jax agree
        assert rhos[0] == pytest.approx(rhos[1], rel=1e-6)
    assert "not convergent" not in overview(records) and "residual does not fall" in overview(
        records
    )
    pytest.importorskip("matplotlib")
    assert gradient_flow_curves(records) is not None


@pytest.mark.parametrize("scale", ["0", "-2", "nan"])
def test_bad_scales_exit_2_with_one_line(scale: str, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["run", "gradient-flow[model=toy,scale=x1]", "--set", f"model.weight_scale={scale}"]
    code = main(args)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "model.weight_scale" in err[0], err
