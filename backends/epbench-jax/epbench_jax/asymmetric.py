"""Asymmetric ("vector-field") fully connected networks in JAX: feedback weights that are
independent parameters instead of the transposed forward weights (docs/theory.md §3.6, §6.5, §7).

Model (`ModelSpec.feedback_angle` set; canonical names in `epbench.core.params`). Row-vector batch
form, r = ρ(s) in the EB setting and r = s in the P setting, r_x = ρ(x) (EB) or x (P):

    h^n = c^n + [n<N] r^{n+1} W{n}_{n+1}ᵀ + [n>0] r^{n−1} B{n}_{n−1}ᵀ,
    c^n = [n∈input] r_x W{n}_xᵀ + b_n                        (computed once per phase)
    EB   s^n ← s^n + ε (−s^n + ρ'(s^n) ⊙ h^n)   [+ εβ (y − s⁰) on the output]
    P    s^n ← σ(h^n)                            [+ β (y − s⁰) on the output, after σ]

then the optional clamp to [0, 1]. With `B{n+1}_{n} = W{n}_{n+1}ᵀ` this is the tied model of
docs/theory.md §3 (`epbench_jax.network`); otherwise the dynamics are a vector field that is not the
gradient of any primitive function Φ, and the GDU theorem does not apply.

EP updates (vector-field EP: Scellier et al. 2018; the "VF" rule of Laborieux et al. 2021): each
weight is updated by the EP change of the layer it feeds times the activity it carries (the mean of
the two steps), batch-averaged, with Δr_t = r_{t+1} − r_t and m_t = (r_t + r_{t+1}) / 2:

    ΔEP W{n}_{n+1}(t) = ⟨Δr^n_t ⊗ m^{n+1}_t⟩ / β        ΔEP B{n+1}_{n}(t) = ⟨Δr^{n+1}_t ⊗ m^n_t⟩ / β
    ΔEP W{n}_x(t) = ⟨Δr^n_t ⊗ r_x⟩ / β                 ΔEP b_n(t) = ⟨Δr^n_t⟩ / β
    ΔEP s^n(t) = ⟨Δs^n_t⟩ / β_eff                        (β_eff = εβ in EB, β in P)

`W + Bᵀ` of these is exactly the tied model's ∂Φ/∂θ-difference rule (docs/theory.md §2-§3); BPTT
traces are the true per-parameter shares (W through layer n's drive, B through layer n+1's), whose
sum `W + Bᵀ` is the tied model's trace. So at B = Wᵀ every trace reproduces the tied model's. The
torch twin is `epbench_torch.asymmetric` (same formulas; parity is tested).

The dynamics are `epbench_jax.network`'s (its `drive` takes B where the model has it), and so are
the free phase, the BPTT traces and training step and RTRL; only the EP phases are this family's
own. Native types as in `epbench_jax.network`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

from epbench.core.spec import ModelSpec

from . import network as nw
from .compiled import Family

Params = dict[str, jax.Array]
States = tuple[jax.Array, ...]


def ep_traces_one(model: ModelSpec, params: Params, x, y, start: States, beta, steps: int):
    """Vector-field EP traces (module doc) for one signed β."""
    traj = nw.nudged_states(model, params, x, y, start, beta, steps)
    r, xr = nw.neighbours(model, traj), nw.input_of(model, x)
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


def nudged_sums(model: ModelSpec, params: Params, proj, xr, y, star: States, beta, steps: int):
    """Σ_{t<K} of the batch-summed vector-field EP numerators (module doc, without 1/(Bβ)),
    accumulated in the loop (O(1) memory in K): Σ_t Δr^n_t ⊗ m^{n+1}_t for W, the B analogue,
    r_K − r_* for biases and (r_K − r_*)ᵀ r_x for input weights."""
    r_star = nw.neighbours(model, star)
    acc = {}
    for n in range(model.depth):
        acc[f"W{n}_{n + 1}"] = jnp.zeros(params[f"W{n}_{n + 1}"].shape, xr.dtype)
        acc[f"B{n + 1}_{n}"] = jnp.zeros(params[f"B{n + 1}_{n}"].shape, xr.dtype)

    def body(_, carry):
        s, r, acc = carry
        s = nw.step(model, params, proj, s, y, beta)
        nxt = nw.neighbours(model, s)
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
    xr, proj = nw.input_of(model, x), nw.project(model, params, x)
    zero = tuple(jnp.zeros((x.shape[0], w), x.dtype) for w in model.sizes)
    star = nw.run(model, params, proj, zero, free_steps)
    loss, errors = nw.loss_errors(star, y)
    betas = (jnp.abs(beta), -jnp.abs(beta)) if symmetric else (beta,)
    new = dict(params)
    for b in betas:
        sums = nudged_sums(model, params, proj, xr, y, star, b, steps)
        scale = 1.0 / (len(betas) * b * x.shape[0])
        new = {k: v + lrs[k] * scale * sums[k] for k, v in new.items()}
    return new, loss, errors


def unsupported(model: ModelSpec) -> str | None:
    """None for a fully connected model with a feedback angle; otherwise why not."""
    if model.feedback_angle is None or model.conv is not None:
        return "asymmetric networks need a fully connected model with a feedback angle"
    return None


FAMILY = Family(
    name="asymmetric",
    unsupported=unsupported,
    free_phase=nw.free_phase,
    ep_traces_one=ep_traces_one,
    bptt_traces=nw.bptt_traces,
    ep_step=ep_step,
    bptt_step=nw.bptt_step,
    rtrl=nw.rtrl,
)
