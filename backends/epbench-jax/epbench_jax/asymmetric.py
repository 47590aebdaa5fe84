"""Asymmetric ("vector-field") fully connected networks in JAX: feedback weights that are
independent parameters instead of the transposed forward weights (PAPER.md §6.5, §7).

Model (`ModelSpec.feedback_angle` set; canonical names in `epbench.core.params`). Row-vector batch form,
r = ρ(s) in the EB setting and r = s in the P setting, r_x = ρ(x) (EB) or x (P):

    h^n = c^n + [n<N] r^{n+1} W{n}_{n+1}ᵀ + [n>0] r^{n−1} B{n}_{n−1}ᵀ,
    c^n = [n∈input] r_x W{n}_xᵀ + b_n                        (computed once per phase)
    EB   s^n ← s^n + ε (−s^n + ρ'(s^n) ⊙ h^n)   [+ εβ (y − s⁰) on the output]
    P    s^n ← σ(h^n)                            [+ β (y − s⁰) on the output, after σ]

then the optional clamp to [0, 1]. With `B{n+1}_{n} = W{n}_{n+1}ᵀ` this is the tied model of
PAPER.md §3 (`epbench_jax.network`); otherwise the dynamics are a vector field that is not the
gradient of any primitive function Φ, and the GDU theorem does not apply.

EP updates (vector-field EP: Scellier et al. 2018; the "VF" rule of Laborieux et al. 2021): each
weight is updated by the EP change of the layer it feeds times the activity it carries (the mean of
the two steps), batch-averaged, with Δr_t = r_{t+1} − r_t and m_t = (r_t + r_{t+1}) / 2:

    ΔEP W{n}_{n+1}(t) = ⟨Δr^n_t ⊗ m^{n+1}_t⟩ / β        ΔEP B{n+1}_{n}(t) = ⟨Δr^{n+1}_t ⊗ m^n_t⟩ / β
    ΔEP W{n}_x(t) = ⟨Δr^n_t ⊗ r_x⟩ / β                 ΔEP b_n(t) = ⟨Δr^n_t⟩ / β
    ΔEP s^n(t) = ⟨Δs^n_t⟩ / β_eff                        (β_eff = εβ in EB, β in P)

`W + Bᵀ` of these is exactly the tied model's ∂Φ/∂θ-difference rule (PAPER.md §2-§3); BPTT traces
are the true per-parameter shares (W through layer n's drive, B through layer n+1's), whose sum
`W + Bᵀ` is the tied model's trace. So at B = Wᵀ every trace reproduces the tied model's. The torch
twin is `epbench_torch.asymmetric` (same formulas; parity is tested).

Native types as in `epbench_jax.network`: a dict of arrays keyed by canonical names, states a tuple
`(s⁰, …, sᴺ)` of `(B, sizes[n])` arrays; each phase one `jax.jit`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

from epbench.core.spec import ModelSpec

from .compiled import Family
from .network import activation, clip01

Params = dict[str, jax.Array]
States = tuple[jax.Array, ...]


# ---------------------------------------------------------------- dynamics (tied or asymmetric)


def input_of(model: ModelSpec, x: jax.Array) -> jax.Array:
    """r_x: ρ(x) in the EB setting, raw x in the P setting (PAPER.md §3)."""
    return activation(model.activation)[0](x) if model.setting == "EB" else x


def project(model: ModelSpec, params: Params, xr: jax.Array) -> States:
    """c^n = [n∈input] r_x W{n}_xᵀ + b_n, shape (B, sizes[n]), once per phase."""
    out = []
    for n, width in enumerate(model.sizes):
        c = jnp.broadcast_to(params[f"b{n}"], (xr.shape[0], width))
        if n in model.input_layers:
            c = c + xr @ params[f"W{n}_x"].T
        out.append(c)
    return tuple(out)


def neighbours(model: ModelSpec, s: States) -> States:
    """r: ρ(s) in the EB setting, s in the P setting."""
    rho = activation(model.activation)[0]
    return tuple(rho(v) for v in s) if model.setting == "EB" else tuple(s)


def drive(model: ModelSpec, params: Params, proj: States, r: States) -> States:
    """h^n = c^n + [n<N] r^{n+1} W{n}_{n+1}ᵀ + [n>0] r^{n−1} (B{n}_{n−1}ᵀ, or W{n−1}_{n} tied)."""
    h = []
    for n in range(len(r)):
        v = proj[n]
        if n < model.depth:
            v = v + r[n + 1] @ params[f"W{n}_{n + 1}"].T
        if n > 0:
            if model.feedback_angle is None:
                v = v + r[n - 1] @ params[f"W{n - 1}_{n}"]
            else:
                v = v + r[n - 1] @ params[f"B{n}_{n - 1}"].T
        h.append(v)
    return tuple(h)


def update(model: ModelSpec, s: States, h: States, y=None, beta=0.0) -> States:
    """New states from the drives (EB Euler step or P σ(h)), nudged when `y` is given, clamped
    when `model.clamp`."""
    rho, drho = activation(model.activation)
    eb = model.setting == "EB"
    out = []
    for n, (v, g) in enumerate(zip(s, h, strict=True)):
        new = v + model.epsilon * (drho(v) * g - v) if eb else rho(g)
        if n == 0 and y is not None:
            new = new + (model.epsilon if eb else 1.0) * beta * (y - v)
        out.append(clip01(new) if model.clamp else new)
    return tuple(out)


def step(model: ModelSpec, params: Params, proj: States, s: States, y=None, beta=0.0) -> States:
    """One synchronous step s_t → s_{t+1}."""
    return update(model, s, drive(model, params, proj, neighbours(model, s)), y, beta)


def run(model, params, proj, s, steps, y=None, beta=0.0) -> States:
    return lax.fori_loop(0, steps, lambda _, v: step(model, params, proj, v, y, beta), s)


def loss_errors(s: States, y: jax.Array):
    """Batch-mean ½‖s⁰ − y‖² and the number of misclassified examples (PAPER.md §1)."""
    loss = 0.5 * jnp.sum((s[0] - y) ** 2) / y.shape[0]
    return loss, jnp.sum(jnp.argmax(s[0], axis=1) != jnp.argmax(y, axis=1))


# ---------------------------------------------------------------- compiled phases


def free_phase(model: ModelSpec, params: Params, x, s: States, steps):
    """`steps` ≥ 1 free steps (traced count) and the residual ‖s_T − s_{T−1}‖."""
    proj = project(model, params, input_of(model, x))
    before = run(model, params, proj, s, steps - 1)
    after = step(model, params, proj, before)
    residual = jnp.sqrt(sum(jnp.sum((a - b) ** 2) for a, b in zip(after, before, strict=True)))
    return after, residual


def ep_traces_one(model: ModelSpec, params: Params, x, y, start: States, beta, steps: int):
    """Vector-field EP traces (module doc) for one signed β."""
    xr = input_of(model, x)
    proj = project(model, params, xr)

    def body(s, _):
        s = step(model, params, proj, s, y, beta)
        return s, s

    _, traj = lax.scan(body, start, None, length=steps)
    traj = [jnp.concatenate([v[None], t]) for v, t in zip(start, traj, strict=True)]
    r = [activation(model.activation)[0](v) for v in traj] if model.setting == "EB" else traj
    dr = [(v[1:] - v[:-1]) / (x.shape[0] * beta) for v in r]
    mid = [(v[1:] + v[:-1]) / 2 for v in r]
    beta_eff = model.epsilon * beta if model.setting == "EB" else beta
    out = {}
    for n in range(len(traj)):
        if n < model.depth:
            out[f"W{n}_{n + 1}"] = jnp.einsum("kbi,kbj->kij", dr[n], mid[n + 1])
            out[f"B{n + 1}_{n}"] = jnp.einsum("kbi,kbj->kij", dr[n + 1], mid[n])
        if n in model.input_layers:
            out[f"W{n}_x"] = jnp.einsum("kbi,bj->kij", dr[n], xr)
        out[f"b{n}"] = jnp.sum(dr[n], axis=1)
        out[f"s{n}"] = jnp.mean(traj[n][1:] - traj[n][:-1], axis=1) / beta_eff
    return out


def bptt_traces(model: ModelSpec, params: Params, x, y, start: States, steps: int):
    """BPTT traces from one reverse pass through the K steps (PAPER.md §2), as in
    `epbench_jax.network.bptt_traces`: zero perturbations ζ_k of the drives and η_k of the states,
    one `jax.grad`, then the per-step parameter shares ∂L/∂θ_k as the vjp of `drive` at ∂L/∂h_k,
    vmapped over the steps (B gets its share through the drive of the layer it feeds)."""
    proj = project(model, params, input_of(model, x))

    def body(s, pert):
        zeta, eta = pert
        r = neighbours(model, s)
        h = tuple(a + z for a, z in zip(drive(model, params, proj, r), zeta, strict=True))
        return tuple(a + e for a, e in zip(update(model, s, h), eta, strict=True)), r

    def loss(zeta, eta):
        s, rs = lax.scan(body, start, (zeta, eta), reverse=True)
        return 0.5 * jnp.sum((s[0] - y) ** 2) / y.shape[0], rs

    zeros = tuple(jnp.zeros((steps, *v.shape), v.dtype) for v in start)
    (g_zeta, g_eta), rs = jax.grad(loss, argnums=(0, 1), has_aux=True)(zeros, zeros)

    def share(r, g):
        _, vjp = jax.vjp(
            lambda p: drive(model, p, project(model, p, input_of(model, x)), r), params
        )
        return vjp(g)[0]

    out = jax.vmap(share)(rs, g_zeta)
    out.update({f"s{n}": jnp.sum(g, axis=1) for n, g in enumerate(g_eta)})
    return out


def nudged_sums(model: ModelSpec, params: Params, proj, xr, y, star: States, beta, steps: int):
    """Σ_{t<K} of the batch-summed vector-field EP numerators (module doc, without 1/(Bβ)),
    accumulated in the loop (O(1) memory in K): Σ_t Δr^n_t ⊗ m^{n+1}_t for W, the B analogue,
    r_K − r_* for biases and (r_K − r_*)ᵀ r_x for input weights."""
    r_star = neighbours(model, star)
    acc = {}
    for n in range(model.depth):
        acc[f"W{n}_{n + 1}"] = jnp.zeros(params[f"W{n}_{n + 1}"].shape, xr.dtype)
        acc[f"B{n + 1}_{n}"] = jnp.zeros(params[f"B{n + 1}_{n}"].shape, xr.dtype)

    def body(_, carry):
        s, r, acc = carry
        s = step(model, params, proj, s, y, beta)
        nxt = neighbours(model, s)
        acc = dict(acc)
        for n in range(model.depth):
            dn, dm = nxt[n] - r[n], nxt[n + 1] - r[n + 1]
            acc[f"W{n}_{n + 1}"] = acc[f"W{n}_{n + 1}"] + dn.T @ (r[n + 1] + dm / 2)
            acc[f"B{n + 1}_{n}"] = acc[f"B{n + 1}_{n}"] + dm.T @ (r[n] + dn / 2)
        return s, nxt, acc

    _, r, acc = lax.fori_loop(0, steps, body, (star, r_star, acc))
    for n in range(len(model.sizes)):
        dr = r[n] - r_star[n]
        acc[f"b{n}"] = jnp.sum(dr, axis=0)
        if n in model.input_layers:
            acc[f"W{n}_x"] = dr.T @ xr
    return acc


def ep_step(model, params, x, y, lrs, beta, *, free_steps: int, steps: int, symmetric: bool):
    """EP training step: θ ← θ + lr · Σ_t ΔEP_θ(β, t), vector-field rule (module doc); symmetric:
    the average of the +|β| and −|β| sums, each divided by its own signed β."""
    xr = input_of(model, x)
    proj = project(model, params, xr)
    zero = tuple(jnp.zeros((x.shape[0], w), x.dtype) for w in model.sizes)
    star = run(model, params, proj, zero, free_steps)
    loss, errors = loss_errors(star, y)
    betas = (jnp.abs(beta), -jnp.abs(beta)) if symmetric else (beta,)
    new = dict(params)
    for b in betas:
        sums = nudged_sums(model, params, proj, xr, y, star, b, steps)
        scale = 1.0 / (len(betas) * b * x.shape[0])
        new = {k: v + lrs[k] * scale * sums[k] for k, v in new.items()}
    return new, loss, errors


def bptt_step(model, params, x, y, lrs, *, free_steps: int, steps: int):
    """BPTT training step: T − K free steps outside the graph, then θ ← θ − lr ∂L/∂θ through the
    last K steps for every parameter, feedback weights included."""
    xr = input_of(model, x)
    zero = tuple(jnp.zeros((x.shape[0], w), x.dtype) for w in model.sizes)
    s0 = lax.stop_gradient(run(model, params, project(model, params, xr), zero, free_steps - steps))

    def loss(p):
        proj = project(model, p, xr)
        return loss_errors(run(model, p, proj, s0, steps), y)

    (value, errors), grads = jax.value_and_grad(loss, has_aux=True)(params)
    return {k: v - lrs[k] * grads[k] for k, v in params.items()}, value, errors


# ---------------------------------------------------------------- the family


def unsupported(model: ModelSpec) -> str | None:
    """None for a fully connected model with a feedback angle; otherwise why not."""
    if model.feedback_angle is None or model.conv is not None:
        return "asymmetric networks need a fully connected model with a feedback angle"
    return None


FAMILY = Family(
    name="asymmetric",
    unsupported=unsupported,
    free_phase=free_phase,
    ep_traces_one=ep_traces_one,
    bptt_traces=bptt_traces,
    ep_step=ep_step,
    bptt_step=bptt_step,
)
