"""The GDU theorem (docs/theory.md §2) as tests, on every installed backend.

Toy model and mnist-fc EB-1h, float64, tanh, no clamping, first phase at its fixed point
(residual ≤ 1e-10): ΔEP(β, t) → −∇BPTT(t) with error ≤ 1e-3 at β = 1e-4, shrinking linearly in β
one-sided (error ratio between β = 1e-2 and 1e-3 in [5, 20]) and quadratically for the symmetric
estimator (ratio ≥ 50), for every parameter and every layer's neuron trace.
"""

from __future__ import annotations

import numpy as np
import pytest

from epbench.config.tasks import resolve
from epbench.core.metrics import relative_error
from epbench.core.params import init_params
from epbench.measurements.inputs import load_batch
from epbench.plugins.registry import Registry

CELLS = {
    "toy": ("toy", {}),
    "mnist-fc[model=EB-1h]": ("mnist-fc", {"model": "EB-1h"}),
}


def gdu_errors(backend_name: str, task: str, selection: dict) -> dict:
    registry = Registry()
    spec = resolve(registry.get_task_path(task), selection=selection, preset="paper")[0]
    assert (spec.model.setting, spec.model.activation, spec.model.clamp) == ("EB", "tanh", False)
    x, y = load_batch(spec, seed=0, dtype="float64", data_dir=None)
    net = registry.get_backend(backend_name).build(spec.model, dtype="float64", device="cpu")
    params = net.load(init_params(spec.model, seed=0, dtype="float64"))
    T, K = spec.dynamics.T, spec.dynamics.K
    mid, _ = net.free_phase(params, x, steps=T - K)
    star, residual = net.free_phase(params, x, steps=K, start=mid)
    assert residual <= 1e-10, f"first phase not at its fixed point: residual {residual:.2e}"
    bptt = net.bptt_trace(params, x, y, start=mid, steps=K)
    errors = {}
    for beta in (1e-2, 1e-3, 1e-4):
        for symmetric in (False, True):
            ep = net.ep_trace(params, x, y, start=star, beta=beta, steps=K, symmetric=symmetric)
            errors[beta, symmetric] = {name: relative_error(bptt[name], ep[name]) for name in bptt}
    return errors


@pytest.mark.parametrize("cell", list(CELLS))
def test_gdu_theorem(backend_name: str, cell: str, request: pytest.FixtureRequest) -> None:
    task, selection = CELLS[cell]
    if task == "mnist-fc":
        request.getfixturevalue("mnist_available")
    errors = gdu_errors(backend_name, task, selection)
    names = list(errors[1e-4, False])
    assert any(n.startswith("s") for n in names) and any(n.startswith("W") for n in names)
    for name in names:
        one = [errors[b, False][name] for b in (1e-2, 1e-3, 1e-4)]
        sym = [errors[b, True][name] for b in (1e-2, 1e-3)]
        assert one[2] <= 1e-3, f"{name}: error {one[2]:.2e} at β = 1e-4"
        assert 5 <= one[0] / one[1] <= 20, f"{name}: one-sided errors {one} not linear in β"
        assert sym[0] / sym[1] >= 50, f"{name}: symmetric errors {sym} not quadratic in β"
        assert np.isfinite(one).all()
