"""RTRL in torch (`epbench_torch.network.rtrl`): forward-mode truncated gradient = BPTT's, offered
exactly by the fully connected families (the `RtrlNetwork` capability)."""

from __future__ import annotations

import numpy as np
import pytest
from epbench_torch import TorchBackend

from epbench.core.params import init_params
from epbench.core.protocols import RtrlNetwork
from epbench.core.spec import ConvSpec, ModelSpec

MODELS = {
    "toy": (ModelSpec(setting="EB", inputs=5, sizes=(10, 50), input_to=(0, 1), epsilon=0.08), 1),
    "P-20-30-10": (ModelSpec(setting="P", inputs=20, sizes=(10, 30)), 20),
    "P-20-30-10-asym": (ModelSpec(setting="P", inputs=20, sizes=(10, 30), feedback_angle=45.0), 8),
    "EB-2h-sigm-clamp": (
        ModelSpec(setting="EB", inputs=6, sizes=(4, 7, 5), activation="sigm", clamp=True),
        3,
    ),
}
T, K = 60, 12


def rel(a, b) -> float:
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-300))


def gradients(name: str, dtype: str, steps: int = K):
    """(RTRL's gradient, Σ_t of the BPTT trace, the initial parameters) after T − K free steps."""
    model, batch = MODELS[name]
    net = TorchBackend().build(model, dtype=dtype, device="cpu")
    assert isinstance(net, RtrlNetwork)
    params = init_params(model, seed=4, dtype=dtype)
    rng = np.random.default_rng(0)
    x = rng.random((batch, model.inputs)).astype(dtype)
    y = np.eye(model.outputs, dtype=dtype)[rng.integers(0, model.outputs, batch)]
    p = net.load(params)
    mid, _ = net.free_phase(p, x, steps=T - K)
    bptt = net.bptt_trace(p, x, y, start=mid, steps=steps)
    return net.rtrl_gradient(p, x, y, start=mid, steps=steps), bptt, params


@pytest.mark.parametrize("name", list(MODELS))
def test_rtrl_equals_the_truncated_bptt_gradient(name):
    """Σ_t ∇BPTT_θ(t) from one backward pass = RTRL's forward-in-time gradient, to 1e-10."""
    rtrl, bptt, params = gradients(name, "float64")
    assert set(rtrl) == set(params)
    for key, value in rtrl.items():
        assert value.shape == params[key].shape
        assert rel(value, bptt[key].sum(0)) < 1e-10, key
    assert any(np.abs(v).max() > 0 for v in rtrl.values())


def test_rtrl_zero_steps_and_float32():
    zero, _, _ = gradients("P-20-30-10", "float32", steps=0)
    assert all(not v.any() and v.dtype == np.float32 for v in zero.values())
    rtrl, bptt, _ = gradients("P-20-30-10", "float32")
    for key, value in rtrl.items():
        assert value.dtype == np.float32
        assert rel(value, bptt[key].sum(0)) < 1e-4, key


def test_conv_networks_offer_no_rtrl():
    conv = ConvSpec(input=(1, 10, 10), channels=(2, 3), kernel=3, pool=2)
    model = ModelSpec(setting="P", inputs=100, sizes=conv.sizes(5), conv=conv)
    net = TorchBackend().build(model, dtype="float64", device="cpu")
    assert not isinstance(net, RtrlNetwork) and "rtrl_gradient" not in dir(net)
