"""The standard RNN baselines of each built-in backend (its `rnn.py`): the truncated BPTT gradient
of a training step equals central finite differences of the loss, the per-step traces sum to it,
and EP is refused with a one-line reason (float64, tiny models)."""

from __future__ import annotations

import numpy as np
import pytest

from epbench.core.errors import BackendError
from epbench.core.params import init_params, learning_rates
from epbench.core.spec import ModelSpec
from epbench.plugins.registry import Registry

MODELS = {
    cell: ModelSpec(setting="P", inputs=4, sizes=(3, 5, 2), activation="tanh", cell=cell)
    for cell in ("rnn", "lstm")
}
T = 6
BACKENDS = ("torch", "jax")


def _backend(name: str):
    backends = Registry().get_backends()
    if name not in backends:
        pytest.skip(f"the {name} backend is not installed")
    return backends[name]


def _data(model: ModelSpec) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(3)
    return rng.random((4, model.inputs)), np.eye(model.outputs)[[0, 1, 2, 1]]


@pytest.mark.parametrize("name", BACKENDS)
@pytest.mark.parametrize("cell", MODELS)
def test_bptt_gradient_equals_finite_differences(name: str, cell: str):
    """With K = T (no truncation) a step with every learning rate 1 moves θ by −∂L/∂θ, L the loss
    after T steps from zero; central differences (h = 1e-6) agree to a relative 1e-6."""
    model = MODELS[cell]
    net = _backend(name).build(model, dtype="float64", device="cpu")
    init = init_params(model, seed=2)
    x, y = _data(model)
    lrs = learning_rates(model, (1.0,) * len(model.sizes))
    new = net.dump(net.bptt_step(net.load(init), x, y, free_steps=T, steps=T, lrs=lrs)[0])

    def loss(params: dict[str, np.ndarray]) -> float:
        s0 = net.states(net.free_phase(net.load(params), x, steps=T)[0])["s0"]
        return 0.5 * float(np.sum((s0 - y) ** 2)) / len(x)

    for name, value in init.items():
        fd = np.zeros_like(value)
        for i in np.ndindex(value.shape):
            up, down = dict(init), dict(init)
            up[name], down[name] = value.copy(), value.copy()
            up[name][i] += 1e-6
            down[name][i] -= 1e-6
            fd[i] = (loss(up) - loss(down)) / 2e-6
        grad = init[name] - new[name]
        assert np.linalg.norm(grad - fd) <= 1e-6 * np.linalg.norm(fd), name


@pytest.mark.parametrize("name", BACKENDS)
@pytest.mark.parametrize("cell", MODELS)
def test_traces_sum_to_the_truncated_gradient(name: str, cell: str):
    """Σ_t ∇BPTT_θ(t) of `bptt_trace` from s_{T−K} = the gradient of a step truncated to K."""
    model = MODELS[cell]
    net = _backend(name).build(model, dtype="float64", device="cpu")
    init = init_params(model, seed=5)
    x, y = _data(model)
    params = net.load(init)
    start, _ = net.free_phase(params, x, steps=T - 3)
    traces = net.bptt_trace(params, x, y, start=start, steps=3)
    lrs = learning_rates(model, (1.0,) * len(model.sizes))
    new = net.dump(net.bptt_step(net.load(init), x, y, free_steps=T, steps=3, lrs=lrs)[0])
    assert {k: v.shape[0] for k, v in traces.items()} == dict.fromkeys(traces, 3)
    for name in init:
        np.testing.assert_allclose(traces[name].sum(0), init[name] - new[name], atol=1e-13)


@pytest.mark.parametrize("name", BACKENDS)
def test_ep_is_refused_with_a_reason(name: str):
    model = MODELS["rnn"]
    net = _backend(name).build(model, dtype="float64", device="cpu")
    params = net.load(init_params(model, seed=0))
    x, y = _data(model)
    start, _ = net.free_phase(params, x, steps=T)
    with pytest.raises(BackendError, match=r"EP is not defined for model\.cell = 'rnn'"):
        net.ep_trace(params, x, y, start=start, beta=0.1, steps=2)
