"""RTRL in JAX (`epbench_jax.network.rtrl`): forward-mode truncated gradient = BPTT's (float64),
offered exactly by the fully connected families (the `RtrlNetwork` capability)."""

from __future__ import annotations

import numpy as np
import pytest

from epbench.core.params import init_params
from epbench.core.protocols import RtrlNetwork
from epbench.core.spec import ConvSpec, ModelSpec
from epbench_jax.backend import JaxBackend

# name: (model, batch)
CASES = [
    ("toy", ModelSpec(setting="EB", inputs=5, sizes=(10, 50), input_to=(0, 1), epsilon=0.08), 1),
    ("P-20-30-10", ModelSpec(setting="P", inputs=20, sizes=(10, 30)), 20),
    ("P-20-30-10-asym", ModelSpec(setting="P", inputs=20, sizes=(10, 30), feedback_angle=45.0), 8),
]


@pytest.mark.parametrize(("model", "batch"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_rtrl_equals_the_truncated_bptt_gradient(model: ModelSpec, batch: int):
    """Σ_t ∇BPTT_θ(t) from one backward pass = RTRL's forward-in-time gradient, to 1e-10; K = 0
    gives zeros."""
    net = JaxBackend().build(model, dtype="float64", device="cpu")
    assert isinstance(net, RtrlNetwork)
    init = init_params(model, seed=4)
    rng = np.random.default_rng(0)
    x, labels = rng.random((batch, model.inputs)), rng.integers(0, model.outputs, batch)
    y = np.eye(model.outputs)[labels]
    params = net.load(init)
    s_tk, _ = net.free_phase(params, x, steps=48)
    want = {k: v.sum(0) for k, v in net.bptt_trace(params, x, y, start=s_tk, steps=12).items()}
    got = net.rtrl_gradient(params, x, y, start=s_tk, steps=12)
    assert got.keys() == init.keys()
    errors = {
        k: np.linalg.norm(got[k] - want[k]) / max(np.linalg.norm(want[k]), 1e-300) for k in got
    }
    assert max(errors.values()) < 1e-10, errors
    assert all(got[k].shape == init[k].shape and got[k].dtype == np.float64 for k in got)
    assert max(np.abs(v).max() for v in got.values()) > 0
    assert not any(v.any() for v in net.rtrl_gradient(params, x, y, start=s_tk, steps=0).values())


def test_conv_networks_offer_no_rtrl():
    conv = ConvSpec(input=(1, 10, 10), channels=(2, 3), kernel=3, pool=2)
    model = ModelSpec(setting="P", inputs=100, sizes=conv.sizes(5), conv=conv)
    net = JaxBackend().build(model, dtype="float64", device="cpu")
    assert not isinstance(net, RtrlNetwork) and "rtrl_gradient" not in dir(net)
