"""Tests of the JAX backend against independent references written here with `jax.grad`.

References: the EB step is s − ε ∂E/∂s of the Hopfield energy E and the P step is σ(∂Φ/∂s)
(docs/theory.md §3), both differentiated by `jax.grad` from the scalar functions below, never by the
backend's hand-written update rules.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from epbench.core.errors import BackendError
from epbench.core.params import init_params, param_shapes
from epbench.core.spec import ModelSpec
from epbench.core.support import support_reason
from epbench.plugins.manager import make_plugin_manager
from epbench.plugins.registry import Registry
from epbench_jax import network as nw
from epbench_jax.backend import JaxBackend

EB = ModelSpec(setting="EB", inputs=4, sizes=(3, 6, 5), input_to=(0, 2), epsilon=0.2)
P = ModelSpec(setting="P", inputs=4, sizes=(3, 6, 5), activation="sigm")
TOY = ModelSpec(setting="EB", inputs=5, sizes=(10, 50), input_to=(0, 1), epsilon=0.08)


def batch(model: ModelSpec, size: int, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, model.outputs, size)
    return rng.random((size, model.inputs)), np.eye(model.outputs)[labels]


def energy(model: ModelSpec, p, s, x):
    """Hopfield energy E(s) of docs/theory.md §3, summed over the batch."""
    rho, _ = nw.activation(model.activation)
    r = [rho(v) for v in s]
    e = sum(0.5 * jnp.sum(v**2) - jnp.sum(p[f"b{n}"] * r[n]) for n, v in enumerate(s))
    for n in range(model.depth):
        e -= jnp.sum((r[n] @ p[f"W{n}_{n + 1}"]) * r[n + 1])
    for n in model.input_layers:
        e -= jnp.sum((rho(x) @ p[f"W{n}_x"].T) * r[n])
    return e


def phi_p(model: ModelSpec, p, s, x):
    """Primitive Φ of the P setting (docs/theory.md §3), summed over the batch."""
    total = sum(jnp.sum(p[f"b{n}"] * v) for n, v in enumerate(s))
    for n in range(model.depth):
        total += jnp.sum((s[n] @ p[f"W{n}_{n + 1}"]) * s[n + 1])
    for n in model.input_layers:
        total += jnp.sum((x @ p[f"W{n}_x"].T) * s[n])
    return total


def reference_step(model: ModelSpec, p, s, x):
    """F(x, s, θ) from the scalar functions: s − ε ∂E/∂s (EB) or σ(∂Φ/∂s) (P)."""
    if model.setting == "EB":
        grad = jax.grad(lambda v: energy(model, p, v, x))(s)
        return tuple(v - model.epsilon * g for v, g in zip(s, grad, strict=True))
    rho, _ = nw.activation(model.activation)
    return tuple(rho(g) for g in jax.grad(lambda v: phi_p(model, p, v, x))(s))


def rel(a, b) -> float:
    a, b = np.asarray(a), np.asarray(b)
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-300))


B, T, K = 3, 30, 6  # one batch size and one K everywhere: each phase compiles once per network


@pytest.fixture(scope="module")
def nets():
    backend = JaxBackend()
    return {
        (m.setting, dtype): backend.build(m, dtype=dtype, device="cpu")
        for m, dtype in ((EB, "float64"), (P, "float64"), (EB, "float32"))
    }


@pytest.mark.parametrize("act", ["tanh", "sigm", "hardsigm"])
def test_eb_step_is_the_gradient_of_phi(act):
    """F = ∂Φ_ε/∂s with Φ_ε = ½‖s‖² − εE − εβℓ (nudge included, ρ'(s⁰) kept on the output)."""
    model = ModelSpec(
        setting="EB", inputs=4, sizes=(3, 6, 5), input_to=(0, 2), activation=act, epsilon=0.2
    )
    x, y = batch(model, B)
    beta = 0.7
    with jax.enable_x64(True):
        p = {k: jnp.asarray(v) for k, v in init_params(model, seed=2).items()}
        rng = np.random.default_rng(3)
        s = tuple(jnp.asarray(rng.uniform(-0.2, 1.2, (B, w))) for w in model.sizes)

        def phi(v):
            loss = 0.5 * jnp.sum((v[0] - y) ** 2)
            return 0.5 * sum(jnp.sum(a**2) for a in v) - model.epsilon * (
                energy(model, p, v, x) + beta * loss
            )

        want = jax.jit(jax.grad(phi))(s)
        got = jax.jit(lambda v: nw.step(model, p, nw.project(model, p, x), v, y, beta))(s)
    for g, w in zip(got, want, strict=True):
        assert rel(g, w) < 1e-13


@pytest.mark.parametrize("model", [EB, P], ids=["EB", "P"])
def test_bptt_trace_is_the_truncated_gradient(nets, model):
    """Σ_t ∇BPTT_θ(t) = ∂L/∂θ of BPTT truncated to K steps; each ∇BPTT_θ(t) = ∂L/∂θ_{T−t} with a
    per-step copy of θ, and ∇BPTT_s(t) = Σ_b ∂L/∂s_{T−t} (docs/theory.md §2), all from the
    reference."""
    net = nets[model.setting, "float64"]
    x, y = batch(model, B)
    params = net.load(init_params(model, seed=0))
    start, _ = net.free_phase(params, x, steps=T - K)
    trace = net.bptt_trace(params, x, y, start=start, steps=K)
    assert set(trace) == set(param_shapes(model)) | {f"s{n}" for n in range(len(model.sizes))}

    def loss(theta, delta, eta, s):  # step k runs with θ + δ_k and adds η_k to its new state
        def body(s, de):
            s = reference_step(model, {k: v + de[0][k] for k, v in theta.items()}, s, x)
            return tuple(a + e for a, e in zip(s, de[1], strict=True)), None

        s, _ = jax.lax.scan(body, s, (delta, eta))
        return 0.5 * jnp.sum((s[0] - y) ** 2) / B

    with jax.enable_x64(True):
        p = {k: jnp.asarray(v) for k, v in net.dump(params).items()}
        s = tuple(jnp.asarray(v) for v in net.states(start).values())
        delta = {k: jnp.zeros((K, *v.shape)) for k, v in p.items()}
        eta = tuple(jnp.zeros((K, *v.shape)) for v in s)
        grads = jax.jit(jax.grad(loss, argnums=(0, 1, 2)))(p, delta, eta, s)
        truncated, g_theta, g_eta = jax.device_get(grads)  # ∂L/∂θ (shared θ), ∂L/∂θ_k, ∂L/∂s_k
    for k, g in g_theta.items():  # step k of the phase is trace index t = K − 1 − k
        assert trace[k].shape == (K, *p[k].shape)
        assert rel(trace[k], g[::-1]) < 1e-12, k
        assert rel(trace[k].sum(axis=0), truncated[k]) < 1e-12, k
    for n, g in enumerate(g_eta):
        assert rel(trace[f"s{n}"], g.sum(axis=1)[::-1]) < 1e-12, n
    s_T = net.states(net.free_phase(params, x, steps=T)[0])["s0"]
    assert rel(trace["s0"][0], (s_T - y).mean(0)) < 1e-12  # ∇BPTT_s0(0) = ⟨s⁰_T − y⟩


@pytest.mark.parametrize(
    "model,beta,symmetric", [(EB, -0.3, False), (P, 0.2, True)], ids=["EB-negative", "P-symmetric"]
)
def test_ep_trace_sums_to_the_ep_step_update(nets, model, beta, symmetric):
    net = nets[model.setting, "float64"]
    x, y = batch(model, B)
    params = net.load(init_params(model, seed=0))
    s_star, _ = net.free_phase(params, x, steps=T)
    trace = net.ep_trace(params, x, y, start=s_star, beta=beta, steps=K, symmetric=symmetric)
    lrs = {k: 0.1 * (i + 1) for i, k in enumerate(param_shapes(model))}
    new, loss, errors = net.ep_step(
        params, x, y, free_steps=T, steps=K, beta=beta, lrs=lrs, symmetric=symmetric
    )
    old, new = net.dump(params), net.dump(new)
    for k in old:  # θ ← θ + lr Σ_t ΔEP_θ(β, t): the EP rule telescopes (docs/theory.md §2)
        assert rel((new[k] - old[k]) / lrs[k], trace[k].sum(axis=0)) < 1e-10, k
    s0 = net.states(s_star)["s0"]
    assert np.isclose(float(loss), 0.5 * np.mean(np.sum((s0 - y) ** 2, axis=1)), rtol=1e-12)
    assert int(errors) == int(np.sum(s0.argmax(1) != y.argmax(1)))
    # ΔEP_s0(0) = (F(s_*) − s_*)/β_eff + ⟨y − s⁰_*⟩: the free drift plus the nudge (theory §1)
    if not symmetric:
        s_after, _ = net.free_phase(params, x, steps=1, start=s_star)
        drift = (net.states(s_after)["s0"] - s0).mean(0)
        eff = beta * (model.epsilon if model.setting == "EB" else 1.0)
        assert rel(trace["s0"][0], drift / eff + (y - s0).mean(0)) < 1e-8


def test_bptt_step_applies_the_summed_trace(nets):
    net = nets["P", "float64"]
    x, y = batch(P, B)
    params = net.load(init_params(P, seed=0))
    start, _ = net.free_phase(params, x, steps=T - K)
    trace = net.bptt_trace(params, x, y, start=start, steps=K)
    lrs = {k: 0.1 * (i + 1) for i, k in enumerate(param_shapes(P))}
    new, loss, _ = net.bptt_step(params, x, y, free_steps=T, steps=K, lrs=lrs)
    old, new = net.dump(params), net.dump(new)
    for k in old:
        assert rel((old[k] - new[k]) / lrs[k], trace[k].sum(axis=0)) < 1e-12, k
    s_T, _ = net.free_phase(params, x, steps=T)
    s0 = net.states(s_T)["s0"]
    assert np.isclose(float(loss), 0.5 * np.mean(np.sum((s0 - y) ** 2, axis=1)), rtol=1e-12)
    assert np.array_equal(net.predict(params, x, steps=T), s0.argmax(1))


def test_float32_and_float64_do_not_leak(nets):
    f32, f64 = nets["EB", "float32"], nets["EB", "float64"]
    x, y = batch(EB, B)
    init = init_params(EB, seed=0)
    p64 = f64.load(init)
    s64, _ = f64.free_phase(p64, x, steps=T)
    t64 = f64.ep_trace(p64, x, y, start=s64, beta=-0.3, steps=K)
    assert all(v.dtype == np.float64 for v in t64.values())
    assert jnp.ones(3).dtype == jnp.float32  # x64 stayed inside the float64 calls
    assert not jax.config.jax_enable_x64
    p32 = f32.load(init)
    s32, _ = f32.free_phase(p32, x, steps=T)
    t32 = f32.ep_trace(p32, x, y, start=s32, beta=-0.3, steps=K)
    assert all(v.dtype == np.float32 for v in (*t32.values(), *f32.dump(p32).values()))
    assert all(v.dtype == np.float32 for v in f32.states(s32).values())
    for k in t64:
        assert rel(t32[k], t64[k]) < 1e-4, k
    assert jnp.ones(3).dtype == jnp.float32
    with jax.enable_x64(True):  # and a float32 network stays float32 under a caller's x64
        assert f32.ep_trace(p32, x, y, start=s32, beta=-0.3, steps=K)["W0_1"].dtype == np.float32


def test_gdu_error_shrinks_like_beta_and_beta_squared(nets):
    """GDU theorem (docs/theory.md §2) on the EB float64 model at its fixed point: EP → −BPTT with
    an error O(β) for one-sided nudging and O(β²) for the symmetric estimator."""
    net = nets["EB", "float64"]
    x, y = batch(EB, B, seed=4)
    params = net.load(init_params(EB, seed=0))
    s_tk, _ = net.free_phase(params, x, steps=400)
    s_star, residual = net.free_phase(params, x, steps=K, start=s_tk)
    assert residual < 1e-13  # s_{T−K} = … = s_T: the theorem's premise
    bptt = net.bptt_trace(params, x, y, start=s_tk, steps=K)
    a = np.concatenate([v.ravel() for v in bptt.values()])

    def error(beta, symmetric):
        ep = net.ep_trace(params, x, y, start=s_star, beta=beta, steps=K, symmetric=symmetric)
        return np.linalg.norm(a + np.concatenate([ep[k].ravel() for k in bptt])) / np.linalg.norm(a)

    one = [error(b, False) for b in (-0.02, -0.01)]
    sym = [error(b, True) for b in (0.02, 0.01)]
    assert one[1] < 0.05 and sym[1] < 1e-3
    assert 1.7 < one[0] / one[1] < 2.3
    assert 3.4 < sym[0] / sym[1] < 4.6


def test_backend_registration_and_refusals():
    backend = Registry(make_plugin_manager(select=["jax"])).get_backend("jax")  # the entry point
    assert backend.name == "jax"
    assert {"jax", "jaxlib"} <= set(backend.versions())
    assert backend.supports(EB, dtype="float64", device="cpu") is None
    assert "device" in support_reason(backend, EB, dtype="float64", device="tpu9")
    assert "dtype" in support_reason(backend, EB, dtype="float16", device="cpu")
    if not any(d.platform == "gpu" for d in jax.devices()):
        reason = backend.supports(EB, dtype="float64", device="cuda")
        assert reason and "gpu" in reason
        with pytest.raises(BackendError, match="gpu"):
            backend.build(EB, dtype="float64", device="cuda")
    net = backend.build(EB, dtype="float64", device="cpu")
    with pytest.raises(BackendError, match="found W0_x, b0, W1_2, b1, W2_x, b2 missing"):
        net.load({"W0_1": np.zeros((3, 6))})


def test_arguments_are_checked(nets):
    """Negative step counts, β = 0, K > T, missing learning rates and a batch of the wrong width
    are refused with one line (epbench.core.validate), before anything is compiled."""
    net = nets["P", "float64"]
    params = net.load(init_params(P, seed=0))
    x, y = batch(P, B)
    lrs = dict.fromkeys(param_shapes(P), 0.1)
    with pytest.raises(BackendError, match=r"expected steps ≥ 0 \(an integer\), found -1"):
        net.free_phase(params, x, steps=-1)
    with pytest.raises(BackendError, match=r"expected a finite non-zero beta, found 0\.0"):
        net.ep_trace(params, x, y, start=None, beta=0.0, steps=K)
    with pytest.raises(BackendError, match=f"expected steps ≤ free_steps = {K}"):
        net.bptt_step(params, x, y, free_steps=K, steps=K + 1, lrs=lrs)
    with pytest.raises(BackendError, match="found none for b2"):
        net.ep_step(
            params,
            x,
            y,
            free_steps=T,
            steps=K,
            beta=0.1,
            lrs={"W0_1": 0.1} | {k: 0.1 for k in param_shapes(P) if k != "b2"},
        )
    with pytest.raises(BackendError, match=r"expected y of shape \(3, 3\)"):
        net.bptt_trace(params, x, y[:, :2], start=None, steps=K)


def _has_gpu() -> bool:
    try:
        return bool(jax.devices("gpu"))
    except RuntimeError:
        return False


@pytest.mark.gpu
@pytest.mark.skipif(not _has_gpu(), reason="no jax gpu device")
@pytest.mark.parametrize("dtype,tol", [("float64", 1e-10), ("float32", 1e-4)])
def test_gpu_matches_cpu(dtype, tol):
    """The same phases on "cuda" (jax's gpu platform) and on the CPU give the same numbers."""
    backend = JaxBackend()
    assert backend.supports(TOY, dtype=dtype, device="cuda") is None
    assert "gpu" in backend.device_info("cuda")
    x, y = batch(TOY, 2)
    init = init_params(TOY, seed=0)
    lrs = dict.fromkeys(init, 0.1)
    out = []
    for device in ("cpu", "cuda"):
        net = backend.build(TOY, dtype=dtype, device=device)
        params = net.load(init)
        assert all(v.devices().pop().platform == net._device.platform for v in params.values())
        s_tk, _ = net.free_phase(params, x, steps=200)
        s_star, _ = net.free_phase(params, x, steps=40, start=s_tk)
        bptt = net.bptt_trace(params, x, y, start=s_tk, steps=40)
        ep = net.ep_trace(params, x, y, start=s_star, beta=0.5, steps=40, symmetric=True)
        new, _, _ = net.ep_step(params, x, y, free_steps=240, steps=40, beta=0.5, lrs=lrs)
        net.synchronize()
        out.append(
            {
                **net.states(s_star),
                **bptt,
                **{f"ep_{k}": v for k, v in ep.items()},
                **{f"new_{k}": v for k, v in net.dump(new).items()},
            }
        )
    for k in out[0]:
        assert rel(out[1][k], out[0][k]) < tol, k
