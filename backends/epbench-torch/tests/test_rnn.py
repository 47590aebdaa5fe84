"""The standard RNN baselines in torch (`epbench_torch.rnn`): the truncated BPTT gradient of a
training step equals central finite differences of the loss, the per-step traces sum to it, and
EP is refused with a one-line reason (float64, tiny models)."""

from __future__ import annotations

import numpy as np
import pytest
from epbench_torch.backend import TorchBackend as Backend

from epbench.core.errors import BackendError
from epbench.core.params import init_params, learning_rates
from epbench.core.spec import ModelSpec

MODELS = {
    cell: ModelSpec(setting="P", inputs=4, sizes=(3, 5, 2), activation="tanh", cell=cell)
    for cell in ("rnn", "lstm")
}
T = 6


def _data(model: ModelSpec) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(3)
    return rng.random((4, model.inputs)), np.eye(model.outputs)[[0, 1, 2, 1]]


@pytest.mark.parametrize("cell", MODELS)
def test_bptt_gradient_equals_finite_differences(cell: str):
    """With K = T (no truncation) a step with every learning rate 1 moves θ by −∂L/∂θ, L the loss
    after T steps from zero; central differences (h = 1e-6) agree to a relative 1e-6."""
    model = MODELS[cell]
    net = Backend().build(model, dtype="float64", device="cpu")
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


@pytest.mark.parametrize("cell", MODELS)
def test_traces_sum_to_the_truncated_gradient(cell: str):
    """Σ_t ∇BPTT_θ(t) of `bptt_trace` from s_{T−K} = the gradient of a step truncated to K."""
    model = MODELS[cell]
    net = Backend().build(model, dtype="float64", device="cpu")
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


def test_ep_is_refused_with_a_reason():
    model = MODELS["rnn"]
    net = Backend().build(model, dtype="float64", device="cpu")
    params = net.load(init_params(model, seed=0))
    x, y = _data(model)
    start, _ = net.free_phase(params, x, steps=T)
    with pytest.raises(BackendError, match=r"EP is not defined for model\.cell = 'rnn'"):
        net.ep_trace(params, x, y, start=start, beta=0.1, steps=2)


@pytest.mark.parametrize("cell", MODELS)
def test_a_step_is_what_the_torch_cells_compute(cell: str):
    """Each layer of `epbench_torch.rnn.step` equals `torch.nn.RNNCell` / `LSTMCell` with the
    canonical weights (bias_hh = 0) and the read-out a `torch.nn.Linear`, to rounding."""
    import torch
    from epbench_torch.rnn import projection, step
    from torch.func import functional_call

    model = MODELS[cell]
    init = {k: torch.tensor(v) for k, v in init_params(model, seed=1).items()}
    x = torch.tensor(_data(model)[0])
    rng = np.random.default_rng(4)
    widths = [w * (2 if n and cell == "lstm" else 1) for n, w in enumerate(model.sizes)]
    s = tuple(torch.tensor(rng.standard_normal((4, w))) for w in widths)
    got = step(model, init, projection(model, init, x), s)
    kind = torch.nn.LSTMCell if cell == "lstm" else torch.nn.RNNCell
    a = x
    for n in (2, 1):
        below = "W2_x" if n == 2 else "W1_2"
        module = kind(a.shape[1], model.sizes[n], dtype=torch.float64)
        weights = {
            "weight_ih": init[below], "weight_hh": init[f"W{n}_{n}"],
            "bias_ih": init[f"b{n}"], "bias_hh": torch.zeros_like(init[f"b{n}"]),
        }  # fmt: skip
        w = model.sizes[n]
        hx = (s[n][:, :w], s[n][:, w:]) if cell == "lstm" else s[n]
        out = functional_call(module, weights, (a, hx))
        want = torch.cat(out, dim=1) if cell == "lstm" else out
        torch.testing.assert_close(got[n], want, rtol=1e-13, atol=1e-14)
        a = out[0] if cell == "lstm" else out
    readout = functional_call(
        torch.nn.Linear(3, 5, dtype=torch.float64), {"weight": init["W0_1"], "bias": init["b0"]}, a
    )
    torch.testing.assert_close(got[0], readout, rtol=1e-13, atol=1e-14)
