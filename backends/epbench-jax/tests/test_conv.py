"""The JAX P-conv network (`epbench_jax.conv`) against references written here with `jax.grad`.

The reference is the primitive function of docs/theory.md §3 written out in canonical NCHW layout
with the pooling indices held fixed, Φ = s⁰·(W0_1 vec(s¹) + b₀) + Σₙ sⁿ • P_idx(Wₙ ∗ sⁿ⁺¹ + bₙ): the
step is σ(∂Φ/∂s), ∂Φ/∂θ gives the EP update, and BPTT is `jax.grad` through reference steps. Nothing
of the backend's NHWC layout, hand-written feedback (unpooling + transposed convolution) or
correlations is reused (the references are jitted only to keep the tests fast). One model with three
conv layers and padding, so that a middle layer has both a pooled drive from below and a
transposed-convolution feedback from above.
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from epbench.core.errors import BackendError
from epbench.core.params import init_params, param_shapes, state_shapes
from epbench.core.spec import ConvSpec, ModelSpec
from epbench_jax.backend import JaxBackend

CONV = ConvSpec(input=(2, 16, 16), channels=(2, 3, 4), kernel=3, padding=1, pool=2)
MODEL = ModelSpec(setting="P", inputs=512, sizes=CONV.sizes(5), activation="hardsigm", conv=CONV)
B, T, K = 3, 30, 3


@pytest.fixture(scope="module")
def case():
    net = JaxBackend().build(MODEL, dtype="float64", device="cpu")
    numpy_params = init_params(MODEL, seed=0)
    rng = np.random.default_rng(1)
    x = rng.random((B, MODEL.inputs))
    y = np.eye(MODEL.outputs)[rng.integers(0, MODEL.outputs, B)]
    return net, numpy_params, x, y


def kernel(theta, n):
    return theta[f"W{n}_x"] if n == len(CONV.channels) else theta[f"W{n}_{n + 1}"]


def conv(a, w):
    return lax.conv_general_dilated(
        a, w, (1, 1), [(CONV.padding,) * 2] * 2, dimension_numbers=("NCHW", "OIHW", "NCHW")
    )


def windows(z):
    b, c, h, w = z.shape
    p = CONV.pool
    return (
        z.reshape(b, c, h // p, p, w // p, p)
        .transpose(0, 1, 2, 4, 3, 5)
        .reshape(b, c, h // p, w // p, p * p)
    )


def indices(theta, img, s):
    """First argmax (row-major window order) of every pooling window of Wₙ ∗ sⁿ⁺¹ at s."""
    depth = len(CONV.channels)
    out = [None]
    for n in range(1, depth + 1):
        below = img if n == depth else s[n + 1]
        out.append(jnp.argmax(windows(conv(below, kernel(theta, n))), axis=-1))
    return out


def phi(theta, img, s, idx):
    """Σ_b Φ(x_b, s_b, θ) with the pooling indices `idx` held fixed (docs/theory.md §3)."""
    depth = len(CONV.channels)
    total = jnp.sum(s[0] * (s[1].reshape(B, -1) @ theta["W0_1"].T + theta["b0"]))
    for n in range(1, depth + 1):
        below = img if n == depth else s[n + 1]
        z = windows(conv(below, kernel(theta, n)) + theta[f"b{n}"][None, :, None, None])
        pooled = jnp.take_along_axis(z, idx[n][..., None], axis=-1)[..., 0]
        total = total + jnp.sum(s[n] * pooled)
    return total


@partial(jax.jit, static_argnames="beta")
def reference_step(theta, img, s, y=None, beta=0.0):
    idx = indices(theta, img, s)
    new = [jnp.clip(h, 0.0, 1.0) for h in jax.grad(lambda v: phi(theta, img, v, idx))(list(s))]
    if y is not None:
        new[0] = new[0] + beta * (y - s[0])
    return new


def rel(a, b) -> float:
    a, b = np.asarray(a), np.asarray(b)
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-300))


def test_step_is_sigma_of_the_gradient_of_phi(case):
    """Free and nudged steps from random canonical states against σ(∂Φ/∂s) (+ β (y − s⁰))."""
    net, numpy_params, x, y = case
    rng = np.random.default_rng(2)
    start = [rng.uniform(-0.3, 1.3, shape) for shape in state_shapes(MODEL, B).values()]
    params = net.load(numpy_params)
    got, _ = net.free_phase(params, x, steps=1, start=start)  # numpy start: canonical states
    trace = net.ep_trace(params, x, y, start=start, beta=0.3, steps=1)
    with jax.enable_x64(True):
        theta = {k: jnp.asarray(v) for k, v in numpy_params.items()}
        img = jnp.asarray(x).reshape(B, *CONV.input)
        want = [np.asarray(v) for v in reference_step(theta, img, [jnp.asarray(v) for v in start])]
        nudged = reference_step(theta, img, [jnp.asarray(v) for v in start], jnp.asarray(y), 0.3)
        nudged = [np.asarray(v) for v in nudged]  # numpy inside the x64 scope (float64 stays)
    for n, (key, value) in enumerate(net.states(got).items()):
        assert rel(value, want[n]) < 1e-13, key
        assert rel(trace[key][0], np.mean((nudged[n] - start[n]) / 0.3, axis=0)) < 1e-11, key


def test_ep_trace_telescopes_to_dphi_and_ep_step(case):
    """Σ_t ΔEP_θ(β, t) = (∂Φ/∂θ(s^β_K) − ∂Φ/∂θ(s_*)) / β with ∂Φ/∂θ from `jax.grad` of the
    reference Φ at each state's own indices, and equals the `ep_step` update / lr."""
    net, numpy_params, x, y = case
    beta = 0.2
    params = net.load(numpy_params)
    star, _ = net.free_phase(params, x, steps=T)
    trace = net.ep_trace(params, x, y, start=star, beta=beta, steps=K)
    lrs = {name: 0.1 * (i + 1) for i, name in enumerate(param_shapes(MODEL))}
    new, loss, errors = net.ep_step(params, x, y, free_steps=T, steps=K, beta=beta, lrs=lrs)
    after = net.dump(new)
    s_star = list(net.states(star).values())
    with jax.enable_x64(True):
        theta = {k: jnp.asarray(v) for k, v in numpy_params.items()}
        img = jnp.asarray(x).reshape(B, *CONV.input)
        s = [jnp.asarray(v) for v in s_star]
        for _ in range(K):
            s = reference_step(theta, img, s, jnp.asarray(y), beta)

        @jax.jit
        def dphi(v):
            idx = indices(theta, img, v)
            return jax.grad(lambda th: phi(th, img, v, idx))(theta)

        hi, lo = dphi(s), dphi([jnp.asarray(v) for v in s_star])
        hi, lo = ({k: np.asarray(v) for k, v in d.items()} for d in (hi, lo))
    for name, lr in lrs.items():
        want = (hi[name] - lo[name]) / (B * beta)
        assert np.abs(want).max() > 1e-6, name
        assert rel(trace[name].sum(0), want) < 1e-9, name
        assert rel((after[name] - numpy_params[name]) / lr, want) < 1e-9, name
    s0 = s_star[0]
    assert float(loss) == pytest.approx(0.5 * np.sum((s0 - y) ** 2) / B, rel=1e-12)
    assert int(errors) == int(np.sum(s0.argmax(1) != y.argmax(1)))


def test_bptt_trace_is_the_per_step_gradient(case):
    """∇BPTT_θ(t) = ∂L/∂θ_{T−t} with a per-step copy of θ and ∇BPTT_s(t) = Σ_b ∂L/∂s_{T−t}, by
    `jax.grad` through K reference steps; `bptt_step` applies −lr · Σ_t ∇BPTT_θ(t)."""
    net, numpy_params, x, y = case
    params = net.load(numpy_params)
    mid, _ = net.free_phase(params, x, steps=T - K)
    trace = net.bptt_trace(params, x, y, start=mid, steps=K)
    lrs = {name: 0.05 * (i + 1) for i, name in enumerate(param_shapes(MODEL))}
    after = net.dump(net.bptt_step(net.load(numpy_params), x, y, free_steps=T, steps=K, lrs=lrs)[0])
    start = list(net.states(mid).values())
    with jax.enable_x64(True):
        theta = {k: jnp.asarray(v) for k, v in numpy_params.items()}
        img = jnp.asarray(x).reshape(B, *CONV.input)

        def loss(deltas, etas):
            s = [jnp.asarray(v) for v in start]
            for k in range(K):
                th = {name: v + deltas[k][name] for name, v in theta.items()}
                s = [a + e for a, e in zip(reference_step(th, img, s), etas[k], strict=True)]
            return 0.5 * jnp.sum((s[0] - jnp.asarray(y)) ** 2) / B

        deltas = [{k: jnp.zeros_like(v) for k, v in theta.items()} for _ in range(K)]
        etas = [[jnp.zeros(shape) for shape in state_shapes(MODEL, B).values()] for _ in range(K)]
        grads = jax.jit(jax.grad(loss, argnums=(0, 1)))(deltas, etas)
        g_theta, g_s = jax.tree.map(np.asarray, grads)
    for k in range(K):  # step k produces s_{k+1} = s_{T−t}, t = K − 1 − k
        for name in theta:
            assert rel(trace[name][K - 1 - k], g_theta[k][name]) < 1e-10, (k, name)
        for n, g in enumerate(g_s[k]):
            assert rel(trace[f"s{n}"][K - 1 - k], np.sum(g, axis=0)) < 1e-10, (k, n)
    for name, lr in lrs.items():
        assert rel((numpy_params[name] - after[name]) / lr, trace[name].sum(0)) < 1e-9, name


def test_inconsistent_conv_model_is_refused():
    bad = ModelSpec(setting="P", inputs=512, sizes=(5, 16, 48, 100), conv=CONV)
    with pytest.raises(BackendError, match="sizes = \\(5, 16, 48, 128\\)"):
        JaxBackend().build(bad, dtype="float64", device="cpu")
    eb = ModelSpec(setting="EB", inputs=512, sizes=CONV.sizes(5), conv=CONV)
    assert "P setting only" in JaxBackend().supports(eb, dtype="float64", device="cpu")
