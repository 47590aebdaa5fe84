"""The torch network against independent formulas: the EB step from autograd of the Hopfield energy,
the P step written out, BPTT traces against a plain autograd run, EP traces against `ep_step`, and
the GDU theorem (docs/theory.md §1-§3)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
from epbench_torch import TorchBackend

from epbench.core.params import init_params, param_shapes
from epbench.core.spec import ModelSpec

# A small layered net with 2 hidden layers, the input feeding the output and the last layer.
EB = ModelSpec(setting="EB", inputs=4, sizes=(3, 6, 5), input_to=(0, 2), epsilon=0.2)
P = ModelSpec(setting="P", inputs=4, sizes=(3, 6, 5), input_to=(0, 2))


def build(model: ModelSpec, dtype: str = "float64", seed: int = 0, scale: float = 1.0):
    net = TorchBackend().build(model, dtype=dtype, device="cpu")
    numpy_params = {k: v * scale for k, v in init_params(model, seed=seed, dtype=dtype).items()}
    return net, numpy_params


def batch(model: ModelSpec, size: int, seed: int = 1):
    rng = np.random.default_rng(seed)
    x = rng.uniform(size=(size, model.inputs))
    y = np.eye(model.outputs)[rng.integers(model.outputs, size=size)]
    return x, y


def random_states(model: ModelSpec, size: int, low: float, high: float, seed: int = 2):
    rng = np.random.default_rng(seed)
    return [rng.uniform(low, high, size=(size, width)) for width in model.sizes]


# ---- an independent reference implementation (float64 torch, no code shared with the backend) ----


def rho(name: str, v: torch.Tensor) -> torch.Tensor:
    if name == "tanh":
        return torch.tanh(v)
    if name == "sigm":
        return 1.0 / (1.0 + torch.exp(-4.0 * (v - 0.5)))
    return torch.clamp(v, 0.0, 1.0)


def energy(model: ModelSpec, theta: dict, x: torch.Tensor, s: list) -> torch.Tensor:
    """Σ_b E(s_b), the Hopfield energy of docs/theory.md §3."""
    r = [rho(model.activation, t) for t in s]
    e = sum(0.5 * (t**2).sum() for t in s)
    for n in range(model.depth):
        e = e - torch.einsum("bi,ij,bj->", r[n], theta[f"W{n}_{n + 1}"], r[n + 1])
    for n in model.input_layers:
        e = e - torch.einsum("bi,ij,bj->", r[n], theta[f"W{n}_x"], rho(model.activation, x))
    return e - sum((r[n] * theta[f"b{n}"]).sum() for n in range(len(s)))


def reference_step(model, theta, x, s, y=None, beta=0.0, create_graph=False):
    """One step of docs/theory.md §3: EB s − ε ∂E/∂s (+ εβ (y − s⁰)); P σ(∂Φ/∂s) (+ β (y − s⁰))."""
    if model.setting == "EB":
        leaves = [t if t.requires_grad else t.detach().requires_grad_(True) for t in s]
        grads = torch.autograd.grad(energy(model, theta, x, leaves), leaves, create_graph=True)
        new = [t - model.epsilon * g for t, g in zip(leaves, grads, strict=True)]
        scale = model.epsilon
    else:
        new = []
        for n in range(len(s)):
            h = theta[f"b{n}"] + 0 * s[n]
            if n < model.depth:
                h = h + s[n + 1] @ theta[f"W{n}_{n + 1}"].T
            if n > 0:
                h = h + s[n - 1] @ theta[f"W{n - 1}_{n}"]
            if n in model.input_layers:
                h = h + x @ theta[f"W{n}_x"].T
            new.append(rho(model.activation, h))
        scale = 1.0
    if beta:
        new[0] = new[0] + scale * beta * (y - s[0])
    if model.clamp:
        new = [t.clamp(0.0, 1.0) for t in new]
    return new if create_graph else [t.detach() for t in new]


def as_torch(arrays):
    if isinstance(arrays, dict):
        return {k: torch.tensor(v, dtype=torch.float64) for k, v in arrays.items()}
    return [torch.tensor(v, dtype=torch.float64) for v in arrays]


# ---- one step --------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("model", [EB, P], ids=["EB", "P"])
@pytest.mark.parametrize("act", ["tanh", "sigm", "hardsigm"])
def test_step_matches_reference(model, act, dtype):
    """EB: F = ∂Φ_ε/∂s exactly (autograd of E); P: σ(∂Φ/∂s); free and nudged (via the EP trace)."""
    model = replace(model, activation=act)
    net, numpy_params = build(model, dtype, scale=2.0)
    params = net.load(numpy_params)
    x, y = batch(model, 3)
    start = random_states(model, 3, -0.4, 1.3)  # hardsigm: away from the kinks at 0 and 1
    theta, xt, yt, s = as_torch(numpy_params), *as_torch([x, y]), as_torch(start)
    tol = dict(rtol=1e-5, atol=1e-5) if dtype == "float32" else dict(rtol=1e-12, atol=1e-12)
    tol_nudged = dict(rtol=1e-4, atol=1e-4) if dtype == "float32" else dict(rtol=1e-9, atol=1e-9)

    native = tuple(torch.tensor(t, dtype=getattr(torch, dtype)) for t in start)
    got, residual = net.free_phase(params, x, steps=1, start=native)
    want = reference_step(model, theta, xt, s)
    for n, (a, b) in enumerate(zip(net.states(got).values(), want, strict=True)):
        assert a.dtype == np.dtype(dtype)
        np.testing.assert_allclose(a, b.numpy(), **tol, err_msg=f"s{n}")
    diff = np.sqrt(sum(((b - a).numpy() ** 2).sum() for a, b in zip(s, want, strict=True)))
    assert residual == pytest.approx(float(diff), rel=1e-4)

    beta = 0.3
    trace = net.ep_trace(params, x, y, start=native, beta=beta, steps=1)
    want = reference_step(model, theta, xt, s, yt, beta)
    beta_eff = beta * (model.epsilon if model.setting == "EB" else 1.0)
    for n in range(len(model.sizes)):
        expected = ((want[n] - s[n]) / beta_eff).mean(0).numpy()
        np.testing.assert_allclose(trace[f"s{n}"][0], expected, **tol_nudged)


def test_input_projection_from_zero():
    """From s = 0 with tanh (ρ(0) = 0, ρ'(0) = 1) one EB step gives sⁿ = ε (ρ(x) W{n}_xᵀ + bₙ) on
    the input layers and ε bₙ elsewhere: the static projection is used, on the right layers."""
    model = ModelSpec(setting="EB", inputs=5, sizes=(10, 50), input_to=(0, 1), epsilon=0.08)
    net, numpy_params = build(model)
    x, _ = batch(model, 2)
    got = net.states(net.free_phase(net.load(numpy_params), x, steps=1)[0])
    for n in range(2):
        want = 0.08 * (np.tanh(x) @ numpy_params[f"W{n}_x"].T + numpy_params[f"b{n}"])
        np.testing.assert_allclose(got[f"s{n}"], want, rtol=1e-12)
    layered, layered_params = build(EB)
    got = layered.states(layered.free_phase(layered.load(layered_params), x[:, :4], steps=1)[0])
    np.testing.assert_allclose(got["s1"], 0.2 * np.broadcast_to(layered_params["b1"], (2, 6)))


@pytest.mark.parametrize("setting", ["EB", "P"])
def test_clamp(setting):
    """With `clamp`, every state is clipped to [0, 1] after each step, free and nudged."""
    clamped = replace(EB if setting == "EB" else P, activation="sigm", clamp=True)
    free = replace(clamped, clamp=False)
    net, numpy_params = build(clamped, scale=8.0)
    ref, _ = build(free)
    params, ref_params = net.load(numpy_params), ref.load(numpy_params)
    x, y = batch(clamped, 1)
    start = tuple(torch.tensor(t) for t in random_states(clamped, 1, -0.5, 1.5))
    got = net.states(net.free_phase(params, x, steps=1, start=start)[0])
    want = ref.states(ref.free_phase(ref_params, x, steps=1, start=start)[0])
    for name in got:
        np.testing.assert_allclose(got[name], np.clip(want[name], 0.0, 1.0), rtol=1e-12)
    # Nudged by a large β: s_1 = s_0 + β_eff ΔEP_s(β, 0) (batch of one).
    beta = 3.0
    beta_eff = beta * clamped.epsilon
    got = net.ep_trace(params, x, y, start=start, beta=beta, steps=1)
    want = ref.ep_trace(ref_params, x, y, start=start, beta=beta, steps=1)
    outside = False
    for n, s in enumerate(start):
        unclamped = s[0].numpy() + beta_eff * want[f"s{n}"][0]
        outside |= bool(((unclamped < 0) | (unclamped > 1)).any())
        np.testing.assert_allclose(
            s[0].numpy() + beta_eff * got[f"s{n}"][0], np.clip(unclamped, 0, 1), atol=1e-12
        )
    assert outside  # the clamp had work to do
    s, _ = net.free_phase(params, x, steps=30)
    for name, value in net.states(s).items():
        assert value.min() >= 0.0 and value.max() <= 1.0, name


# ---- traces against independent computations -------------------------------------------------


@pytest.mark.parametrize("act", ["tanh", "sigm"])
@pytest.mark.parametrize("model", [EB, P], ids=["EB", "P"])
def test_bptt_trace_against_plain_autograd(model, act):
    """Σ_t ∇BPTT_θ(t) is the gradient of the loss truncated to K steps (a plain autograd run of the
    reference step), and ∇BPTT_s(t) = Σ_b ∂L/∂s_{T−t} for every t."""
    model = replace(model, activation=act)
    net, numpy_params = build(model, scale=1.5)
    params = net.load(numpy_params)
    x, y = batch(model, 3)
    K = 6
    start = random_states(model, 3, 0.0, 1.0)
    trace = net.bptt_trace(params, x, y, start=tuple(as_torch(start)), steps=K)

    theta = {k: v.requires_grad_(True) for k, v in as_torch(numpy_params).items()}
    xt, yt = as_torch([x, y])
    s, history = as_torch(start), []
    for _ in range(K):
        s = reference_step(model, theta, xt, s, create_graph=True)
        history.append(s)
    loss = 0.5 * ((s[0] - yt) ** 2).sum() / 3
    flat = [t for st in history for t in st]
    grads = torch.autograd.grad(loss, [*theta.values(), *flat], allow_unused=True)
    for name, g in zip(theta, grads[: len(theta)], strict=True):
        assert trace[name].shape == (K, *param_shapes(model)[name])
        np.testing.assert_allclose(trace[name].sum(0), g.numpy(), rtol=1e-10, atol=1e-13)
    state_grads = grads[len(theta) :]
    layers = len(model.sizes)
    for k in range(K):  # history[k] = s_{k+1} = s_{T−t} with t = K − 1 − k
        for n in range(layers):
            g = state_grads[k * layers + n]
            want = np.zeros(model.sizes[n]) if g is None else g.sum(0).numpy()
            np.testing.assert_allclose(trace[f"s{n}"][K - 1 - k], want, rtol=1e-10, atol=1e-13)
    np.testing.assert_allclose(trace["s0"][0], ((s[0] - yt).sum(0) / 3).detach().numpy())


@pytest.mark.parametrize("symmetric", [False, True])
@pytest.mark.parametrize("model", [EB, P], ids=["EB", "P"])
def test_ep_trace_sums_to_ep_step(model, symmetric):
    """Σ_t ΔEP_θ(β, t) equals the update `ep_step` applies divided by the learning rate."""
    net, numpy_params = build(model)
    x, y = batch(model, 4)
    T, K, beta = 40, 7, 0.2
    params = net.load(numpy_params)
    s, _ = net.free_phase(params, x, steps=T)
    trace = net.ep_trace(params, x, y, start=s, beta=beta, steps=K, symmetric=symmetric)
    lrs = {name: 0.1 * (i + 1) for i, name in enumerate(param_shapes(model))}
    new, loss, errors = net.ep_step(
        params, x, y, free_steps=T, steps=K, beta=beta, lrs=lrs, symmetric=symmetric
    )
    assert new is params  # updated in place
    after = net.dump(new)
    for name, lr in lrs.items():
        update = (after[name] - numpy_params[name]) / lr
        assert np.abs(update).max() > 1e-6
        np.testing.assert_allclose(trace[name].sum(0), update, rtol=1e-7, atol=1e-10)
    s0 = net.states(s)["s0"]
    assert loss.shape == () and errors.shape == ()
    assert float(loss) == pytest.approx(0.5 * ((s0 - y) ** 2).sum(1).mean(), rel=1e-12)
    assert int(errors) == int((s0.argmax(1) != y.argmax(1)).sum())


@pytest.mark.parametrize("model", [EB, P], ids=["EB", "P"])
def test_bptt_step_applies_truncated_gradient(model):
    net, numpy_params = build(model)
    x, y = batch(model, 4)
    T, K = 30, 5
    params = net.load(numpy_params)
    start, _ = net.free_phase(params, x, steps=T - K)
    trace = net.bptt_trace(params, x, y, start=start, steps=K)
    lrs = {name: 0.05 * (i + 1) for i, name in enumerate(param_shapes(model))}
    new, loss, errors = net.bptt_step(params, x, y, free_steps=T, steps=K, lrs=lrs)
    after = net.dump(new)
    for name, lr in lrs.items():
        np.testing.assert_allclose(
            (numpy_params[name] - after[name]) / lr, trace[name].sum(0), rtol=1e-8, atol=1e-12
        )
    s0 = net.states(net.free_phase(net.load(numpy_params), x, steps=T)[0])["s0"]
    assert float(loss) == pytest.approx(0.5 * ((s0 - y) ** 2).sum(1).mean(), rel=1e-10)
    assert int(errors) == int((s0.argmax(1) != y.argmax(1)).sum())


def test_gdu_theorem_rates():
    """At the fixed point of an EB model (float64), ΔEP → −∇BPTT: error O(β) one-sided, O(β²)
    symmetric (docs/theory.md §2)."""
    net, numpy_params = build(EB, scale=2.0)
    params = net.load(numpy_params)
    x, y = batch(EB, 2)
    s, residual = net.free_phase(params, x, steps=600)
    assert residual < 1e-13
    K = 25
    bptt = net.bptt_trace(params, x, y, start=s, steps=K)
    grad = np.concatenate([v.ravel() for v in bptt.values()])

    def error(beta: float, symmetric: bool) -> float:
        ep = net.ep_trace(params, x, y, start=s, beta=beta, steps=K, symmetric=symmetric)
        delta = np.concatenate([ep[k].ravel() for k in bptt])
        return float(np.linalg.norm(delta + grad) / np.linalg.norm(grad))

    one = [error(b, False) for b in (0.02, 0.01)]
    sym = [error(b, True) for b in (0.02, 0.01)]
    assert one[0] < 0.05 and sym[0] < 1e-3
    assert one[0] / one[1] == pytest.approx(2.0, rel=0.1)  # linear in β
    assert sym[0] / sym[1] == pytest.approx(4.0, rel=0.1)  # quadratic in β
    assert error(-0.01, False) == pytest.approx(one[1], rel=0.1)


# ---- conversions and prediction --------------------------------------------------------------


def test_load_dump_states_predict():
    net, numpy_params = build(EB)
    params = net.load(numpy_params)
    numpy_params["b0"][0] += 1.0  # load copied
    dumped = net.dump(params)
    assert dumped["b0"][0] == pytest.approx(numpy_params["b0"][0] - 1.0)
    assert list(dumped) == list(param_shapes(EB))
    x, _ = batch(EB, 5)
    s, _ = net.free_phase(params, x, steps=50)
    states = net.states(s)
    assert [v.shape for v in states.values()] == [(5, 3), (5, 6), (5, 5)]
    labels = net.predict(params, x, steps=50)
    assert labels.shape == (5,) and np.issubdtype(labels.dtype, np.integer)
    np.testing.assert_array_equal(labels, states["s0"].argmax(1))
    assert net.free_phase(params, x, steps=0)[1] == 0.0
