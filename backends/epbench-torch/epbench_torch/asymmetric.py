"""Asymmetric ("vector-field") fully connected networks in torch: feedback weights that are
independent parameters instead of the transposed forward weights (docs/theory.md §3.6, §6.5, §7).

Model (`ModelSpec.feedback_angle` set; canonical names in `epbench.core.params`): the dynamics of
`epbench_torch.network` with layer n ≥ 1 receiving r^{n−1} B{n}_{n−1}ᵀ instead of r^{n−1}
W{n−1}_{n} (`network.couplings`). With `B{n+1}_{n} = W{n}_{n+1}ᵀ` this is the tied model of §3;
otherwise the dynamics are a vector field that is not the gradient of any primitive function Φ
(its Jacobian is not symmetric), so the GDU theorem does not apply: how far EP's updates drift from
BPTT's gradients as the angle between B and Wᵀ grows is what the `asymmetric` task measures.

EP updates (vector-field EP: Scellier et al. 2018; the "VF" rule of Laborieux et al. 2021). There
is no ∂Φ/∂θ any more; each weight is updated by the EP change of the layer it feeds (its
postsynaptic side) times the activity it carries (its presynaptic side, the mean of the two steps),
batch-averaged, with Δr_t = r_{t+1} − r_t and m_t = (r_t + r_{t+1}) / 2 of the nudged phase:

    ΔEP W{n}_{n+1}(t) = ⟨Δr^n_t ⊗ m^{n+1}_t⟩ / β        ΔEP B{n+1}_{n}(t) = ⟨Δr^{n+1}_t ⊗ m^n_t⟩ / β
    ΔEP W{n}_x(t) = ⟨Δr^n_t ⊗ r_x⟩ / β                 ΔEP b_n(t) = ⟨Δr^n_t⟩ / β
    ΔEP s^n(t) = ⟨Δs^n_t⟩ / β_eff                        (β_eff = εβ in EB, β in P)

The two weight rules add up to the tied model's rule exactly,
`ΔEP W{n}_{n+1}(t) + ΔEP B{n+1}_{n}(t)ᵀ = ⟨r^n_{t+1} r^{n+1}_{t+1}ᵀ − r^n_t r^{n+1}_tᵀ⟩ / β`,
the ∂Φ/∂θ difference of §2-§3 that EP gives the tied weight (which feeds both layers). BPTT
traces (`network.bptt_traces`) are the true per-parameter shares ∂L/∂θ_{T−t}: W{n}_{n+1} through
the drive of layer n only, B{n+1}_{n} through that of layer n+1 only; their sum `W + Bᵀ` is the
tied model's trace. So at B = Wᵀ (angle 0) every trace reproduces the tied model's. A feedback
weight is frozen in training by giving it the learning rate 0
(`epbench.core.params.learning_rates`).

Only the EP phases are this family's own; the free phase, BPTT and RTRL are `network`'s.
"""

from __future__ import annotations

import torch

from epbench.core.spec import ModelSpec

from . import network as fc
from .adapter import Family, loss_errors, nudges

States = tuple[torch.Tensor, ...]
Params = dict[str, torch.Tensor]


def unsupported(model: ModelSpec) -> str | None:
    """None for a fully connected model with a feedback angle; otherwise why not."""
    if model.feedback_angle is None or model.conv is not None:
        return "asymmetric networks need a fully connected model with a feedback angle"
    return None


def ep_traces(model: ModelSpec, params: Params, x, y, start: States, beta, steps, symmetric):
    """Vector-field EP traces (module doc) of the nudged phase from `start`; symmetric:
    (Δ(+|β|) + Δ(−|β|)) / 2, each divided by its own signed β."""
    betas = nudges(beta, symmetric=symmetric)
    eps = float(model.epsilon) if model.setting == "EB" else 1.0
    xr = fc.input_of(model, x)
    u, weights = fc.projection(model, params, xr), fc.couplings(model, params)
    batch, out = x.shape[0], {}
    for b in betas:
        c = 1.0 / (len(betas) * b * batch)  # run weight, signed 1/β, batch mean
        states, rs = fc.trajectory(model, start, u, weights, y, b, steps)
        dr = [c * (r[1:] - r[:-1]) for r in rs]
        mid = [(r[1:] + r[:-1]) / 2 for r in rs]
        one = {}
        for n in range(len(model.sizes)):
            if n < model.depth:
                one[f"W{n}_{n + 1}"] = fc.pair_products(dr[n], mid[n + 1], None, None)
                one[f"B{n + 1}_{n}"] = fc.pair_products(dr[n + 1], mid[n], None, None)
            if n in model.input_layers:
                one[f"W{n}_x"] = fc.outer_steps(dr[n], xr)
            one[f"b{n}"] = dr[n].sum(1)
            one[f"s{n}"] = c * batch * (states[n][1:] - states[n][:-1]).mean(1) / eps
        out = {k: out[k] + v if k in out else v for k, v in one.items()}
    return out


def ep_step(model: ModelSpec, params: Params, x, y, lrs, beta, *, free_steps, steps, symmetric):
    """One EP step: θ ← θ + lr · Σ_t ΔEP_θ(β, t) with the vector-field rule (module doc).

    The sums are accumulated during the nudged phase (O(1) memory in K): Σ_t Δr^n_t ⊗ m^{n+1}_t
    for the weights, r_K − r_* for biases and input weights. Updates `params` in place."""
    betas = nudges(beta, symmetric=symmetric)
    with fc.small_ops(model, x):
        xr = fc.input_of(model, x)
        u, weights = fc.projection(model, params, xr), fc.couplings(model, params)
        star, _ = fc.relax(model, fc.zeros(model, x), u, weights, free_steps)
        r_star = fc.neighbours(model, star)
        delta = {k: torch.zeros_like(v) for k, v in params.items()}
        for b in betas:
            c = 1.0 / (len(betas) * b * x.shape[0])
            s, r = star, r_star
            for _ in range(steps):
                s, _ = fc.step(model, s, u, weights, y, b)
                r_next = fc.neighbours(model, s)
                for n in range(model.depth):
                    dn, dm = r_next[n] - r[n], r_next[n + 1] - r[n + 1]
                    delta[f"W{n}_{n + 1}"].addmm_(dn.t(), r[n + 1] + dm / 2, alpha=c)
                    delta[f"B{n + 1}_{n}"].addmm_(dm.t(), r[n] + dn / 2, alpha=c)
                r = r_next
            for n in range(len(model.sizes)):
                dr = r[n] - r_star[n]
                delta[f"b{n}"].add_(dr.sum(0), alpha=c)
                if n in model.input_layers:
                    delta[f"W{n}_x"].addmm_(dr.t(), xr, alpha=c)
        for name, d in delta.items():
            params[name].add_(d, alpha=lrs[name])
        loss, errors = loss_errors(star[0], y)
    return params, loss, errors


FAMILY = Family(
    name="asymmetric",
    unsupported=unsupported,
    free_phase=fc.free_phase,
    ep_traces=ep_traces,
    bptt_traces=fc.bptt_traces,
    ep_step=ep_step,
    bptt_step=fc.bptt_step,
    rtrl=fc.rtrl,
)
