"""A pure-numpy backend for the prototypical (P) setting of docs/theory.md §3, written to be read.

This is the example third-party backend: it implements `epbench.core.protocols.Backend` and
`Network` with nothing but numpy, small and slow, so a plugin author can see every piece in one
page.

Model (docs/theory.md §3, "Prototypical setting"); rows are examples, layer 0 is the output layer:

    hⁿ = [n<N] sⁿ⁺¹ W{n}_{n+1}ᵀ + [n>0] sⁿ⁻¹ W{n−1}_{n} + [n ∈ input] x W{n}_xᵀ + b_n
    sⁿ_{t+1} = σ(hⁿ_t)            all layers synchronously from s_t; raw pixels x (no σ on x)
    s⁰_{t+1} += β (y − s⁰_t)       nudged phase only (added after σ)

    Φ = Σ_n sⁿᵀ W{n}_{n+1} sⁿ⁺¹ + Σ_{n ∈ input} sⁿᵀ W{n}_x x + Σ_n b_nᵀ sⁿ     (so hⁿ = ∂Φ/∂sⁿ)

Native types: parameters are a dict of numpy arrays under the canonical names
(`epbench.core.params`); states are a list of arrays `[s⁰, …, sᴺ]`, each (B, sizes[n]).
"""

from __future__ import annotations

import platform
from collections.abc import Callable, Iterator

import numpy as np

from epbench.core.errors import BackendError
from epbench.core.params import param_shapes
from epbench.core.spec import ModelSpec
from epbench.core.support import support_reason
from epbench.core.validate import (
    check_batch,
    check_beta,
    check_lrs,
    check_params,
    check_steps,
    check_truncation,
)

Array = np.ndarray
States = list[Array]
Params = dict[str, Array]
WHERE = "numpy-example"


def activation(name: str) -> tuple[Callable[[Array], Array], Callable[[Array], Array]]:
    """σ and σ' (both functions of the pre-activation h) of an activation (docs/theory.md §3)."""
    if name == "tanh":
        return np.tanh, lambda h: 1.0 - np.tanh(h) ** 2
    if name == "sigm":
        # σ(h) = 1/(1 + e^{−4(h−½)}) written as (1 + tanh(2(h−½)))/2: same function, no overflow.
        def sigm(h: Array) -> Array:
            return 0.5 * (1.0 + np.tanh(2.0 * (h - 0.5)))

        return sigm, lambda h: 4.0 * sigm(h) * (1.0 - sigm(h))
    if name == "hardsigm":
        return (lambda h: np.clip(h, 0.0, 1.0)), lambda h: ((h >= 0) & (h <= 1)).astype(h.dtype)
    raise BackendError(f"numpy-example: unknown activation {name!r}; known: tanh, sigm, hardsigm")


class NumpyNetwork:
    """One P-setting model for one dtype on the CPU (see `epbench.core.protocols.Network`)."""

    def __init__(self, model: ModelSpec, *, dtype: str, device: str) -> None:
        self.model = model
        self.dtype = dtype
        self.device = device
        self.shapes = param_shapes(model)
        self.sigma, self.dsigma = activation(model.activation)
        self.N = model.depth

    # --- parameters and states ------------------------------------------------------------------

    def load(self, params: dict[str, Array]) -> Params:
        """Canonical numpy parameters → our own copies in our dtype (names and shapes checked by
        `epbench.core.validate`, the wording every backend shares)."""
        check_params(self.model, params, where=WHERE)
        return {name: np.array(params[name], dtype=self.dtype) for name in self.shapes}

    def dump(self, params: Params) -> dict[str, Array]:
        return {name: value.copy() for name, value in params.items()}

    def states(self, states: States) -> dict[str, Array]:
        return {f"s{n}": s.copy() for n, s in enumerate(states)}

    def synchronize(self) -> None:
        """Numpy runs eagerly on the CPU: nothing is ever queued."""

    def _check(self, x: Array, y: Array, *, beta: float | None = None, **steps: int) -> None:
        """The arguments of a call, checked by `epbench.core.validate` (one wording for all)."""
        check_batch(self.model, x, y, where=WHERE)
        for name, value in steps.items():
            check_steps(name, value, where=WHERE)
        if beta is not None:
            check_beta(beta, where=WHERE)

    # --- dynamics --------------------------------------------------------------------------------

    def _constant(self, params: Params, x: Array) -> States:
        """The static part of every hⁿ: b_n, plus x W{n}_xᵀ for input layers. Once per phase."""
        return [
            params[f"b{n}"] + (x @ params[f"W{n}_x"].T if n in self.model.input_layers else 0.0)
            for n in range(self.N + 1)
        ]

    def _pre(self, params: Params, s: States, c: States) -> States:
        """Pre-activations hⁿ = ∂Φ/∂sⁿ from the states s_t (docs/theory.md §3, P setting)."""
        h = []
        for n in range(self.N + 1):
            hn = c[n]
            if n < self.N:
                hn = hn + s[n + 1] @ params[f"W{n}_{n + 1}"].T
            if n > 0:
                hn = hn + s[n - 1] @ params[f"W{n - 1}_{n}"]
            h.append(hn)
        return h

    def _trajectory(
        self,
        params: Params,
        c: States,
        s: States,
        steps: int,
        y: Array | None = None,
        beta: float = 0.0,
    ) -> Iterator[States]:
        """Yield s_1 … s_steps from s_0 = `s`; with `beta`, nudge the output by β (y − s⁰_t)."""
        for _ in range(steps):
            nxt = [self.sigma(hn) for hn in self._pre(params, s, c)]
            if beta:
                nxt[0] = nxt[0] + beta * (y - s[0])
            yield nxt
            s = nxt

    def _start(self, start: States | None, batch: int) -> States:
        if start is None:
            return [np.zeros((batch, width), dtype=self.dtype) for width in self.model.sizes]
        return [np.asarray(s, dtype=self.dtype) for s in start]

    def _arrays(self, *arrays: Array) -> tuple[Array, ...]:
        return tuple(np.asarray(a, dtype=self.dtype) for a in arrays)

    def free_phase(
        self, params: Params, x: Array, *, steps: int, start: States | None = None
    ) -> tuple[States, float]:
        """`steps` free steps from `start` (zeros when None); returns (s_T, ‖s_T − s_{T−1}‖)."""
        check_steps("steps", steps, where=WHERE)
        check_batch(self.model, x, where=WHERE)
        (x,) = self._arrays(x)
        s = self._start(start, x.shape[0])
        residual = 0.0
        for nxt in self._trajectory(params, self._constant(params, x), s, steps):
            residual = float(
                np.sqrt(sum(np.sum((new - old) ** 2) for new, old in zip(nxt, s, strict=True)))
            )
            s = nxt
        return s, residual

    def predict(self, params: Params, x: Array, *, steps: int) -> Array:
        s, _ = self.free_phase(params, x, steps=steps)
        return np.argmax(s[0], axis=1)

    def _loss(self, s0: Array, y: Array) -> tuple[Array, Array]:
        """Batch-mean ½‖s⁰ − y‖² and the number of misclassified examples, as 0-d arrays."""
        loss = 0.5 * np.mean(np.sum((s0 - y) ** 2, axis=1))
        errors = np.sum(np.argmax(s0, axis=1) != np.argmax(y, axis=1))
        return np.asarray(loss, dtype=self.dtype), np.asarray(errors)

    # --- Equilibrium Propagation ---------------------------------------------------------------

    def _dphi(self, s: States, x: Array) -> Params:
        """∂Φ/∂θ at the states s, averaged over the batch (docs/theory.md §3.3, the EP update)."""
        B = x.shape[0]
        out = {}
        for n in range(self.N + 1):
            if n < self.N:
                out[f"W{n}_{n + 1}"] = s[n].T @ s[n + 1] / B
            if n in self.model.input_layers:
                out[f"W{n}_x"] = s[n].T @ x / B
            out[f"b{n}"] = s[n].mean(axis=0)
        return out

    def _ep_trace_one(
        self, params: Params, x: Array, y: Array, start: States, beta: float, steps: int
    ) -> dict[str, Array]:
        """ΔEP_s(β, t) and ΔEP_θ(β, t) for t < steps (docs/theory.md §2), one signed β."""
        trace = {name: np.zeros((steps, *shape), self.dtype) for name, shape in self.shapes.items()}
        trace |= {f"s{n}": np.zeros((steps, w), self.dtype) for n, w in enumerate(self.model.sizes)}
        s, phi = start, self._dphi(start, x)
        for t, nxt in enumerate(
            self._trajectory(params, self._constant(params, x), s, steps, y, beta)
        ):
            phi_next = self._dphi(nxt, x)
            for name in self.shapes:
                trace[name][t] = (phi_next[name] - phi[name]) / beta
            for n in range(self.N + 1):
                trace[f"s{n}"][t] = np.mean(nxt[n] - s[n], axis=0) / beta
            s, phi = nxt, phi_next
        return trace

    def ep_trace(
        self,
        params: Params,
        x: Array,
        y: Array,
        *,
        start: States,
        beta: float,
        steps: int,
        symmetric: bool = False,
    ) -> dict[str, Array]:
        """EP traces of the nudged phase from `start` = s_*; symmetric = (Δ(+|β|) + Δ(−|β|)) / 2."""
        self._check(x, y, steps=steps, beta=beta)
        x, y = self._arrays(x, y)
        start = self._start(start, x.shape[0])
        if not symmetric:
            return self._ep_trace_one(params, x, y, start, beta, steps)
        plus = self._ep_trace_one(params, x, y, start, abs(beta), steps)
        minus = self._ep_trace_one(params, x, y, start, -abs(beta), steps)
        return {name: (plus[name] + minus[name]) / 2 for name in plus}

    def ep_step(
        self,
        params: Params,
        x: Array,
        y: Array,
        *,
        free_steps: int,
        steps: int,
        beta: float,
        lrs: dict[str, float],
        symmetric: bool = False,
    ) -> tuple[Params, Array, Array]:
        """Free phase, nudged phase(s), θ ← θ + lr · (∂Φ/∂θ(s^β_K) − ∂Φ/∂θ(s_*)) / β."""
        self._check(x, y, free_steps=free_steps, steps=steps, beta=beta)
        lrs = check_lrs(self.model, lrs, where=WHERE)
        x, y = self._arrays(x, y)
        s_star, _ = self.free_phase(params, x, steps=free_steps)
        loss, errors = self._loss(s_star[0], y)
        c, phi_star = self._constant(params, x), self._dphi(s_star, x)
        betas = (abs(beta), -abs(beta)) if symmetric else (beta,)
        update = {name: np.zeros(shape, self.dtype) for name, shape in self.shapes.items()}
        for b in betas:
            s_beta = s_star
            for s_beta in self._trajectory(params, c, s_star, steps, y, b):  # noqa: B007
                pass  # run the nudged phase to s^β_K
            phi = self._dphi(s_beta, x)
            for name in update:
                update[name] += (phi[name] - phi_star[name]) / (b * len(betas))
        new = {name: params[name] + lrs[name] * update[name] for name in params}
        return new, loss, errors

    # --- Backpropagation Through Time ------------------------------------------------------------

    def _tape(self, params: Params, c: States, start: States, steps: int):
        """Run `steps` free steps from `start`, keeping states s_0 … s_K and pre-activations h_t."""
        states, pres = [start], []
        for _ in range(steps):
            pres.append(self._pre(params, states[-1], c))
            states.append([self.sigma(hn) for hn in pres[-1]])
        return states, pres

    def _backward(
        self, params: Params, x: Array, y: Array, states: list[States], pres: list[States]
    ) -> Iterator[tuple[States, Params]]:
        """Yield (∂L/∂s_{K−t}, ∂L/∂θ_{K−t}) for t = 0 … K−1 in one backward pass (theory.md §2).

        L = (1/2B) Σ_b ‖s⁰_K − y‖². ∂L/∂θ_{K−t} is the gradient through the one transition
        s_{K−t−1} → s_{K−t} (a per-step copy of θ). With g = ∂L/∂s_{k+1}, δⁿ = gⁿ ⊙ σ'(hⁿ_k):
            ∂/∂W{n}_{n+1} = δⁿᵀ sⁿ⁺¹_k + sⁿ_kᵀ δⁿ⁺¹   (W{n}_{n+1} feeds layer n, its transpose n+1)
            ∂/∂W{n}_x = δⁿᵀ x,   ∂/∂b_n = Σ_b δⁿ
            ∂L/∂sⁿ_k = [n>0] δⁿ⁻¹ W{n−1}_{n} + [n<N] δⁿ⁺¹ W{n}_{n+1}ᵀ
        """
        N, K = self.N, len(pres)
        g = [np.zeros_like(s) for s in states[-1]]
        g[0] = (states[-1][0] - y) / x.shape[0]
        for t in range(K):
            s, h = states[K - 1 - t], pres[K - 1 - t]
            delta = [g[n] * self.dsigma(h[n]) for n in range(N + 1)]
            grads = {}
            for n in range(N + 1):
                if n < N:
                    grads[f"W{n}_{n + 1}"] = delta[n].T @ s[n + 1] + s[n].T @ delta[n + 1]
                if n in self.model.input_layers:
                    grads[f"W{n}_x"] = delta[n].T @ x
                grads[f"b{n}"] = delta[n].sum(axis=0)
            yield g, grads
            g = [
                (delta[n - 1] @ params[f"W{n - 1}_{n}"] if n > 0 else 0.0)
                + (delta[n + 1] @ params[f"W{n}_{n + 1}"].T if n < N else 0.0)
                for n in range(N + 1)
            ]

    def bptt_trace(
        self, params: Params, x: Array, y: Array, *, start: States, steps: int
    ) -> dict[str, Array]:
        """∇BPTT_s(t) = Σ_b ∂L/∂s_{K−t} and ∇BPTT_θ(t) = ∂L/∂θ_{K−t} for t < K, from `start`."""
        self._check(x, y, steps=steps)
        x, y = self._arrays(x, y)
        states, pres = self._tape(
            params, self._constant(params, x), self._start(start, x.shape[0]), steps
        )
        trace = {name: np.zeros((steps, *shape), self.dtype) for name, shape in self.shapes.items()}
        trace |= {f"s{n}": np.zeros((steps, w), self.dtype) for n, w in enumerate(self.model.sizes)}
        for t, (g, grads) in enumerate(self._backward(params, x, y, states, pres)):
            for name, value in grads.items():
                trace[name][t] = value
            for n, gn in enumerate(g):
                trace[f"s{n}"][t] = gn.sum(axis=0)
        return trace

    def bptt_step(
        self,
        params: Params,
        x: Array,
        y: Array,
        *,
        free_steps: int,
        steps: int,
        lrs: dict[str, float],
    ) -> tuple[Params, Array, Array]:
        """T − K free steps, K taped steps, θ ← θ − lr · Σ_t ∇BPTT_θ(t); loss/errors at s_T."""
        self._check(x, y, free_steps=free_steps, steps=steps)
        check_truncation(steps=steps, free_steps=free_steps, where=WHERE)
        lrs = check_lrs(self.model, lrs, where=WHERE)
        x, y = self._arrays(x, y)
        start, _ = self.free_phase(params, x, steps=free_steps - steps)
        c = self._constant(params, x)
        states, pres = self._tape(params, c, start, steps)
        loss, errors = self._loss(states[-1][0], y)
        total = {name: np.zeros(shape, self.dtype) for name, shape in self.shapes.items()}
        for _, grads in self._backward(params, x, y, states, pres):
            for name, value in grads.items():
                total[name] += value
        new = {name: params[name] - lrs[name] * total[name] for name in params}
        return new, loss, errors


class NumpyBackend:
    """The `numpy-example` backend (see `epbench.core.protocols.Backend`): P setting, CPU only."""

    name = "numpy-example"
    # The ModelSpec fields this backend understands; a cell setting any other is a skip.
    model_fields = frozenset({"setting", "inputs", "sizes", "input_to", "activation"})

    def versions(self) -> dict[str, str]:
        return {"numpy": np.__version__}

    def device_info(self, device: str) -> str:
        if device != "cpu":
            raise BackendError(f"numpy-example: expected device 'cpu', found {device!r}")
        return platform.processor() or "CPU"

    def supports(self, model: ModelSpec, *, dtype: str, device: str) -> str | None:
        """Why this backend cannot build the combination (epbench records a skip), or None.

        Called after the core's own checks (`epbench.core.support.support_reason`: dtype and
        device names, and every set `ModelSpec` field in `model_fields`), so only what is
        particular to this backend is left: the P setting, and the CPU."""
        if model.setting != "P":
            return f"numpy-example implements the P setting only, not {model.setting!r}"
        if device != "cpu":
            return f"numpy-example runs on 'cpu' only, not {device!r}"
        return None

    def build(self, model: ModelSpec, *, dtype: str, device: str) -> NumpyNetwork:
        reason = support_reason(self, model, dtype=dtype, device=device)
        if reason is not None:
            raise BackendError(reason)
        return NumpyNetwork(model, dtype=dtype, device=device)
