"""The torch P-conv network against independent computations (docs/theory.md §3, "P-conv").

The reference here is the primitive function Φ written out with the pooling indices held fixed,
Φ = s⁰·(W0_1 vec(s¹) + b₀) + Σₙ sⁿ • P_idx(Wₙ ∗ sⁿ⁺¹ + bₙ), differentiated by autograd: the step is
σ(∂Φ/∂s), the EP update is built from ∂Φ/∂θ, BPTT is autograd through reference steps. None of the
backend's hand-written feedback (max-unpooling + transposed convolution) or correlations is reused.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from epbench_torch import TorchBackend

from epbench.core.errors import BackendError
from epbench.core.params import init_params, param_shapes, state_shapes
from epbench.core.spec import ConvSpec, ModelSpec


def conv_model(
    conv: ConvSpec, outputs: int = 5, activation: str = "hardsigm", clamp: bool = False
) -> ModelSpec:
    inputs = int(np.prod(conv.input))
    return ModelSpec(
        setting="P",
        inputs=inputs,
        sizes=conv.sizes(outputs),
        activation=activation,
        conv=conv,
        clamp=clamp,
    )


MODELS = {
    # two conv layers without padding (the paper's geometry, smaller)
    "2conv": conv_model(ConvSpec(input=(1, 10, 10), channels=(2, 3), kernel=3, pool=2)),
    # three conv layers with padding: a middle layer with both feed-forward and feedback convs
    "3conv-pad": conv_model(
        ConvSpec(input=(2, 16, 16), channels=(2, 3, 4), kernel=3, padding=1, pool=2),
        activation="tanh",
    ),
}


def setup(name: str, batch: int = 3, seed: int = 0, dtype: str = "float64"):
    model = MODELS[name]
    net = TorchBackend().build(model, dtype=dtype, device="cpu")
    numpy_params = init_params(model, seed=seed, dtype=dtype)
    rng = np.random.default_rng(seed + 1)
    x = rng.random((batch, model.inputs)).astype(dtype)
    y = np.eye(model.outputs, dtype=dtype)[rng.integers(0, model.outputs, batch)]
    return model, net, numpy_params, x, y


def random_states(model: ModelSpec, batch: int, seed: int = 2) -> list[torch.Tensor]:
    rng = np.random.default_rng(seed)
    shapes = state_shapes(model, batch).values()
    return [torch.tensor(rng.uniform(-0.3, 1.3, size=shape)) for shape in shapes]


# ---- the reference: Φ with fixed pooling indices, and autograd ------------------------------


def kernel(model: ModelSpec, theta: dict, n: int) -> torch.Tensor:
    return theta[f"W{n}_x"] if n == len(model.conv.channels) else theta[f"W{n}_{n + 1}"]


def indices(model: ModelSpec, theta: dict, img: torch.Tensor, s: list) -> list:
    """Argmax of every pooling window of Wₙ ∗ sⁿ⁺¹ at s (without the bias: it is constant per
    window), as flat positions in each pre-pooling map."""
    conv, depth = model.conv, len(model.conv.channels)
    out = [None]
    for n in range(1, depth + 1):
        below = img if n == depth else s[n + 1]
        z = F.conv2d(below.detach(), kernel(model, theta, n).detach(), padding=conv.padding)
        out.append(F.max_pool2d(z, conv.pool, return_indices=True)[1])
    return out


def phi(model: ModelSpec, theta: dict, img: torch.Tensor, s: list, idx: list) -> torch.Tensor:
    """Σ_b Φ(x_b, s_b, θ) with the pooling indices `idx` held fixed (docs/theory.md §3)."""
    conv, depth = model.conv, len(model.conv.channels)
    total = (s[0] * (s[1].flatten(1) @ theta["W0_1"].T + theta["b0"])).sum()
    for n in range(1, depth + 1):
        below = img if n == depth else s[n + 1]
        z = F.conv2d(below, kernel(model, theta, n), padding=conv.padding)
        z = z + theta[f"b{n}"].view(1, -1, 1, 1)
        pooled = z.flatten(2).gather(2, idx[n].flatten(2)).view_as(s[n])
        total = total + (s[n] * pooled).sum()
    return total


def rho(model: ModelSpec, v: torch.Tensor) -> torch.Tensor:
    return torch.clamp(v, 0.0, 1.0) if model.activation == "hardsigm" else torch.tanh(v)


def reference_step(model, theta, img, s, y=None, beta=0.0, create_graph=False):
    """s_{t+1} = σ(∂Φ/∂s(s_t)) with the indices at s_t, + β (y − s⁰) on the output."""
    leaves = [t if t.requires_grad else t.detach().requires_grad_(True) for t in s]
    idx = indices(model, theta, img, leaves)
    drives = torch.autograd.grad(phi(model, theta, img, leaves, idx), leaves, create_graph=True)
    new = [rho(model, h) for h in drives]
    if beta:
        new[0] = new[0] + beta * (y - s[0])
    return new if create_graph else [t.detach() for t in new]


def dphi_dtheta(model, theta, img, s) -> dict:
    """∂Φ/∂θ at s, batch-averaged, with the indices at s."""
    leaves = {k: v.detach().requires_grad_(True) for k, v in theta.items()}
    total = phi(model, leaves, img, s, indices(model, theta, img, s))
    grads = torch.autograd.grad(total, list(leaves.values()))
    return {k: g / img.shape[0] for k, g in zip(leaves, grads, strict=True)}


def torch_of(numpy_params: dict) -> dict:
    return {k: torch.tensor(v) for k, v in numpy_params.items()}


# ---- tests ------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(MODELS))
def test_step_is_sigma_of_the_gradient_of_phi(name):
    """One free and one nudged step against σ(∂Φ/∂s) (+ β (y − s⁰)) of the reference Φ."""
    model, net, numpy_params, x, y = setup(name)
    theta, img = torch_of(numpy_params), torch.tensor(x).view(3, *model.conv.input)
    start = random_states(model, 3)
    params = net.load(numpy_params)
    got, residual = net.free_phase(params, x, steps=1, start=tuple(start))
    want = reference_step(model, theta, img, start)
    for (key, a), b in zip(net.states(got).items(), want, strict=True):
        np.testing.assert_allclose(a, b.numpy(), rtol=1e-12, atol=1e-12, err_msg=key)
    diff = sum(float(((a - b) ** 2).sum()) for a, b in zip(start, want, strict=True))
    assert residual == pytest.approx(diff**0.5, rel=1e-10)
    beta = 0.3
    trace = net.ep_trace(params, x, y, start=tuple(start), beta=beta, steps=1)
    want = reference_step(model, theta, img, start, torch.tensor(y), beta)
    for n, (a, b) in enumerate(zip(start, want, strict=True)):
        expected = ((b - a) / beta).mean(0).numpy()
        np.testing.assert_allclose(trace[f"s{n}"][0], expected, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name", list(MODELS))
def test_ep_trace_telescopes_to_dphi(name):
    """Σ_t ΔEP_θ(β, t) = (∂Φ/∂θ(s^β_K) − ∂Φ/∂θ(s_0)) / β, ∂Φ/∂θ from autograd of the reference Φ,
    each at its own state's pooling indices; and it equals the `ep_step` update / lr."""
    model, net, numpy_params, x, y = setup(name)
    theta, img = torch_of(numpy_params), torch.tensor(x).view(3, *model.conv.input)
    T, K, beta = 30, 6, 0.2
    params = net.load(numpy_params)
    star, _ = net.free_phase(params, x, steps=T)
    trace = net.ep_trace(params, x, y, start=star, beta=beta, steps=K)
    s = list(star)
    for _ in range(K):
        s = reference_step(model, theta, img, s, torch.tensor(y), beta)
    hi, lo = dphi_dtheta(model, theta, img, s), dphi_dtheta(model, theta, img, list(star))
    lrs = {name: 0.1 * (i + 1) for i, name in enumerate(param_shapes(model))}
    new, loss, errors = net.ep_step(params, x, y, free_steps=T, steps=K, beta=beta, lrs=lrs)
    after = net.dump(new)
    for key, lr in lrs.items():
        want = ((hi[key] - lo[key]) / beta).numpy()
        assert np.abs(want).max() > 1e-6, key
        np.testing.assert_allclose(trace[key].sum(0), want, rtol=1e-9, atol=1e-12, err_msg=key)
        update = (after[key] - numpy_params[key]) / lr
        np.testing.assert_allclose(update, want, rtol=1e-8, atol=1e-11, err_msg=key)
    s0 = net.states(star)["s0"]
    assert float(loss) == pytest.approx(0.5 * ((s0 - y) ** 2).sum(1).mean(), rel=1e-12)
    assert int(errors) == int((s0.argmax(1) != y.argmax(1)).sum())


@pytest.mark.parametrize("name", list(MODELS))
def test_bptt_trace_is_the_per_step_gradient(name):
    """∇BPTT_θ(t) = ∂L/∂θ_{T−t} with a per-step copy of θ and ∇BPTT_s(t) = Σ_b ∂L/∂s_{T−t}, from
    autograd through K reference steps; `bptt_step` applies −lr · Σ_t ∇BPTT_θ(t)."""
    model, net, numpy_params, x, y = setup(name)
    img = torch.tensor(x).view(3, *model.conv.input)
    T, K = 30, 5
    params = net.load(numpy_params)
    mid, _ = net.free_phase(params, x, steps=T - K)
    trace = net.bptt_trace(params, x, y, start=mid, steps=K)
    copies = [
        {k: v.clone().requires_grad_(True) for k, v in torch_of(numpy_params).items()}
        for _ in range(K)
    ]
    s, history = [t.clone() for t in mid], []
    for theta in copies:
        s = reference_step(model, theta, img, s, create_graph=True)
        history.append(s)
    loss = 0.5 * ((s[0] - torch.tensor(y)) ** 2).sum() / 3
    leaves = [v for theta in copies for v in theta.values()] + [t for st in history for t in st]
    grads = torch.autograd.grad(loss, leaves, allow_unused=True, materialize_grads=True)
    names, layers = list(copies[0]), len(history[0])
    for k in range(K):  # step k produces s_{k+1} = s_{T−t}, t = K − 1 − k
        for i, key in enumerate(names):
            want = grads[k * len(names) + i].numpy()
            np.testing.assert_allclose(trace[key][K - 1 - k], want, rtol=1e-10, atol=1e-13)
        for n in range(layers):
            want = grads[K * len(names) + k * layers + n].sum(0).numpy()
            np.testing.assert_allclose(trace[f"s{n}"][K - 1 - k], want, rtol=1e-10, atol=1e-13)
    lrs = {key: 0.05 * (i + 1) for i, key in enumerate(names)}
    after = net.dump(net.bptt_step(net.load(numpy_params), x, y, free_steps=T, steps=K, lrs=lrs)[0])
    for key, lr in lrs.items():
        np.testing.assert_allclose(
            (numpy_params[key] - after[key]) / lr, trace[key].sum(0), rtol=1e-9, atol=1e-12
        )


def test_ties_go_to_the_first_window_position():
    """From s = 0 every window of W ∗ s is tied; the feedback must come from the first (top-left)
    position of each window, as the jax backend does (module doc of epbench_torch.conv)."""
    model, net, numpy_params, x, _ = setup("2conv", batch=1)
    params = net.load(numpy_params)
    zero = tuple(torch.zeros(1, *shape[1:]) for shape in state_shapes(model, 1).values())
    s1 = zero[1].clone()
    s1[0, 1, 0, 0] = 1.0  # one unit of layer 1 (channel 1): its window of s² is all zeros
    start = (zero[0], s1, zero[2])
    new, _ = net.free_phase(params, x, steps=1, start=start)
    # Layer 2 gets convᵀ of a single 1 placed at position (0, 0) of the 2×2 pre-pool map.
    k = params["W1_2"][1]  # (C₂, 3, 3): unit at (0, 0) reaches s² rows/cols 0 … 2
    img = torch.tensor(x).view(1, *model.conv.input)
    u = F.max_pool2d(F.conv2d(img, params["W2_x"]), 2) + params["b2"].view(1, -1, 1, 1)
    want = torch.clamp(u[0] + F.pad(k, (0, 1, 0, 1)), 0.0, 1.0)
    np.testing.assert_allclose(net.states(new)["s2"][0], want.numpy(), rtol=1e-12)


def test_float32_runs_and_predicts():
    _, net, numpy_params, x, _ = setup("2conv", dtype="float32")
    params = net.load(numpy_params)
    s, residual = net.free_phase(params, x, steps=20)
    states = net.states(s)
    assert all(v.dtype == np.float32 for v in states.values())
    assert [v.shape for v in states.values()] == [(3, 5), (3, 3, 1, 1), (3, 2, 4, 4)]
    np.testing.assert_array_equal(net.predict(params, x, steps=20), states["s0"].argmax(1))
    assert np.isfinite(residual)


def test_inconsistent_conv_model_is_refused():
    conv = MODELS["2conv"].conv
    with pytest.raises(BackendError, match="sizes = \\(5, 3, 32\\)"):
        TorchBackend().build(
            ModelSpec(setting="P", inputs=100, sizes=(5, 3, 30), conv=conv),
            dtype="float64",
            device="cpu",
        )
    assert "P setting only" in TorchBackend().supports(
        ModelSpec(setting="EB", inputs=100, sizes=(5, 3, 32), conv=conv),
        dtype="float64",
        device="cpu",
    )


@pytest.mark.parametrize(
    ("conv", "extra"),
    [
        (ConvSpec(input=(1, 10, 10), channels=(3,), kernel=3, pool=2), {"activation": "sigm"}),
        (ConvSpec(input=(1, 14, 14), channels=(3, 4), kernel=3, pool=2), {"clamp": True}),
        (
            ConvSpec(input=(2, 16, 16), channels=(2, 3, 4), kernel=3, padding=1, pool=2),
            {"activation": "tanh", "clamp": True},
        ),
    ],
    ids=["1conv-sigm", "2conv-clamp", "3conv-pad-tanh-clamp"],
)
def test_written_out_bptt_step_equals_autograd(conv: ConvSpec, extra: dict) -> None:
    """`bptt_step` differentiates the K steps with one parameter copy; `bptt_trace` with a copy per
    step. One conv layer, sigm, the clamp: Σ_t of the trace is the step's gradient."""
    model = conv_model(conv, **extra)
    net = TorchBackend().build(model, dtype="float64", device="cpu")
    start = init_params(model, seed=2, dtype="float64")
    rng = np.random.default_rng(0)
    x = rng.random((3, model.inputs))
    y = np.eye(model.outputs)[rng.integers(0, model.outputs, 3)]
    T, K = 15, 6
    mid, _ = net.free_phase(net.load(start), x, steps=T - K)
    trace = net.bptt_trace(net.load(start), x, y, start=mid, steps=K)
    lrs = dict.fromkeys(param_shapes(model), 0.5)
    after = net.dump(net.bptt_step(net.load(start), x, y, free_steps=T, steps=K, lrs=lrs)[0])
    for key in start:
        want = trace[key].sum(0)
        assert np.linalg.norm(want) > 0, key
        np.testing.assert_allclose((start[key] - after[key]) / 0.5, want, rtol=1e-9, atol=1e-12)
