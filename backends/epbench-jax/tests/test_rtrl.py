"""RTRL in JAX (`epbench_jax.rtrl`): forward-mode truncated gradient = BPTT's (float64)."""

from __future__ import annotations

import numpy as np
import pytest

from epbench.core.params import init_params
from epbench.core.spec import ModelSpec
from epbench_jax.backend import JaxBackend
from epbench_jax.rtrl import JaxRtrlNetwork

MODELS = {
    "toy": (ModelSpec(setting="EB", inputs=5, sizes=(10, 50), input_to=(0, 1), epsilon=0.08), 1),
    "P-20-30-10": (ModelSpec(setting="P", inputs=20, sizes=(10, 30)), 20),
    "P-20-30-10-asym": (ModelSpec(setting="P", inputs=20, sizes=(10, 30), feedback_angle=45.0), 8),
}
T, K = 60, 12


def rel(a, b) -> float:
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-300))


@pytest.mark.parametrize("name", list(MODELS))
def test_rtrl_equals_the_truncated_bptt_gradient(name):
    """Σ_t ∇BPTT_θ(t) from one backward pass = RTRL's forward-in-time gradient, to 1e-10."""
    model, batch = MODELS[name]
    net = JaxBackend().build(model, dtype="float64", device="cpu")
    assert hasattr(net, "rtrl_gradient")
    assert isinstance(net, JaxRtrlNetwork)
    params = init_params(model, seed=4)
    rng = np.random.default_rng(0)
    x = rng.random((batch, model.inputs))
    y = np.eye(model.outputs)[rng.integers(0, model.outputs, batch)]
    p = net.load(params)
    mid, _ = net.free_phase(p, x, steps=T - K)
    bptt = net.bptt_trace(p, x, y, start=mid, steps=K)
    rtrl = net.rtrl_gradient(p, x, y, start=mid, steps=K)
    assert set(rtrl) == set(params)
    for key, value in rtrl.items():
        assert value.shape == params[key].shape and value.dtype == np.float64
        assert rel(value, bptt[key].sum(0)) < 1e-10, key
    assert any(np.abs(v).max() > 0 for v in rtrl.values())
    zero = net.rtrl_gradient(p, x, y, start=mid, steps=0)
    assert all(not v.any() for v in zero.values())
