"""The convergent RNN with static input in JAX (docs/theory.md §1–§3): dynamics, traces, training
steps, of the tied fully connected family and, with feedback weights, of the asymmetric one.

Parameters are a dict of arrays keyed by canonical names (`epbench.core.params`); states are a tuple
`(s⁰, …, sᴺ)` of `(B, sizes[n])` arrays, output layer first. Every phase is a pure function around a
`lax.fori_loop` / `lax.scan`, jitted whole by `epbench_jax.compiled.JaxNetwork` (which also scopes
float64 and full-precision matmuls); the static input projection is computed once per phase.

Speed (training steps, 2 CPU cores, batch 20): a step of the small models is a few hundred tiny
matmuls and element-wise passes, so the costs are the per-step activation (XLA's exp) and the
per-call overhead. Hence: ρ(s) is computed once per step and reused by ρ'(s), and each EP weight
update is one matmul of (difference, state) factors with the learning rate folded into the small
factor; the per-call costs are `epbench_jax.compiled`'s (512-bit vectors for XLA:CPU, learning
rates converted once, batches passed as numpy). `FAMILY` bundles these functions for
`compiled.JaxNetwork`.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
from jax import lax
from jaxtyping import Array, Float, Int

from epbench.core.errors import BackendError
from epbench.core.estimators import holomorphic_phases
from epbench.core.holomorphic import STRIP
from epbench.core.spec import ModelSpec

from .compiled import Family, complex_copy

Params = dict[str, Float[Array, "..."]]  # canonical name → parameter (or its per-step trace)
States = tuple[Float[Array, "B _"], ...]  # (s⁰, …, sᴺ), layer n of width sizes[n]
Proj = tuple[Float[Array, "B _"], ...]  # static part cₙ of each layer's drive
X = Float[Array, "B inputs"]
Y = Float[Array, "B outputs"]
Scalar = Float[Array, ""]


# ---------------------------------------------------------------- activations (docs/theory.md §3)


@jax.custom_jvp
def clip01(v: Float[Array, ...]) -> Float[Array, ...]:
    """clip(v, 0, 1) whose derivative is 1 on the closed interval [0, 1] and 0 outside.

    Written out so autodiff agrees with the stated derivative (jnp.clip would give ½ at the ends,
    where clamped states sit)."""
    return jnp.clip(v, 0.0, 1.0)


@clip01.defjvp
def _clip01_jvp(primals, tangents):
    (v,), (dv,) = primals, tangents
    return clip01(v), dv * inside01(v)


def inside01(v: Float[Array, ...]) -> Float[Array, ...]:
    """Indicator of [0, 1]: the hard sigmoid's derivative."""
    return ((v >= 0) & (v <= 1)).astype(v.dtype)


def sigm(v: Float[Array, ...]) -> Float[Array, ...]:
    """Shifted sigmoid σ(v) = 1 / (1 + e^{−4(v−½)})."""
    return jax.nn.sigmoid(4.0 * (v - 0.5))


def activation(name: str) -> tuple[Callable, Callable]:
    """(ρ, ρ') for "tanh", "sigm" (σ' = 4σ(1−σ)) or "hardsigm" (clip to [0, 1], ρ' = 1 on it)."""
    if name == "tanh":
        return jnp.tanh, lambda v: 1.0 - jnp.tanh(v) ** 2
    if name == "sigm":
        return sigm, lambda v: 4.0 * sigm(v) * (1.0 - sigm(v))
    if name == "hardsigm":
        return clip01, inside01
    raise BackendError(f"jax backend: unknown activation {name!r}; known: tanh, sigm, hardsigm")


def derivative(name: str) -> Callable:
    """ρ'(v, r) given r = ρ(v) already computed (the same numbers as `activation`'s ρ'(v)):
    tanh 1 − r², sigm 4r(1 − r), hardsigm the indicator of [0, 1] (of v)."""
    if name == "tanh":
        return lambda v, r: 1.0 - r**2
    if name == "sigm":
        return lambda v, r: 4.0 * r * (1.0 - r)
    if name == "hardsigm":
        return lambda v, r: inside01(v)
    raise BackendError(f"jax backend: unknown activation {name!r}; known: tanh, sigm, hardsigm")


# ---------------------------------------------------------------- dynamics


def input_of(model: ModelSpec, x: X) -> X:
    """u: ρ(x) in the EB setting, raw x in the P setting (docs/theory.md §3)."""
    return activation(model.activation)[0](x) if model.setting == "EB" else x


def project(model: ModelSpec, params: Params, x: X) -> Proj:
    """Static part of each layer's input: c_n = [n ∈ input] u W{n}_xᵀ + b_n, shape (B, sizes[n]),
    with u = `input_of(x)`. Computed once per phase."""
    u = input_of(model, x)
    proj = []
    for n, width in enumerate(model.sizes):
        c = jnp.broadcast_to(params[f"b{n}"], (x.shape[0], width))
        if n in model.input_layers:
            c = c + u @ params[f"W{n}_x"].T
        proj.append(c)
    return tuple(proj)


def neighbours(model: ModelSpec, s: States) -> States:
    """What a layer passes to its neighbours: ρ(s) in the EB setting, s itself in the P setting."""
    rho, _ = activation(model.activation)
    return tuple(rho(v) for v in s) if model.setting == "EB" else tuple(s)


def drive(model: ModelSpec, params: Params, proj: Proj, r: States) -> States:
    """hⁿ = [n<N] rⁿ⁺¹ W{n}_{n+1}ᵀ + [n>0] rⁿ⁻¹ Mₙ + cₙ, with Mₙ = W{n−1}_{n} (tied) or B{n}_{n−1}ᵀ
    (independent feedback weights, `epbench_jax.asymmetric`): θ enters a step only here."""
    tied = model.feedback_angle is None
    h = []
    for n in range(len(r)):
        v = proj[n]
        if n < model.depth:
            v = v + r[n + 1] @ params[f"W{n}_{n + 1}"].T
        if n > 0 and tied:
            v = v + r[n - 1] @ params[f"W{n - 1}_{n}"]
        elif n > 0:
            v = v + r[n - 1] @ params[f"B{n}_{n - 1}"].T
        h.append(v)
    return tuple(h)


def update(
    model: ModelSpec,
    s: States,
    h: States,
    y: Y | None = None,
    beta: Scalar | float = 0.0,
    r: States | None = None,
) -> States:
    """The new states from the drives (docs/theory.md §3), nudged when `y` is given.

    EB (F = ∂Φ_ε/∂s exactly, ρ'(s⁰) kept on the output): sⁿ ← sⁿ + ε(−sⁿ + ρ'(sⁿ) ⊙ hⁿ), the
    nudge adds εβ(y − s⁰); with `model.output_derivative` false the output drops its ρ'(s⁰), as
    the paper's code does (docs/theory.md §3.2). P (step 1): sⁿ ← σ(hⁿ), the nudge adds
    β(y − s⁰) after σ.
    Then the optional clamp to [0, 1] (`model.clamp`). `r` = ρ(s) (EB), when the caller has it.
    """
    rho, _ = activation(model.activation)
    drho = derivative(model.activation)
    eb = model.setting == "EB"
    r = neighbours(model, s) if eb and r is None else r
    out = []
    for n, (v, g) in enumerate(zip(s, h, strict=True)):
        if eb:
            gain = drho(v, r[n]) if n > 0 or model.output_derivative else 1.0
            new = v + model.epsilon * (-v + gain * g)
        else:
            new = rho(g)
        if n == 0 and y is not None:
            new = new + (model.epsilon if eb else 1.0) * beta * (y - v)
        out.append(clip01(new) if model.clamp else new)
    return tuple(out)


def step(
    model: ModelSpec,
    params: Params,
    proj: Proj,
    s: States,
    y: Y | None = None,
    beta: Scalar | float = 0.0,
) -> States:
    """One synchronous transition s_{t+1} = F(x, s_t, θ), all layers from s_t (docs/theory.md §1,
    §3)."""
    r = neighbours(model, s)
    return update(model, s, drive(model, params, proj, r), y, beta, r)


def run(
    model: ModelSpec,
    params: Params,
    proj: Proj,
    s: States,
    steps: Int[Array, ""] | int,
    y: Y | None = None,
    beta: Scalar | float = 0.0,
) -> States:
    """`steps` transitions in one `lax.fori_loop` (no per-step trip through Python).

    With a static `steps`, the P setting runs two steps per loop iteration (half the loop-carried
    state copies: ~5 % faster per training step on the CPU). EB stays at one: unrolled, XLA fused
    each step's element-wise update into the next step's consumers and recomputed ρ(s) (~9 %
    slower)."""
    unroll = 2 if model.setting == "P" and isinstance(steps, int) else 1
    body = lambda _, v: step(model, params, proj, v, y, beta)  # noqa: E731
    return lax.fori_loop(0, steps, body, s, unroll=unroll)


def dphi_delta(model: ModelSpec, hi: States, lo: States, x: X, coef: dict[str, Scalar]) -> Params:
    """coef_θ · (∂Φ/∂θ(hi) − ∂Φ/∂θ(lo)) summed over the batch (docs/theory.md §3), where ∂Φ/∂θ at s,
    without the ε of Φ_ε (it cancels against β_eff = εβ), is W{n}_{n+1}: aⁿᵀ aⁿ⁺¹, W{n}_x: aⁿᵀ u,
    b_n: Σ_b aⁿ, with a = ρ(s), u = ρ(x) in the EB setting and a = s, u = x in the P setting.

    With a' = a(hi), a = a(lo), d = a' − a: b_n: Σ_b dⁿ, W{n}_x: dⁿᵀ u (linear in a), and
    W{n}_{n+1}: a'ⁿᵀ a'ⁿ⁺¹ − aⁿᵀ aⁿ⁺¹ = dⁿᵀ a'ⁿ⁺¹ + aⁿᵀ dⁿ⁺¹, ONE matmul over the stacked batch
    [dⁿ; aⁿ]ᵀ [a'ⁿ⁺¹; dⁿ⁺¹] (it also loses less to rounding than the difference of products).
    The coefficient scales the small (B, ·) factor, not the (n, m) product."""
    a, b = neighbours(model, hi), neighbours(model, lo)
    u = input_of(model, x)
    d = [p - q for p, q in zip(a, b, strict=True)]
    out = {}
    for n in range(len(hi)):
        out[f"b{n}"] = coef[f"b{n}"] * jnp.sum(d[n], axis=0)
        if n in model.input_layers:
            out[f"W{n}_x"] = (coef[f"W{n}_x"] * d[n]).T @ u
        if n < model.depth:
            c = coef[f"W{n}_{n + 1}"]
            left = jnp.concatenate([c * d[n], c * b[n]])
            out[f"W{n}_{n + 1}"] = left.T @ jnp.concatenate([a[n + 1], d[n + 1]])
    return out


def loss_errors(s: States, y: Y) -> tuple[Scalar, Int[Array, ""]]:
    """Batch-mean loss ½‖s⁰ − y‖² and the number of misclassified examples (docs/theory.md §1)."""
    loss = 0.5 * jnp.sum((s[0] - y) ** 2) / y.shape[0]
    errors = jnp.sum(jnp.argmax(s[0], axis=1) != jnp.argmax(y, axis=1))
    return loss, errors


# ---------------------------------------------------------------- compiled phases


def free_phase(
    model: ModelSpec, params: Params, x: X, s: States, steps: Int[Array, ""]
) -> tuple[States, Scalar]:
    """`steps` ≥ 1 free steps (traced count: one compilation for every T) and the residual
    ‖s_T − s_{T−1}‖ over all layers and examples."""
    proj = project(model, params, x)
    before = run(model, params, proj, s, steps - 1)
    after = step(model, params, proj, before)
    residual = jnp.sqrt(sum(jnp.sum((a - b) ** 2) for a, b in zip(after, before, strict=True)))
    return after, residual


def nudged_states(
    model: ModelSpec, params: Params, x: X, y: Y, start: States, beta: Scalar, steps: int
) -> tuple[Float[Array, "K+1 B _"], ...]:
    """The nudged trajectory s^β_0 … s^β_K (docs/theory.md §1), per layer stacked on a K+1 axis."""
    proj = project(model, params, x)

    def body(s, _):
        s = step(model, params, proj, s, y, beta)
        return s, s

    _, traj = lax.scan(body, start, None, length=steps)
    return tuple(jnp.concatenate([v[None], t]) for v, t in zip(start, traj, strict=True))


def ep_traces_one(
    model: ModelSpec, params: Params, x: X, y: Y, start: States, beta: Scalar, steps: int
) -> Params:
    """EP traces for one signed β (docs/theory.md §2, epbench.core.protocols):
    ΔEP_s(t) = ⟨s_{t+1} − s_t⟩ / β_eff and ΔEP_θ(t) = (∂Φ/∂θ(s_{t+1}) − ∂Φ/∂θ(s_t)) / β_eff.

    Products are differenced as (a'−a)ᵀc' + aᵀ(c'−c), which loses less to rounding in float32.
    """
    traj = nudged_states(model, params, x, y, start, beta, steps)
    eb = model.setting == "EB"
    a, u = list(neighbours(model, traj)), input_of(model, x)
    # ∂Φ_ε/∂θ carries ε and β_eff = εβ, so ε cancels: divide by β. The scale goes on the small
    # (K, B, n) factor, not on the (K, n, m) product (one pass less over the largest arrays).
    da = [(v[1:] - v[:-1]) / (x.shape[0] * beta) for v in a]
    beta_eff = model.epsilon * beta if eb else beta
    out = {}
    for n in range(len(traj)):
        if n < model.depth:
            out[f"W{n}_{n + 1}"] = jnp.einsum("kbi,kbj->kij", da[n], a[n + 1][1:]) + jnp.einsum(
                "kbi,kbj->kij", a[n][:-1], da[n + 1]
            )
        if n in model.input_layers:
            out[f"W{n}_x"] = jnp.einsum("kbi,bj->kij", da[n], u)
        out[f"b{n}"] = jnp.sum(da[n], axis=1)
        out[f"s{n}"] = jnp.mean(traj[n][1:] - traj[n][:-1], axis=1) / beta_eff
    return out


def argument_imag(model: ModelSpec, traj: tuple[Array, ...]) -> Scalar:
    """The largest |Im| of ρ's argument along a complex trajectory (epbench.core.holomorphic):
    the state itself in EB; in P the drive h of the hidden layers, from s = ρ(h) by the principal
    logarithm (tanh: h = ½ log((1+s)/(1−s)), sigm: h = ½ + ¼ log(s/(1−s)))."""
    if model.setting == "EB":
        return jnp.max(jnp.stack([jnp.max(jnp.abs(jnp.imag(v))) for v in traj]))
    half = STRIP[model.activation] / jnp.pi  # Im h = half · arg(…)
    ratio = (lambda s: (1 + s) / (1 - s)) if model.activation == "tanh" else (lambda s: s / (1 - s))
    return jnp.max(jnp.stack([jnp.max(jnp.abs(jnp.angle(ratio(v)))) for v in traj[1:]])) * half


def holomorphic_phase(
    model: ModelSpec, params: Params, x: X, y: Y, start: States, beta, steps: int
) -> tuple[Params, Scalar]:
    """One complex phase of holomorphic EP (docs/theory.md §2.5), on complex arrays with a complex
    β: the complex traces Δ(β)/β of `ep_traces_one` and the largest |Im| of ρ's argument."""
    traj = nudged_states(model, params, x, y, start, beta, steps)  # the same ops: XLA shares them
    return ep_traces_one(model, params, x, y, start, beta, steps), argument_imag(model, traj)


def bptt_traces(model: ModelSpec, params: Params, x: X, y: Y, start: States, steps: int) -> Params:
    """BPTT traces from ONE reverse pass through the last K steps (docs/theory.md §2).

    θ enters step k only through its drives h_k = drive(θ, r_k) (linear in θ). Each step gets a
    zero perturbation ζ_k of its drives and η_k of the state it produces, stacked on a leading K
    axis: s_{k+1} = update(s_k, h_k + ζ_k) + η_k. One `jax.grad` of L(s_K) through the scan gives
    every ∂L/∂ζ_k = ∂L/∂h_k and ∂L/∂η_k = ∂L/∂s_{k+1}. The per-step parameter shares
    ∂L/∂θ_k = vjp of drive(·, r_k) at ∂L/∂h_k come from `jax.vjp`, vmapped over the K steps
    (batched matmuls, outside the loop). The scan body is rematerialised in the backward pass
    (`jax.checkpoint`: fewer stored residuals, faster on CPU). The scan runs `reverse=True` over
    the perturbations, so step k of the phase uses slot K − 1 − k: slot t is trace index t
    (t = 0 is the last transition).
    """
    proj = project(model, params, x)

    @jax.checkpoint
    def body(s, pert):
        zeta, eta = pert
        r = neighbours(model, s)
        h = tuple(a + z for a, z in zip(drive(model, params, proj, r), zeta, strict=True))
        s = update(model, s, h)
        return tuple(a + e for a, e in zip(s, eta, strict=True)), r

    def loss(zeta, eta):
        s, rs = lax.scan(body, start, (zeta, eta), reverse=True)
        return 0.5 * jnp.sum((s[0] - y) ** 2) / y.shape[0], rs

    zeros = tuple(jnp.zeros((steps, *v.shape), v.dtype) for v in start)
    (g_zeta, g_eta), rs = jax.grad(loss, argnums=(0, 1), has_aux=True)(zeros, zeros)

    def share(r, g):  # ∂L/∂θ through one step's drives
        _, vjp = jax.vjp(lambda p: drive(model, p, project(model, p, x), r), params)
        return vjp(g)[0]

    out = jax.vmap(share)(rs, g_zeta)
    out.update({f"s{n}": jnp.sum(g, axis=1) for n, g in enumerate(g_eta)})
    return out


def ep_step(
    model: ModelSpec, params: Params, x: X, y: Y, lrs: dict[str, Scalar], beta: Scalar, *,
    free_steps: int, steps: int, symmetric: bool,
) -> tuple[Params, Scalar, Int[Array, ""]]:  # fmt: skip
    """EP training step (docs/theory.md §2): θ ← θ + lr (∂Φ/∂θ(s^β_K) − ∂Φ/∂θ(s_*)) / β_eff;
    symmetric: (∂Φ/∂θ(s^{+|β|}_K) − ∂Φ/∂θ(s^{−|β|}_K)) / (2|β|_eff). ε cancels (`dphi_delta`)."""
    proj = project(model, params, x)
    zero = tuple(jnp.zeros((x.shape[0], w), x.dtype) for w in model.sizes)
    s_star = run(model, params, proj, zero, free_steps)
    loss, errors = loss_errors(s_star, y)
    if symmetric:
        b = jnp.abs(beta)
        hi = run(model, params, proj, s_star, steps, y, b)
        lo = run(model, params, proj, s_star, steps, y, -b)
        scale = 2 * b
    else:
        hi = run(model, params, proj, s_star, steps, y, beta)
        lo, scale = s_star, beta
    c = 1.0 / (x.shape[0] * scale)  # batch mean and 1/β
    delta = dphi_delta(model, hi, lo, x, {k: lr * c for k, lr in lrs.items()})
    new = {k: v + delta[k] for k, v in params.items()}
    return new, loss, errors


def holomorphic_step(
    model: ModelSpec, params: Params, x: X, y: Y, lrs: dict[str, Scalar], beta: Scalar, *,
    free_steps: int, steps: int, points: int,
) -> tuple[Params, Scalar, Int[Array, ""]]:  # fmt: skip
    """Holomorphic EP training step (docs/theory.md §2.5): θ ← θ + lr Re Σ_k c_k (∂Φ/∂θ(s^{β_k}_K)
    − ∂Φ/∂θ(s_*)), c_k = w_k / β_k over `holomorphic_phases` (the sum of the holomorphic traces;
    Σ_k c_k = 0, the s_* terms are kept so that each phase is a difference). A complex phase
    runs on complex copies of the parameters, projection, fixed point and targets."""
    proj = project(model, params, x)
    zero = tuple(jnp.zeros((x.shape[0], w), x.dtype) for w in model.sizes)
    s_star = run(model, params, proj, zero, free_steps)
    loss, errors = loss_errors(s_star, y)
    delta = {k: jnp.zeros_like(v) for k, v in params.items()}
    for unit, w in holomorphic_phases(1.0, points):
        b = jnp.abs(beta) * unit
        args = (params, proj, s_star, y)
        if isinstance(unit, complex):
            args = complex_copy(args)
        end = run(model, *args[:3], steps, args[3], b)
        c = w / (x.shape[0] * b)  # batch mean and 1/β_k
        part = dphi_delta(model, end, s_star, x, {k: lr * c for k, lr in lrs.items()})
        delta = {k: delta[k] + jnp.real(part[k]) for k in delta}
    new = {k: v + delta[k] for k, v in params.items()}
    return new, loss, errors


def bptt_step(
    model: ModelSpec, params: Params, x: X, y: Y, lrs: dict[str, Scalar], *,
    free_steps: int, steps: int,
) -> tuple[Params, Scalar, Int[Array, ""]]:  # fmt: skip
    """BPTT training step: T − K free steps outside the graph, then θ ← θ − lr ∂L/∂θ through the
    last K steps (truncated BPTT, docs/theory.md §5)."""
    zero = tuple(jnp.zeros((x.shape[0], w), x.dtype) for w in model.sizes)
    s0 = run(model, params, project(model, params, x), zero, free_steps - steps)
    s0 = lax.stop_gradient(s0)

    def loss(p):
        proj = project(model, p, x)
        body = lambda v, _: (step(model, p, proj, v), None)  # noqa: E731
        s = lax.scan(body, s0, None, length=steps)[0]
        return loss_errors(s, y)

    (loss_value, errors), grads = jax.value_and_grad(loss, has_aux=True)(params)
    new = {k: v - lrs[k] * grads[k] for k, v in params.items()}
    return new, loss_value, errors


def rtrl(model: ModelSpec, params: Params, x: X, y: Y, start: States, *, steps: int) -> Params:
    """Σ_{t<K} ∇BPTT_θ(t) of the fully connected families (tied or asymmetric), forward in time
    (RTRL, docs/theory.md §6.3), from `start` = s_{T−K} through `steps` = K ≥ 1 steps.

    Real-time recurrent learning carries the sensitivities J_k = ∂s_k/∂θ forward with the states,
    J_0 = 0 (s_{T−K} is held fixed), J_{k+1} = ∂F/∂s (s_k) · J_k + ∂F/∂θ (s_k), and reads the
    gradient at the end: ∂L/∂θ = ∂L/∂s_K · J_K, BPTT truncated to the same K steps. `jax.jacfwd`
    of the K-step loss is exactly this recursion: `vmap` of `jvp` over the P basis directions of
    θ, each tangent pushed through the `lax.fori_loop` step by step alongside the primal states,
    so memory is O(P · B · Σ sizes), independent of K, and the cost P forward passes: for the toy
    model and small nets only."""

    def loss(p: Params) -> Scalar:
        return loss_errors(run(model, p, project(model, p, x), start, steps), y)[0]

    return jax.jacfwd(loss)(params)


# ---------------------------------------------------------------- the family


def unsupported(model: ModelSpec) -> str | None:
    """None for a tied fully connected model; otherwise why this family does not run it."""
    if model.conv is not None or model.feedback_angle is not None:
        return "the tied fully connected family runs models without conv layers or feedback angle"
    return None


FAMILY = Family(
    name="fully connected",
    unsupported=unsupported,
    free_phase=free_phase,
    ep_traces_one=ep_traces_one,
    bptt_traces=bptt_traces,
    ep_step=ep_step,
    bptt_step=bptt_step,
    rtrl=rtrl,
    holomorphic_phase=holomorphic_phase,
    holomorphic_step=holomorphic_step,
)
