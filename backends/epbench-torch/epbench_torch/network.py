"""The torch `Network` (epbench.core.protocols.Network) for fully connected models, EB and P settings.

Native types: parameters are a `dict[str, torch.Tensor]` keyed by canonical names (epbench.core.params),
states a tuple `(s⁰, …, sᴺ)` of `(B, sizes[n])` tensors. Row-vector batch form throughout: with
`W{n}_{n+1}` of shape `(sizes[n], sizes[n+1])`, layer n receives `r^{n+1} W{n}_{n+1}ᵀ` and layer n+1
receives `r^n W{n}_{n+1}`, where `r = ρ(s)` in the EB setting and `r = s` in the P setting.

The drive of layer n (PAPER.md §3) is

    h^n = [n<N] r^{n+1} W{n}_{n+1}ᵀ + [n>0] r^{n−1} W{n−1}_{n} + u^n,
    u^n = [n∈input] r_x W{n}_xᵀ + b_n          (r_x = ρ(x) in EB, raw x in P)

where the static projection `u` is computed once per phase call. One step (all layers from s_t):

    EB   s^n ← s^n + ε (−s^n + ρ'(s^n) ⊙ h^n)   [+ εβ (y − s⁰) on the output]   = s − ε ∂E/∂s
    P    s^n ← σ(h^n)                            [+ β (y − s⁰) on the output, after σ]

then, if `model.clamp`, every state is clipped to [0, 1]. Unlike the reference code the EB output
layer keeps its ρ'(s⁰) factor, so F = ∂Φ_ε/∂s exactly (PAPER.md §3).

∂Φ/∂θ, without the ε of Φ_ε = ½‖s‖² − εE (it cancels against β_eff = εβ, PAPER.md §2-§3):
W{n}_{n+1}: mean_b r^n r^{n+1}ᵀ, W{n}_x: mean_b r^n r_xᵀ, b_n: mean_b r^n. So every EP weight
trace divides by β and every EP neuron trace by β_eff (εβ in EB, β in P).

Training steps update the parameter tensors in place and return the same dict.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from types import MappingProxyType
from typing import Any

import numpy as np
import torch

from epbench.core.errors import BackendError
from epbench.core.params import param_shapes
from epbench.core.spec import ModelSpec

States = tuple[torch.Tensor, ...]
Params = dict[str, torch.Tensor]
Out = torch.Tensor | None

# Per-step CPU work below this many state entries (batch × widest layer) runs on one thread: such
# ops are too small to gain from intra-op threads, and the worker threads' fork/join and spin-wait
# cost more than the op itself (measured 1.4× slower on 2 quiet cores, up to 5× on busy ones).
# Training steps of such models run wholly on one thread: their once-per-step products (input
# projection, weight update; ~16 MFLOP for 784-512) gained < 20 % from a second thread on quiet
# cores but took up to 20× longer when another process held a core (OpenMP barrier spin-waits).
SERIAL_WORK = 1 << 16


# Activations (PAPER.md §3) as ρ(x) and ρ'(s, ρ(s)). With `out=None` they are plain differentiable
# expressions (for autograd graphs); given a buffer they write into it (the free-phase fast path).


def _tanh(x: torch.Tensor, out: Out = None) -> torch.Tensor:
    return torch.tanh(x, out=out)


def _tanh_prime(s: torch.Tensor, r: torch.Tensor, out: Out = None) -> torch.Tensor:
    base = torch.ones_like(r) if out is None else out.fill_(1.0)
    return base.addcmul_(r, r, value=-1.0)  # 1 − ρ(s)²


def _sigm(x: torch.Tensor, out: Out = None) -> torch.Tensor:
    return torch.mul(x, 4.0, out=out).sub_(2.0).sigmoid_()  # 1 / (1 + e^{−4(x−½)})


def _sigm_prime(s: torch.Tensor, r: torch.Tensor, out: Out = None) -> torch.Tensor:
    return torch.addcmul(r, r, r, value=-1.0, out=out).mul_(4.0)  # 4 ρ (1 − ρ)


def _hardsigm(x: torch.Tensor, out: Out = None) -> torch.Tensor:
    return torch.clamp(x, 0.0, 1.0, out=out)


def _hardsigm_prime(s: torch.Tensor, r: torch.Tensor, out: Out = None) -> torch.Tensor:
    inside = ((s >= 0.0) & (s <= 1.0)).to(s.dtype)  # 1 on [0, 1], else 0
    return inside if out is None else out.copy_(inside)


ACTIVATIONS = MappingProxyType(
    {
        "tanh": (_tanh, _tanh_prime),
        "sigm": (_sigm, _sigm_prime),
        "hardsigm": (_hardsigm, _hardsigm_prime),
    }
)


# The same activations in the form the fast path (`_relax`) uses, to spend fewer ops per step:
# ρ(x) = squash(a·x + c) (`squash(x, out=)`, in place when out is x) and ρ'(s) = k · q(s, ρ(s)),
# q written into `out` in one op (`one` is a 0-d tensor holding 1). a and k are powers of two, so
# scaling by them is exact: k·(u + r W) is computed as addmm(k u, r, W, alpha=k), same rounding.


def _q_tanh(s: torch.Tensor, r: torch.Tensor, out: torch.Tensor, one: torch.Tensor) -> Out:
    return torch.addcmul(one, r, r, value=-1.0, out=out)  # 1 − ρ²


def _q_sigm(s: torch.Tensor, r: torch.Tensor, out: torch.Tensor, one: torch.Tensor) -> Out:
    return torch.addcmul(r, r, r, value=-1.0, out=out)  # ρ (1 − ρ); ρ' = 4 q


def _q_hardsigm(s: torch.Tensor, r: torch.Tensor, out: torch.Tensor, one: torch.Tensor) -> Out:
    return _hardsigm_prime(s, r, out)


FAST = MappingProxyType(
    {  # name: (a, c, squash_, k, q)
        "tanh": (1.0, 0.0, _tanh, 1.0, _q_tanh),
        "sigm": (4.0, -2.0, torch.sigmoid, 4.0, _q_sigm),
        "hardsigm": (1.0, 0.0, _hardsigm, 1.0, _q_hardsigm),
    }
)


def loss_errors(s0: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Batch-mean ½‖s⁰ − y‖² and the number of argmax mismatches, as 0-d tensors (no sync)."""
    loss = 0.5 * ((s0 - y) ** 2).sum(1).mean()
    errors = (s0.argmax(1) != y.argmax(1)).sum()
    return loss, errors


def learning_rate(lrs: dict[str, float], name: str) -> float:
    """The rate of parameter `name`; BackendError when `lrs` has none."""
    if name not in lrs:
        raise BackendError(f"torch backend: no learning rate for {name} in lrs")
    return float(lrs[name])


def check_steps(**steps: int) -> None:
    """BackendError for a negative step count (T, K, …), naming it."""
    for key, value in steps.items():
        if int(value) < 0:
            raise BackendError(f"torch backend: {key} must be ≥ 0, found {value}")


class TorchNetwork:
    """A fully connected convergent RNN (`model`) compiled for one torch dtype and device."""

    def __init__(self, model: ModelSpec, *, dtype: str, device: str) -> None:
        self.model = model
        self.dtype = dtype
        self.device = device
        self._dtype = {"float32": torch.float32, "float64": torch.float64}[dtype]
        self._device = torch.device(device)
        self._like = {"dtype": self._dtype, "device": self._device}
        self._eb = model.setting == "EB"
        self._eps = float(model.epsilon) if self._eb else 1.0  # P: step 1 (PAPER.md §3)
        if model.activation not in ACTIVATIONS:
            raise BackendError(f"torch backend: unknown activation {model.activation!r}")
        self._rho, self._rho_prime = ACTIVATIONS[model.activation]
        self._shapes = param_shapes(model)
        self._layers = len(model.sizes)
        self._input_layers = tuple(model.input_layers)

    # ---- conversions -------------------------------------------------------------------------

    def load(self, params: dict[str, np.ndarray]) -> Params:
        """Canonical numpy parameters → torch tensors of this dtype and device (copies)."""
        missing = sorted(set(self._shapes) - set(params))
        if missing:
            raise BackendError(f"torch backend: parameters missing: {', '.join(missing)}")
        out: Params = {}
        for name, shape in self._shapes.items():
            value = torch.tensor(np.asarray(params[name]), dtype=self._dtype, device=self._device)
            if tuple(value.shape) != shape:
                raise BackendError(
                    f"torch backend: parameter {name}: expected shape {shape}, "
                    f"found {tuple(value.shape)}"
                )
            out[name] = value
        return out

    def dump(self, params: Params) -> dict[str, np.ndarray]:
        """Torch parameters → canonical numpy parameters (copies)."""
        return {name: params[name].detach().cpu().numpy().copy() for name in self._shapes}

    def states(self, states: States) -> dict[str, np.ndarray]:
        """Native states → `{"s{n}": (B, sizes[n]) numpy array}` (copies)."""
        return {f"s{n}": s.detach().cpu().numpy().copy() for n, s in enumerate(states)}

    def _tensor(self, a: Any) -> torch.Tensor:
        return torch.as_tensor(a, dtype=self._dtype, device=self._device)

    def _native(self, states: Any) -> States:
        """States as this network's tensors (no copy when they already are)."""
        return tuple(self._tensor(t) for t in states)

    # ---- the dynamics ------------------------------------------------------------------------

    def _input(self, x: Any) -> torch.Tensor:
        """r_x: ρ(x) in the EB setting, raw x in the P setting (PAPER.md §3)."""
        x = self._tensor(x)
        return self._rho(x) if self._eb else x

    def _projection(self, params: Params, xr: torch.Tensor) -> list[torch.Tensor]:
        """The static part of every drive, once per phase: u^n = [n∈input] r_x W{n}_xᵀ + b_n."""
        u = []
        for n in range(self._layers):
            bias = params[f"b{n}"]
            if n in self._input_layers:
                u.append(torch.addmm(bias, xr, params[f"W{n}_x"].t()))
            else:
                u.append(bias.expand(xr.shape[0], -1))
        return u

    def _weights(self, params: Params) -> list[torch.Tensor]:
        return [params[f"W{n}_{n + 1}"] for n in range(self._layers - 1)]

    def _r(self, s: States) -> tuple[torch.Tensor, ...]:
        """What the neighbours see: ρ(s) in EB, s in P."""
        return tuple(self._rho(t) for t in s) if self._eb else s

    def _step(
        self,
        s: States,
        u: list[torch.Tensor],
        weights: list[torch.Tensor],
        y: torch.Tensor | None = None,
        beta: float = 0.0,
    ) -> tuple[States, tuple[torch.Tensor, ...]]:
        """One synchronous step s_t → s_{t+1} (module doc; PAPER.md §3), nudged when `beta` ≠ 0.

        Returns (s_{t+1}, r_t) where r_t = ρ(s_t) (EB) or s_t (P), reused by the traces.
        """
        r = self._r(s)
        last = self._layers - 1
        new = []
        for n in range(self._layers):
            h = u[n]
            if n < last:
                h = torch.addmm(h, r[n + 1], weights[n].t())
            if n > 0:
                h = torch.addmm(h, r[n - 1], weights[n - 1])
            if self._eb:
                g = self._rho_prime(s[n], r[n]) * h
                if n == 0 and beta != 0.0:
                    g = g + beta * (y - s[0])
                sn = torch.lerp(s[n], g, self._eps)  # s + ε (g − s)
            else:
                sn = self._rho(h)
                if n == 0 and beta != 0.0:
                    sn = sn + beta * (y - s[0])
            if self.model.clamp:
                sn = sn.clamp(0.0, 1.0)
            new.append(sn)
        return tuple(new), r

    def _zeros(self, batch: int) -> States:
        return tuple(torch.zeros(batch, size, **self._like) for size in self.model.sizes)

    def _empty(self, shape: tuple[int, ...]) -> torch.Tensor:
        """An uninitialised trace buffer. On the CPU its memory comes from numpy (and goes back as
        the trace without a copy), whose allocator asks for huge pages: faulting in 4 KiB pages
        dominated the cost of large traces ((K, 512, 784) float64 is 257 MB; 1.5-2× faster)."""
        if self._device.type == "cpu":
            return torch.from_numpy(np.empty(shape, dtype=self.dtype))
        return torch.empty(shape, **self._like)

    def _outer_steps(self, left: torch.Tensor, right: torch.Tensor) -> torch.Tensor:
        """Σ_b left[k, b] ⊗ right[b] for every k: (K, B, i), (B, j) → (K, i, j), one product."""
        steps, batch, rows = left.shape
        out = self._empty((steps, rows, right.shape[1]))
        left = left.transpose(1, 2).reshape(steps * rows, batch)
        torch.mm(left, right, out=out.view(steps * rows, right.shape[1]))
        return out

    @contextmanager
    def _small_ops(self, batch: int) -> Iterator[None]:
        """Run the per-step loops of a small model single-threaded on the CPU (see SERIAL_WORK);
        torch's thread count is restored on exit."""
        threads = torch.get_num_threads()
        small = batch * max(self.model.sizes) <= SERIAL_WORK
        if self._device.type != "cpu" or threads == 1 or not small:
            yield
            return
        torch.set_num_threads(1)
        try:
            yield
        finally:
            torch.set_num_threads(threads)

    def _run(
        self,
        s: States,
        u: list[torch.Tensor],
        weights: list[torch.Tensor],
        steps: int,
    ) -> States:
        """`steps` free steps of `_step` from `s`, differentiable (for autograd graphs)."""
        for _ in range(steps):
            s, _ = self._step(s, u, weights)
        return s

    def _relax(
        self,
        s: States,
        u: list[torch.Tensor],
        weights: list[torch.Tensor],
        steps: int,
        y: torch.Tensor | None = None,
        beta: float = 0.0,
    ) -> tuple[States, States]:
        """Fast path of `_step` for runs without a graph: the same dynamics into preallocated,
        swapped buffers, two to six in-place ops per layer. Returns (s_T, s_{T−1}), new tensors.

        With ρ(x) = squash(a x + c) and ρ'(s) = k q(s, ρ(s)) (`FAST`):
            EB   r = squash(a s + c);  g = q(s, r) ⊙ addmm(k u, r', W, alpha=k)  (= ρ'(s) ⊙ h)
            P    s' = squash(addmm(a u + c, r', W, alpha=a))                      (= ρ(h))
        EB is bit-for-bit `_step` (k is a power of two); P rounds a u + c once per phase instead
        of a h + c once per step (a rounding-level difference, one op less per layer and step).
        """
        if steps == 0:
            return tuple(s), tuple(s)
        layers, last, eps, eb = self._layers, self._layers - 1, self._eps, self._eb
        clamp = self.model.clamp
        a, c, squash, k, q = FAST[self.model.activation]
        shift = torch.tensor(c, **self._like)
        one = torch.ones((), **self._like)
        scale = k if eb else a  # the factor carried by the drives
        base = [torch.mul(v, scale) if eb else torch.add(shift, v, alpha=a) for v in u]
        transposed = [w.t() for w in weights]
        nudge = beta * y if beta != 0.0 else None  # the static part of β (y − s⁰)
        cur = [t.clone() for t in s]
        nxt = [torch.empty_like(t) for t in s]
        h = [torch.empty_like(t) for t in s]  # EB: the drives (P writes them into `nxt`)
        g = [torch.empty_like(t) for t in s]
        r = [torch.empty_like(t) for t in s]
        with self._small_ops(cur[0].shape[0]):
            for _ in range(steps):
                if eb:
                    for n in range(layers):  # r = ρ(s)
                        if a == 1.0 and c == 0.0:
                            squash(cur[n], out=r[n])
                        else:
                            squash(torch.add(shift, cur[n], alpha=a, out=r[n]), out=r[n])
                else:
                    r, h = cur, nxt
                for n in range(layers):
                    if n < last:
                        torch.addmm(base[n], r[n + 1], transposed[n], alpha=scale, out=h[n])
                        if n > 0:
                            h[n].addmm_(r[n - 1], weights[n - 1], alpha=scale)
                    else:
                        torch.addmm(base[n], r[n - 1], weights[n - 1], alpha=scale, out=h[n])
                    if eb:  # s + ε (ρ'(s) ⊙ h [+ β (y − s⁰)] − s)
                        gn = q(cur[n], r[n], g[n], one).mul_(h[n])
                        if n == 0 and nudge is not None:
                            gn.add_(nudge).sub_(cur[0], alpha=beta)
                        torch.lerp(cur[n], gn, eps, out=nxt[n])
                    else:  # σ(h) [+ β (y − s⁰)]
                        squash(nxt[n], out=nxt[n])
                        if n == 0 and nudge is not None:
                            nxt[0].add_(nudge).sub_(cur[0], alpha=beta)
                    if clamp:
                        nxt[n].clamp_(0.0, 1.0)
                cur, nxt = nxt, cur
        return tuple(cur), tuple(nxt)

    # ---- phases --------------------------------------------------------------------------------

    def free_phase(
        self, params: Params, x: Any, *, steps: int, start: States | None = None
    ) -> tuple[States, float]:
        """`steps` free steps from `start` (zeros when None), PAPER.md §1.

        Returns (s_T, ‖s_T − s_{T−1}‖); one device sync, for the residual.
        """
        check_steps(steps=steps)
        with torch.no_grad():
            xr = self._input(x)
            u = self._projection(params, xr)
            s = self._zeros(xr.shape[0]) if start is None else self._native(start)
            s, prev = self._relax(s, u, self._weights(params), steps)
            if steps == 0:
                return s, 0.0
            residual = torch.sqrt(sum(((a - b) ** 2).sum() for a, b in zip(s, prev, strict=True)))
        return s, float(residual)

    def _trajectory(
        self,
        start: States,
        u: list[torch.Tensor],
        weights: list[torch.Tensor],
        y: torch.Tensor,
        beta: float,
        steps: int,
    ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Nudged phase (PAPER.md §1): per layer, states s_0…s_K and r_0…r_K stacked (K+1, B, ·)."""
        s = self._native(start)
        states, rs = [s], []
        with self._small_ops(s[0].shape[0]):
            for _ in range(steps):
                s, r = self._step(s, u, weights, y, beta)
                states.append(s)
                rs.append(r)
        rs.append(self._r(s))
        stack = [torch.stack([st[n] for st in states]) for n in range(self._layers)]
        rstack = [torch.stack([rt[n] for rt in rs]) for n in range(self._layers)]
        return stack, rstack

    def ep_trace(
        self,
        params: Params,
        x: Any,
        y: Any,
        *,
        start: States,
        beta: float,
        steps: int,
        symmetric: bool = False,
    ) -> dict[str, np.ndarray]:
        """EP traces ΔEP_s(β, t), ΔEP_θ(β, t) for t < K (PAPER.md §2; epbench.core.protocols).

        Symmetric: (Δ(+|β|) + Δ(−|β|)) / 2, each divided by its own signed β.
        """
        check_steps(steps=steps)
        if beta == 0.0:
            raise BackendError("torch backend: ep_trace needs a non-zero beta")
        betas = (abs(beta), -abs(beta)) if symmetric else (float(beta),)
        with torch.no_grad():
            xr = self._input(x)
            yt = self._tensor(y)
            u = self._projection(params, xr)
            weights = self._weights(params)
            batch = xr.shape[0]
            # Each run enters with coefficient 1 / (runs · β): the average of the per-run traces.
            runs = [
                (self._trajectory(start, u, weights, yt, b, steps), 1.0 / (len(betas) * b))
                for b in betas
            ]
            # Per run and layer, c · (r_{t+1} − r_t), shape (K, B, ·).
            diffs = [
                [c * (rs[n][1:] - rs[n][:-1]) for n in range(self._layers)] for (_, rs), c in runs
            ]
            out: dict[str, torch.Tensor] = {}
            for n in range(self._layers):
                # ∂Φ/∂b_n = mean_b r^n and ∂Φ/∂W{n}_x = mean_b r^n r_xᵀ are linear in r^n.
                dr = sum(d[n] for d in diffs)
                out[f"b{n}"] = dr.mean(1)
                if n in self._input_layers:
                    out[f"W{n}_x"] = self._outer_steps(dr, xr / batch)
                if n < self._layers - 1:
                    # ∂Φ/∂W{n}_{n+1} = mean_b r^n r^{n+1}ᵀ; its step difference, written without
                    # (K+1)-long temporaries: a'b'ᵀ − abᵀ = (a' − a) b'ᵀ + a (b' − b)ᵀ.
                    w = self._empty((steps, *self._shapes[f"W{n}_{n + 1}"]))
                    for i, (((_, rs), _), d) in enumerate(zip(runs, diffs, strict=True)):
                        a = d[n].transpose(1, 2) / batch
                        if i == 0:
                            torch.bmm(a, rs[n + 1][1:], out=w)
                        else:
                            w.baddbmm_(a, rs[n + 1][1:])
                        w.baddbmm_(rs[n][:-1].transpose(1, 2), d[n + 1], alpha=1.0 / batch)
                    out[f"W{n}_{n + 1}"] = w
            for n in range(self._layers):
                ds = sum(c * (st[n][1:] - st[n][:-1]) for (st, _), c in runs)
                out[f"s{n}"] = ds.mean(1) / self._eps  # β_eff = εβ (EB) or β (P)
        return self._numpy(out, steps)

    def _numpy(self, out: dict[str, torch.Tensor], steps: int) -> dict[str, np.ndarray]:
        """Traces in canonical order (parameters, then states) as numpy arrays."""
        names = [*self._shapes, *(f"s{n}" for n in range(self._layers))]
        result = {}
        for name in names:
            if name in out and self._device.type == "cpu":
                result[name] = out[name].numpy()  # no copy (see `_empty`)
            elif name in out:
                result[name] = np.empty(tuple(out[name].shape), dtype=self.dtype)
                torch.from_numpy(result[name]).copy_(out[name])
            else:  # steps == 0
                shape = self._shapes.get(name) or (self.model.sizes[int(name[1:])],)
                result[name] = np.zeros((steps, *shape), dtype=self.dtype)
        return result

    def bptt_trace(
        self, params: Params, x: Any, y: Any, *, start: States, steps: int
    ) -> dict[str, np.ndarray]:
        """BPTT traces ∇BPTT_s(t) = Σ_b ∂L/∂s_{T−t} and ∇BPTT_θ(t) = ∂L/∂θ_{T−t} (PAPER.md §2).

        One backward pass through the K steps run from `start` = s_{T−K}. The per-step parameter
        copy θ_t is realised by a zero leaf δ^n_t added to every drive h^n_t (θ enters a step only
        through the drives), so g^n_t = ∂L/∂δ^n_t = ∂L/∂h^n_t and, summed over the batch,
        ∂L/∂W{n}_{n+1},t = g^nᵀ r^{n+1}_t + r^n_tᵀ g^{n+1}, ∂L/∂W{n}_x,t = g^nᵀ r_x and
        ∂L/∂b_n,t = Σ_b g^n.
        """
        check_steps(steps=steps)
        if steps == 0:
            return self._numpy({}, 0)
        with torch.no_grad():
            xr = self._input(x)
            yt = self._tensor(y)
            u = self._projection(params, xr)
            weights = [w.detach() for w in self._weights(params)]
        batch = xr.shape[0]
        s = tuple(t.detach() for t in self._native(start))
        deltas, rs, states = [], [], []
        with torch.enable_grad(), self._small_ops(batch):
            for _ in range(steps):
                delta = [torch.zeros_like(s[n], requires_grad=True) for n in range(self._layers)]
                s, r = self._step(s, [u[n] + delta[n] for n in range(self._layers)], weights)
                deltas.append(delta)
                rs.append(r)
                states.append(s)
            loss = 0.5 * ((s[0] - yt) ** 2).sum() / batch  # L = (1/2B) Σ_b ‖s⁰_T − y‖²
            inputs = [d for delta in deltas for d in delta] + [t for st in states for t in st]
            grads = torch.autograd.grad(loss, inputs, allow_unused=True, materialize_grads=True)
        layers = self._layers
        with torch.no_grad():
            # Step k (s_k → s_{k+1}) is trace index t = K−1−k: stack in reverse time order.
            g = [torch.stack(grads[n : steps * layers : layers][::-1]) for n in range(layers)]
            rr = [torch.stack([rt[n].detach() for rt in rs[::-1]]) for n in range(layers)]
            gs = grads[steps * layers :]
            out: dict[str, torch.Tensor] = {}
            for n in range(layers):
                if n < layers - 1:
                    w = self._empty((steps, *self._shapes[f"W{n}_{n + 1}"]))
                    torch.bmm(g[n].transpose(1, 2), rr[n + 1], out=w)
                    out[f"W{n}_{n + 1}"] = w.baddbmm_(rr[n].transpose(1, 2), g[n + 1])
                if n in self._input_layers:
                    out[f"W{n}_x"] = self._outer_steps(g[n], xr)
                out[f"b{n}"] = g[n].sum(1)
                out[f"s{n}"] = torch.stack(gs[n::layers][::-1]).sum(1)
        return self._numpy(out, steps)

    # ---- training ------------------------------------------------------------------------------

    def ep_step(
        self,
        params: Params,
        x: Any,
        y: Any,
        *,
        free_steps: int,
        steps: int,
        beta: float,
        lrs: dict[str, float],
        symmetric: bool = False,
    ) -> tuple[Params, torch.Tensor, torch.Tensor]:
        """One EP step (PAPER.md §2): θ ← θ + lr · (∂Φ/∂θ(s^β_K) − ∂Φ/∂θ(s_*)) / β_eff.

        Symmetric: (∂Φ/∂θ(s^{+|β|}_K) − ∂Φ/∂θ(s^{−|β|}_K)) / (2 β_eff). Updates `params` in place.
        """
        check_steps(free_steps=free_steps, steps=steps)
        if beta == 0.0:
            raise BackendError("torch backend: ep_step needs a non-zero beta")
        with torch.no_grad(), self._small_ops(len(x)):
            xr = self._input(x)
            yt = self._tensor(y)
            u = self._projection(params, xr)
            weights = self._weights(params)
            star, _ = self._relax(self._zeros(xr.shape[0]), u, weights, free_steps)
            if symmetric:
                a, _ = self._relax(star, u, weights, steps, yt, abs(beta))
                b, _ = self._relax(star, u, weights, steps, yt, -abs(beta))
                scale = 1.0 / (2.0 * abs(beta))
            else:
                a, _ = self._relax(star, u, weights, steps, yt, float(beta))
                b, scale = star, 1.0 / float(beta)
            ra, rb = self._r(a), self._r(b)
            scale /= xr.shape[0]  # batch mean
            for n in range(self._layers):
                lr = learning_rate(lrs, f"b{n}") * scale
                dr = ra[n] - rb[n]
                params[f"b{n}"].add_(dr.sum(0), alpha=lr)
                if n in self._input_layers:
                    lr = learning_rate(lrs, f"W{n}_x") * scale
                    params[f"W{n}_x"].addmm_(dr.t(), xr, alpha=lr)
                if n < self._layers - 1:
                    lr = learning_rate(lrs, f"W{n}_{n + 1}") * scale
                    w = params[f"W{n}_{n + 1}"]
                    w.addmm_(ra[n].t(), ra[n + 1], alpha=lr).addmm_(rb[n].t(), rb[n + 1], alpha=-lr)
            loss, errors = loss_errors(star[0], yt)
        return params, loss, errors

    def bptt_step(
        self,
        params: Params,
        x: Any,
        y: Any,
        *,
        free_steps: int,
        steps: int,
        lrs: dict[str, float],
    ) -> tuple[Params, torch.Tensor, torch.Tensor]:
        """One BPTT step: T − K free steps without a graph, K with one, θ ← θ − lr · ∂L/∂θ.

        L = (1/2B) Σ_b ‖s⁰_T − y‖² (PAPER.md §1), BPTT truncated to the last K steps. Updates
        `params` in place.
        """
        check_steps(free_steps=free_steps, steps=steps)
        if steps > free_steps:
            raise BackendError(f"torch backend: K = {steps} exceeds T = {free_steps}")
        names = list(self._shapes)
        leaves = {name: params[name].detach().requires_grad_(True) for name in names}
        with self._small_ops(len(x)):
            xr, yt = self._input(x), self._tensor(y)
            with torch.enable_grad():  # the input projection once, for both parts
                u = self._projection(leaves, xr)
            with torch.no_grad():
                free = [v.detach() for v in u]
                weights = self._weights(params)
                s, _ = self._relax(self._zeros(len(xr)), free, weights, free_steps - steps)
            with torch.enable_grad():
                s = self._run(s, u, self._weights(leaves), steps)
                loss = 0.5 * ((s[0] - yt) ** 2).sum() / xr.shape[0]
                if steps == 0:
                    grads = [torch.zeros_like(leaves[name]) for name in names]
                else:
                    grads = torch.autograd.grad(
                        loss,
                        [leaves[name] for name in names],
                        allow_unused=True,
                        materialize_grads=True,
                    )
            with torch.no_grad():
                for name, grad in zip(names, grads, strict=True):  # (all zero when K = 0)
                    params[name].sub_(grad, alpha=learning_rate(lrs, name))
                loss, errors = loss_errors(s[0].detach(), yt)
        return params, loss, errors

    def predict(self, params: Params, x: Any, *, steps: int) -> np.ndarray:
        """argmax of s⁰ after `steps` free steps from zero, numpy int array (B,)."""
        check_steps(steps=steps)
        with torch.no_grad(), self._small_ops(len(x)):
            xr = self._input(x)
            u = self._projection(params, xr)
            s, _ = self._relax(self._zeros(xr.shape[0]), u, self._weights(params), steps)
        return s[0].argmax(1).cpu().numpy()

    def synchronize(self) -> None:
        """Wait for queued device work (CUDA); a no-op on the CPU."""
        if self._device.type == "cuda":
            torch.cuda.synchronize(self._device)
