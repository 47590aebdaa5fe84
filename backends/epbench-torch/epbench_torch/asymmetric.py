"""Asymmetric ("vector-field") fully connected networks in torch: feedback weights that are
independent parameters instead of the transposed forward weights (PAPER.md §6.5, §7).

Model (`ModelSpec.feedback_angle` set; canonical names in `epbench.core.params`). Row-vector batch form,
r = ρ(s) in the EB setting and r = s in the P setting, r_x = ρ(x) (EB) or x (P):

    h^n = u^n + [n<N] r^{n+1} W{n}_{n+1}ᵀ + [n>0] r^{n−1} B{n}_{n−1}ᵀ,
    u^n = [n∈input] r_x W{n}_xᵀ + b_n                        (computed once per phase)
    EB   s^n ← s^n + ε (−s^n + ρ'(s^n) ⊙ h^n)   [+ εβ (y − s⁰) on the output]
    P    s^n ← σ(h^n)                            [+ β (y − s⁰) on the output, after σ]

then the optional clamp to [0, 1]. With `B{n+1}_{n} = W{n}_{n+1}ᵀ` this is the tied model of
PAPER.md §3 (`epbench_torch.network`). Otherwise the dynamics are a vector field that is not the
gradient of any primitive function Φ (its Jacobian is not symmetric), so the GDU theorem does not
apply: how far EP's updates drift from BPTT's gradients as the angle between B and Wᵀ grows is what
the `asymmetric` task measures.

EP updates (vector-field EP: Scellier et al. 2018; the "VF" rule of Laborieux et al. 2021). There
is no ∂Φ/∂θ any more; each weight is updated by the EP change of the layer it feeds (its
postsynaptic side) times the activity it carries (its presynaptic side, the mean of the two steps),
batch-averaged, with Δr_t = r_{t+1} − r_t and m_t = (r_t + r_{t+1}) / 2 of the nudged phase:

    ΔEP W{n}_{n+1}(t) = ⟨Δr^n_t ⊗ m^{n+1}_t⟩ / β        ΔEP B{n+1}_{n}(t) = ⟨Δr^{n+1}_t ⊗ m^n_t⟩ / β
    ΔEP W{n}_x(t) = ⟨Δr^n_t ⊗ r_x⟩ / β                 ΔEP b_n(t) = ⟨Δr^n_t⟩ / β
    ΔEP s^n(t) = ⟨Δs^n_t⟩ / β_eff                        (β_eff = εβ in EB, β in P)

The two weight rules add up to the tied model's rule exactly,
`ΔEP W{n}_{n+1}(t) + ΔEP B{n+1}_{n}(t)ᵀ = ⟨r^n_{t+1} r^{n+1}_{t+1}ᵀ − r^n_t r^{n+1}_tᵀ⟩ / β`,
the ∂Φ/∂θ difference of PAPER.md §2-§3 that EP gives the tied weight (which feeds both layers).
BPTT traces are the true per-parameter shares ∂L/∂θ_{T−t}: W{n}_{n+1} through the drive of layer
n only, B{n+1}_{n} through that of layer n+1 only; their sum `W + Bᵀ` is the tied model's trace.
So at B = Wᵀ (angle 0) every trace of this model reproduces the tied model's. A feedback weight is
frozen in training by giving it the learning rate 0 (`epbench.core.params.learning_rates`).

Native types as in `epbench_torch.network`: parameters a `dict[str, torch.Tensor]` keyed by
canonical names, states a tuple `(s⁰, …, sᴺ)` of `(B, sizes[n])` tensors. The code favours
plain differentiable expressions over the in-place fast paths of the tied network.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from epbench.core.errors import BackendError
from epbench.core.params import param_shapes
from epbench.core.spec import ModelSpec

from .network import learning_rate

States = tuple[torch.Tensor, ...]
Params = dict[str, torch.Tensor]


def activation(name: str) -> tuple[Callable, Callable]:
    """(ρ, ρ') of PAPER.md §3 as plain differentiable torch expressions (ρ' of the state s)."""
    if name == "tanh":
        return torch.tanh, lambda s: 1.0 - torch.tanh(s) ** 2
    if name == "sigm":

        def sigm(v: torch.Tensor) -> torch.Tensor:
            return torch.sigmoid(4.0 * (v - 0.5))

        return sigm, lambda s: 4.0 * sigm(s) * (1.0 - sigm(s))
    if name == "hardsigm":
        return lambda v: torch.clamp(v, 0.0, 1.0), lambda s: ((s >= 0) & (s <= 1)).to(s.dtype)
    raise BackendError(f"torch backend: unknown activation {name!r}")


def feedback(model: ModelSpec, params: Params, n: int) -> torch.Tensor:
    """The matrix M with which layer n ≥ 1 receives r^{n−1} M: B{n}_{n−1}ᵀ, or W{n−1}_{n} (tied)."""
    if model.feedback_angle is None:
        return params[f"W{n - 1}_{n}"]
    return params[f"B{n}_{n - 1}"].t()


def input_of(model: ModelSpec, x: torch.Tensor) -> torch.Tensor:
    """r_x: ρ(x) in the EB setting, raw x in the P setting (PAPER.md §3)."""
    return activation(model.activation)[0](x) if model.setting == "EB" else x


def projection(model: ModelSpec, params: Params, xr: torch.Tensor) -> list[torch.Tensor]:
    """The static part of every drive, once per phase: u^n = [n∈input] r_x W{n}_xᵀ + b_n."""
    u = []
    for n, width in enumerate(model.sizes):
        v = params[f"b{n}"].expand(xr.shape[0], width)
        if n in model.input_layers:
            v = v + xr @ params[f"W{n}_x"].t()
        u.append(v)
    return u


def step(
    model: ModelSpec,
    params: Params,
    u: list[torch.Tensor],
    s: States,
    y: torch.Tensor | None = None,
    beta: float = 0.0,
) -> tuple[States, States]:
    """One synchronous step s_t → s_{t+1} of the tied or asymmetric model (module doc), nudged when
    `y` is given. Returns (s_{t+1}, r_t); θ enters only through the drives h (so through `u`)."""
    rho, rho_prime = activation(model.activation)
    eb = model.setting == "EB"
    r = tuple(rho(v) for v in s) if eb else s
    new = []
    for n in range(len(s)):
        h = u[n]
        if n < model.depth:
            h = h + r[n + 1] @ params[f"W{n}_{n + 1}"].t()
        if n > 0:
            h = h + r[n - 1] @ feedback(model, params, n)
        if eb:
            v = s[n] + model.epsilon * (rho_prime(s[n]) * h - s[n])
        else:
            v = rho(h)
        if n == 0 and y is not None:
            v = v + (model.epsilon if eb else 1.0) * beta * (y - s[0])
        new.append(v.clamp(0.0, 1.0) if model.clamp else v)
    return tuple(new), r


def loss_of(s0: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """L = (1/2B) Σ_b ‖s⁰_b − y_b‖² (PAPER.md §1).

    Divided by an int, not multiplied by 0.5: under `torch.func.jacfwd` (torch 2.13) a 0-d tensor
    times a Python float promotes float32 tangents to float64."""
    return ((s0 - y) ** 2).sum() / (2 * y.shape[0])


class TorchAsymmetricNetwork:
    """A fully connected model with independent feedback weights (module doc), one torch dtype and
    device; implements `epbench.core.protocols.Network` and the optional `rtrl_gradient`."""

    def __init__(self, model: ModelSpec, *, dtype: str, device: str) -> None:
        if model.feedback_angle is None or model.conv is not None:
            raise BackendError("torch backend: asymmetric networks need a fully connected model")
        self.model, self.dtype, self.device = model, dtype, device
        self._like = {
            "dtype": {"float32": torch.float32, "float64": torch.float64}[dtype],
            "device": torch.device(device),
        }
        self._shapes = param_shapes(model)
        self._layers = len(model.sizes)
        self._rho = activation(model.activation)[0]
        self._eb = model.setting == "EB"
        self._eps = float(model.epsilon) if self._eb else 1.0

    # ---- conversions

    def _tensor(self, a: Any) -> torch.Tensor:
        return torch.as_tensor(a, **self._like)

    def load(self, params: dict[str, np.ndarray]) -> Params:
        """Canonical numpy parameters → tensors of this dtype and device (copies)."""
        found = {k: tuple(np.shape(v)) for k, v in params.items()}
        if any(found.get(k) != shape for k, shape in self._shapes.items()):
            raise BackendError(f"torch backend: expected parameters {self._shapes}, found {found}")
        return {k: torch.tensor(np.asarray(params[k]), **self._like) for k in self._shapes}

    def dump(self, params: Params) -> dict[str, np.ndarray]:
        return {k: params[k].detach().cpu().numpy().copy() for k in self._shapes}

    def states(self, states: States) -> dict[str, np.ndarray]:
        return {f"s{n}": v.detach().cpu().numpy().copy() for n, v in enumerate(states)}

    def _start(self, start: Any, batch: int) -> States:
        if start is None:
            return tuple(torch.zeros(batch, w, **self._like) for w in self.model.sizes)
        return tuple(self._tensor(v) for v in start)

    def _check(self, *, beta: float | None = None, **steps: int) -> None:
        for key, value in steps.items():
            if int(value) < 0:
                raise BackendError(f"torch backend: {key} must be ≥ 0, found {value}")
        if beta is not None and beta == 0.0:
            raise BackendError("torch backend: EP needs a non-zero beta")

    def _run(self, params: Params, u, s: States, steps: int, y=None, beta: float = 0.0) -> States:
        for _ in range(steps):
            s, _ = step(self.model, params, u, s, y, beta)
        return s

    # ---- phases

    def free_phase(self, params: Params, x: Any, *, steps: int, start: States | None = None):
        """`steps` free steps from `start` (zeros when None); returns (s_T, ‖s_T − s_{T−1}‖)."""
        self._check(steps=steps)
        with torch.no_grad():
            xr = input_of(self.model, self._tensor(x))
            u = projection(self.model, params, xr)
            s = self._start(start, xr.shape[0])
            if steps == 0:
                return s, 0.0
            before = self._run(params, u, s, steps - 1)
            after, _ = step(self.model, params, u, before)
            residual = torch.sqrt(
                sum(((a - b) ** 2).sum() for a, b in zip(after, before, strict=True))
            )
        return after, float(residual)

    def _nudged(self, params: Params, u, start: States, y, beta: float, steps: int) -> list:
        """r_0 … r_K and s_0 … s_K of the nudged phase, per layer stacked (K+1, B, ·)."""
        s, rs, ss = start, [], [start]
        for _ in range(steps):
            s, r = step(self.model, params, u, s, y, beta)
            rs.append(r)
            ss.append(s)
        rs.append(tuple(self._rho(v) for v in s) if self._eb else s)
        return [
            (torch.stack([r[n] for r in rs]), torch.stack([v[n] for v in ss]))
            for n in range(self._layers)
        ]

    def ep_trace(self, params, x, y, *, start, beta, steps, symmetric=False):
        """Vector-field EP traces (module doc); symmetric: (Δ(+|β|) + Δ(−|β|)) / 2."""
        self._check(steps=steps, beta=beta)
        betas = (abs(beta), -abs(beta)) if symmetric else (float(beta),)
        model, out = self.model, {}
        with torch.no_grad():
            xr = input_of(model, self._tensor(x))
            yt, batch = self._tensor(y), xr.shape[0]
            u = projection(model, params, xr)
            start = self._start(start, batch)
            for b in betas:
                c = 1.0 / (len(betas) * b * batch)  # run weight, signed 1/β, batch mean
                layers = self._nudged(params, u, start, yt, b, steps)
                dr = [c * (r[1:] - r[:-1]) for r, _ in layers]
                mid = [(r[1:] + r[:-1]) / 2 for r, _ in layers]
                one = {}
                for n in range(self._layers):
                    if n < model.depth:
                        one[f"W{n}_{n + 1}"] = torch.einsum("kbi,kbj->kij", dr[n], mid[n + 1])
                        one[f"B{n + 1}_{n}"] = torch.einsum("kbi,kbj->kij", dr[n + 1], mid[n])
                    if n in model.input_layers:
                        one[f"W{n}_x"] = torch.einsum("kbi,bj->kij", dr[n], xr)
                    one[f"b{n}"] = dr[n].sum(1)
                    s = layers[n][1]
                    one[f"s{n}"] = c * batch * (s[1:] - s[:-1]).mean(1) / self._eps
                out = {k: out[k] + v if k in out else v for k, v in one.items()}
        return self._numpy(out, steps)

    def _numpy(self, out: dict[str, torch.Tensor], steps: int) -> dict[str, np.ndarray]:
        """Traces in canonical order (parameters, then states); zeros when steps == 0."""
        shapes = self._shapes | {f"s{n}": (w,) for n, w in enumerate(self.model.sizes)}
        return {
            k: out[k].cpu().numpy() if k in out else np.zeros((steps, *shape), dtype=self.dtype)
            for k, shape in shapes.items()
        }

    def bptt_trace(self, params, x, y, *, start, steps):
        """BPTT traces ∂L/∂θ_{T−t}, Σ_b ∂L/∂s_{T−t} (PAPER.md §2) in one backward pass.

        The per-step copy θ_t is a zero leaf δ^n_t added to each drive h^n_t (θ enters a step only
        there), so g^n_t = ∂L/∂h^n_t and, summed over the batch, ∂L/∂W{n}_{n+1},t = g^nᵀ r^{n+1}_t,
        ∂L/∂B{n+1}_{n},t = g^{n+1}ᵀ r^n_t, ∂L/∂W{n}_x,t = g^nᵀ r_x, ∂L/∂b_n,t = Σ_b g^n.
        """
        self._check(steps=steps)
        if steps == 0:
            return self._numpy({}, 0)
        model, layers = self.model, self._layers
        with torch.no_grad():
            xr = input_of(model, self._tensor(x))
            yt = self._tensor(y)
            u = projection(model, params, xr)
        s = tuple(v.detach() for v in self._start(start, xr.shape[0]))
        deltas, rs, ss = [], [], []
        with torch.enable_grad():
            for _ in range(steps):
                delta = [torch.zeros_like(v, requires_grad=True) for v in s]
                s, r = step(model, params, [a + d for a, d in zip(u, delta, strict=True)], s)
                deltas += delta
                rs.append([v.detach() for v in r])
                ss += s
            grads = torch.autograd.grad(
                loss_of(s[0], yt), deltas + ss, allow_unused=True, materialize_grads=True
            )
        with torch.no_grad():  # step k is trace index t = K − 1 − k: reverse time order
            g = [torch.stack(grads[n : steps * layers : layers][::-1]) for n in range(layers)]
            r = [torch.stack([rk[n] for rk in rs[::-1]]) for n in range(layers)]
            out = {}
            for n in range(layers):
                if n < model.depth:
                    out[f"W{n}_{n + 1}"] = torch.einsum("kbi,kbj->kij", g[n], r[n + 1])
                    out[f"B{n + 1}_{n}"] = torch.einsum("kbi,kbj->kij", g[n + 1], r[n])
                if n in model.input_layers:
                    out[f"W{n}_x"] = torch.einsum("kbi,bj->kij", g[n], xr)
                out[f"b{n}"] = g[n].sum(1)
                out[f"s{n}"] = torch.stack(grads[steps * layers + n :: layers][::-1]).sum(1)
        return self._numpy(out, steps)

    # ---- training

    def _loss_errors(self, s0: torch.Tensor, y: torch.Tensor):
        errors = (s0.argmax(1) != y.argmax(1)).sum()
        return loss_of(s0, y), errors

    def ep_step(self, params, x, y, *, free_steps, steps, beta, lrs, symmetric=False):
        """One EP step: θ ← θ + lr · Σ_t ΔEP_θ(β, t) with the vector-field rule (module doc).

        The sums are accumulated during the nudged phase (O(1) memory in K): Σ_t Δr^n_t ⊗ m^{n+1}_t
        for the weights, r_K − r_* for biases and input weights. Updates `params` in place.
        """
        self._check(free_steps=free_steps, steps=steps, beta=beta)
        model = self.model
        betas = (abs(beta), -abs(beta)) if symmetric else (float(beta),)
        with torch.no_grad():
            xr = input_of(model, self._tensor(x))
            yt, batch = self._tensor(y), xr.shape[0]
            u = projection(model, params, xr)
            star = self._run(params, u, self._start(None, batch), free_steps)
            r_star = tuple(self._rho(v) for v in star) if self._eb else star
            delta = {k: torch.zeros_like(v) for k, v in params.items()}
            for b in betas:
                c = 1.0 / (len(betas) * b * batch)
                s, r = star, r_star
                for _ in range(steps):
                    s, _ = step(model, params, u, s, yt, b)
                    r_next = tuple(self._rho(v) for v in s) if self._eb else s
                    for n in range(model.depth):
                        dn, dm = r_next[n] - r[n], r_next[n + 1] - r[n + 1]
                        delta[f"W{n}_{n + 1}"].addmm_(dn.t(), r[n + 1] + dm / 2, alpha=c)
                        delta[f"B{n + 1}_{n}"].addmm_(dm.t(), r[n] + dn / 2, alpha=c)
                    r = r_next
                for n in range(self._layers):
                    dr = r[n] - r_star[n]
                    delta[f"b{n}"].add_(dr.sum(0), alpha=c)
                    if n in model.input_layers:
                        delta[f"W{n}_x"].addmm_(dr.t(), xr, alpha=c)
            for name, d in delta.items():
                params[name].add_(d, alpha=learning_rate(lrs, name))
            loss, errors = self._loss_errors(star[0], yt)
        return params, loss, errors

    def bptt_step(self, params, x, y, *, free_steps, steps, lrs):
        """One BPTT step: T − K free steps without a graph, K with one, θ ← θ − lr · ∂L/∂θ for
        every parameter, the feedback weights included. Updates `params` in place."""
        self._check(free_steps=free_steps, steps=steps)
        if steps > free_steps:
            raise BackendError(f"torch backend: K = {steps} exceeds T = {free_steps}")
        model = self.model
        xr = input_of(model, self._tensor(x))
        yt = self._tensor(y)
        with torch.no_grad():
            u = projection(model, params, xr)
            s = self._run(params, u, self._start(None, xr.shape[0]), free_steps - steps)
        leaves = {k: v.detach().requires_grad_(True) for k, v in params.items()}
        with torch.enable_grad():
            s = self._run(leaves, projection(model, leaves, xr), s, steps)
            loss = loss_of(s[0], yt)
            grads = (
                torch.autograd.grad(
                    loss, list(leaves.values()), allow_unused=True, materialize_grads=True
                )
                if steps
                else [torch.zeros_like(v) for v in leaves.values()]
            )
        with torch.no_grad():
            for (name, value), grad in zip(params.items(), grads, strict=True):
                value.sub_(grad, alpha=learning_rate(lrs, name))
            loss, errors = self._loss_errors(s[0].detach(), yt)
        return params, loss, errors

    def predict(self, params, x, *, steps) -> np.ndarray:
        s, _ = self.free_phase(params, x, steps=steps)
        return s[0].argmax(1).cpu().numpy()

    def synchronize(self) -> None:
        if self._like["device"].type == "cuda":
            torch.cuda.synchronize(self._like["device"])

    def rtrl_gradient(self, params, x, y, *, start, steps) -> dict[str, np.ndarray]:
        """Σ_t ∇BPTT_θ(t) computed forward in time (`epbench_torch.rtrl`)."""
        from .rtrl import rtrl_gradient

        return rtrl_gradient(self, params, x, y, start=start, steps=steps)
