"""The torch `Network` (epbench.core.protocols.Network) for convolutional P-setting models ("P-conv").

PAPER.md §3, "Convolutional, P setting". Layer 0 is the fully connected output, layers 1 … N the
pooled conv layers (N next to the input). Native types: parameters are a `dict[str, torch.Tensor]`
keyed by canonical names (epbench.core.params: `W0_1` (O, C₁H₁W₁), kernels `W{n}_{n+1}` / `W{N}_x`
(Cₙ, Cₙ₊₁, k, k), per-channel biases); states a tuple `(s⁰, s¹, …, sᴺ)`, s⁰ of shape (B, O) and
sⁿ of shape (B, Cₙ, Hₙ, Wₙ) held in channels-last memory (oneDNN's fast layout on the CPU: the
convolutions ran 2-3× faster than on NCHW tensors). The input x arrives flattened, (B, C·H·W).

With P the max-pooling (window = stride = `pool`), ∗ the convolution (stride 1, zero padding
`padding`) and convᵀ its adjoint (the transposed convolution), one step from s_t is

    s⁰ ← σ(W0_1 vec(s¹) + b₀)                                  [+ β (y − s⁰) after σ]
    s¹ ← σ(P(W1_2 ∗ s²) + b₁ + reshape(W0_1ᵀ s⁰))
    sⁿ ← σ(P(Wn_{n+1} ∗ sⁿ⁺¹) + bₙ + convᵀ(unpool(sⁿ⁻¹); W{n−1}_n))       (1 < n < N)
    sᴺ ← σ(u + convᵀ(unpool(sᴺ⁻¹); W{N−1}_N)),   u = P(W{N}_x ∗ x) + b_N  (once per phase)

where `unpool` puts sⁿ⁻¹ back at the argmax positions of the same step's pooling of
W{n−1}_n ∗ sⁿ (`max_unpool2d` with the indices `max_pool2d` returned), and then the optional clamp
to [0, 1]. This is s_{t+1} = σ(∂Φ/∂s) for Φ = s⁰·(W0_1 vec(s¹) + b₀) + Σₙ sⁿ • P(Wₙ ∗ sⁿ⁺¹ + bₙ)
with the pooling indices held fixed. A bias is constant over a window, so P(z + b) = P(z) + b: it
is added after pooling (4× fewer additions), and the indices come from W ∗ s alone.

Ties in a pooling window go to the first position in row-major window order: torch's CPU and CUDA
max-pooling kernels keep the first maximum (they replace it only when a later value is strictly
greater), and the jax backend scans the window in the same order with the same rule. Ties are
common: from s = 0, and where x or a layer is zero over a whole receptive field, W ∗ s is constant.

Cost per step: one convolution and one transposed convolution (oneDNN, channels-last; ~93 % of a
step on one CPU thread); the input convolution once per phase, its output made channels-last too
(mixed layouts made the per-step `add_(u)` and the pooling ~5× slower); the fully connected layer
reads the channels-last s¹ without a copy and adds b₁ in its matmul (`_prepare` reorders W0_1's
columns once per phase); element-wise work in place on fresh tensors.
The transposed convolution runs dense over the unpooled map, 3/4 zeros: skipping them needs a
gather per (example, channel, window), which has no GEMM form (the argmax position differs per
channel). Written as `embedding_bag` rows of 4 shifted kernels weighted by sⁿ⁻¹ (47 instead of
131 MFLOP for P-conv) plus `fold`, it took 1.5 + 1.6 ms against 1.7 ms for the dense call (one
thread).

∂Φ/∂θ at s, batch-averaged (the EP rule, PAPER.md §2-§3): W0_1: ⟨s⁰ vec(s¹)ᵀ⟩, b₀: ⟨s⁰⟩,
kernel Wₙ: the correlation of the lower layer with the unpooled upper layer,
⟨corr(sⁿ⁺¹, unpool(sⁿ))⟩ (the kernel gradient of a convolution, `conv2d_weight`), with the indices
of the pooling at s itself; W{N}_x: ⟨corr(x, unpool(sᴺ))⟩ with the (fixed) input-pooling indices;
bₙ: ⟨Σ_{h,w} sⁿ⟩. The EP update is (∂Φ/∂θ(s^β_K) − ∂Φ/∂θ(s_*)) / β: nudged-phase indices minus
free-phase indices.

Training steps update the parameter tensors in place and return the same dict.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.nn.grad import conv2d_weight

from epbench.core.errors import BackendError
from epbench.core.params import param_shapes, state_shapes
from epbench.core.spec import ModelSpec

from .network import ACTIVATIONS, check_steps, learning_rate, loss_errors

States = tuple[torch.Tensor, ...]
Params = dict[str, torch.Tensor]
Indices = list[torch.Tensor | None]  # per layer n: the pooling indices of Wₙ ∗ sⁿ⁺¹ (None: n = 0)
CHANNELS_LAST = torch.channels_last


class TorchConvNetwork:
    """A P-conv model (`model.conv` set) compiled for one torch dtype and device."""

    def __init__(self, model: ModelSpec, *, dtype: str, device: str) -> None:
        if model.conv is None or model.setting != "P":
            raise BackendError("torch backend: TorchConvNetwork needs a P-setting conv model")
        conv = model.conv
        if model.sizes != conv.sizes(model.outputs) or model.inputs != int(np.prod(conv.input)):
            raise BackendError(
                f"torch backend: a conv model needs inputs = {int(np.prod(conv.input))} and "
                f"sizes = {conv.sizes(model.outputs)}, found {model.inputs} and {model.sizes}"
            )
        if model.input_to not in ((), (len(conv.channels),)):
            raise BackendError("torch backend: the input of a conv model feeds its last layer only")
        self.model = model
        self.dtype = dtype
        self.device = device
        self._dtype = {"float32": torch.float32, "float64": torch.float64}[dtype]
        self._device = torch.device(device)
        self._like = {"dtype": self._dtype, "device": self._device}
        self._rho, _ = ACTIVATIONS[model.activation]
        self._conv = conv
        self._N = len(conv.channels)
        self._pad, self._pool = conv.padding, conv.pool
        self._shapes = param_shapes(model)
        self._state_shapes = {k: v[1:] for k, v in state_shapes(model, 1).items()}
        # Pre-pooling (H, W) of layer n's convolution output, for max_unpool2d.
        self._pre = [None] + [
            (h * conv.pool, w * conv.pool) for _, h, w in conv.layer_shapes()[::-1]
        ]
        self._names = [*self._shapes, *self._state_shapes]

    # ---- conversions -------------------------------------------------------------------------

    def load(self, params: dict[str, np.ndarray]) -> Params:
        """Canonical numpy parameters → torch tensors of this dtype and device (copies)."""
        out: Params = {}
        for name, shape in self._shapes.items():
            if name not in params or tuple(np.shape(params[name])) != shape:
                found = tuple(np.shape(params[name])) if name in params else "missing"
                raise BackendError(
                    f"torch backend: parameter {name}: expected shape {shape}, found {found}"
                )
            out[name] = torch.tensor(np.asarray(params[name]), **self._like)
        return out

    def dump(self, params: Params) -> dict[str, np.ndarray]:
        """Torch parameters → canonical numpy parameters (copies)."""
        return {name: params[name].detach().cpu().numpy().copy() for name in self._shapes}

    def states(self, states: States) -> dict[str, np.ndarray]:
        """Native states → `{"s0": (B, O), "s{n}": (B, Cₙ, Hₙ, Wₙ)}` numpy arrays (copies)."""
        return {f"s{n}": s.detach().cpu().numpy().copy() for n, s in enumerate(states)}

    def _tensor(self, a: Any) -> torch.Tensor:
        return torch.as_tensor(a, **self._like)

    def _native(self, states: Any) -> States:
        """States as this network's tensors, conv layers in channels-last memory (no copy when
        they already are)."""
        out = tuple(self._tensor(t) for t in states)
        return (out[0], *(t.contiguous(memory_format=CHANNELS_LAST) for t in out[1:]))

    def _zeros(self, batch: int) -> States:
        shapes = self._state_shapes.values()
        return self._native(torch.zeros(batch, *shape, **self._like) for shape in shapes)

    @contextmanager
    def _exact(self) -> Iterator[None]:
        """No TF32 in cuDNN convolutions (on by default in torch): backends must agree."""
        with torch.backends.cudnn.flags(enabled=True, allow_tf32=False):
            yield

    # ---- the dynamics ------------------------------------------------------------------------

    def _kernel(self, params: Params, n: int) -> torch.Tensor:
        """The kernel of conv layer n (1 ≤ n ≤ N): W{n}_{n+1}, or W{N}_x for the input layer."""
        return params[f"W{n}_x"] if n == self._N else params[f"W{n}_{n + 1}"]

    def _prepare(self, params: Params) -> Params:
        """The parameters laid out for the dynamics, once per phase (differentiable): `fc` is W0_1
        with its columns in (H, W, C) order, so that a channels-last s¹ flattens without a copy;
        kernels `k{n}` in channels-last memory (oneDNN's fast layout); biases `b{n}` (1, C, 1, 1).
        """
        c, h, w = self._conv.layer_shapes()[-1]  # layer 1
        o = self.model.sizes[0]
        fc = params["W0_1"].view(o, c, h, w).permute(0, 2, 3, 1).reshape(o, h * w * c)
        q = {"fc": fc, "b0": params["b0"], "b1fc": params["b1"].repeat(h * w)}  # b₁ in (H, W, C)
        for n in range(1, self._N + 1):
            q[f"k{n}"] = self._kernel(params, n).contiguous(memory_format=CHANNELS_LAST)
            q[f"b{n}"] = params[f"b{n}"].view(1, -1, 1, 1)
        return q

    def _image(self, x: Any) -> torch.Tensor:
        """Flat (B, C·H·W) input → (B, C, H, W) raw pixels (P setting: no ρ on x), channels-last."""
        x = self._tensor(x)
        img = x.reshape(x.shape[0], *self._conv.input)
        return img.contiguous(memory_format=CHANNELS_LAST)

    def _project(self, q: Params, img: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The static drive of layer N, once per phase: u = P(W{N}_x ∗ x) + b_N, and its indices."""
        # Channels-last like the states (a 1-channel image gives an NCHW output): the per-step
        # `add_(u)` of a mixed-layout pair ran 5× slower, and so did the pooling.
        z = F.conv2d(img, q[f"k{self._N}"], padding=self._pad)
        z = z.contiguous(memory_format=CHANNELS_LAST)
        pooled, idx = F.max_pool2d(z, self._pool, return_indices=True)
        return pooled + q[f"b{self._N}"], idx

    def _pooled(self, q: Params, s: States) -> tuple[list, Indices]:
        """P(Wₙ ∗ sⁿ⁺¹) and its indices for the layers 1 ≤ n < N (the input layer's are static)."""
        pooled: list = [None] * (self._N + 1)
        idx: Indices = [None] * (self._N + 1)
        for n in range(1, self._N):
            z = F.conv2d(s[n + 1], q[f"k{n}"], padding=self._pad)
            pooled[n], idx[n] = F.max_pool2d(z, self._pool, return_indices=True)
        return pooled, idx

    def _unpool(self, v: torch.Tensor, idx: torch.Tensor, n: int) -> torch.Tensor:
        """unpool(v) for layer n: v back at its argmax positions, zeros elsewhere (pre-pooling)."""
        return F.max_unpool2d(v, idx, self._pool, output_size=self._pre[n])

    def _step(
        self,
        q: Params,
        u: torch.Tensor,
        s: States,
        y: torch.Tensor | None = None,
        beta: float = 0.0,
    ) -> tuple[States, Indices]:
        """One synchronous step s_t → s_{t+1} (module doc), nudged when `beta` ≠ 0; `q` from
        `_prepare`. Returns (s_{t+1}, the pooling indices of this step, computed from s_t).

        Without a graph the activation and clamp write into the fresh drive tensors (fewer passes
        over memory); with one they stay out of place (tanh's backward reads its output)."""
        N, pad, rho = self._N, self._pad, self._rho
        graph = torch.is_grad_enabled()
        pooled, idx = self._pooled(q, s)
        batch, (c, h, w) = s[0].shape[0], self._state_shapes["s1"]
        flat = s[1].permute(0, 2, 3, 1).reshape(batch, h * w * c)  # a view when channels-last
        new = [torch.addmm(q["b0"], flat, q["fc"].t())]
        for n in range(1, N + 1):
            if n == 1 and n < N:  # reshape(b₁ + W0_1ᵀ s⁰), channels-last: the bias in one op
                fb = torch.addmm(q["b1fc"], s[0], q["fc"]).view(batch, h, w, c)
                new.append(fb.permute(0, 3, 1, 2).add_(pooled[1]))
                continue
            if n == 1:  # reshape(W0_1ᵀ s⁰) into the input layer
                fb = (s[0] @ q["fc"]).view(batch, h, w, c).permute(0, 3, 1, 2)
            else:  # convᵀ(unpool(sⁿ⁻¹); W{n−1}_n), with this step's indices
                back = self._unpool(s[n - 1], idx[n - 1], n - 1)
                fb = F.conv_transpose2d(back, q[f"k{n - 1}"], padding=pad)
            new.append(fb.add_(u) if n == N else fb.add_(pooled[n]).add_(q[f"b{n}"]))
        new = [rho(v) if graph else rho(v, out=v) for v in new]
        if beta != 0.0:
            new[0] = new[0] + beta * (y - s[0])
        if self.model.clamp:
            new = [v.clamp(0.0, 1.0) if graph else v.clamp_(0.0, 1.0) for v in new]
        return tuple(new), idx

    def _relax(
        self,
        q: Params,
        u: torch.Tensor,
        s: States,
        steps: int,
        y: torch.Tensor | None = None,
        beta: float = 0.0,
    ) -> tuple[States, States]:
        """`steps` steps (call without a graph); returns (s_T, s_{T−1})."""
        prev = s
        for _ in range(steps):
            prev, s = s, self._step(q, u, s, y, beta)[0]
        return s, prev

    def _indices(self, q: Params, s: States, idx_x: torch.Tensor) -> Indices:
        """The pooling indices at s itself (those ∂Φ/∂θ(s) uses); layer N's are the input's."""
        idx = self._pooled(q, s)[1]
        idx[self._N] = idx_x
        return idx

    # ---- phases --------------------------------------------------------------------------------

    def free_phase(
        self, params: Params, x: Any, *, steps: int, start: States | None = None
    ) -> tuple[States, float]:
        """`steps` free steps from `start` (zeros when None), PAPER.md §1; the input convolution
        once. Returns (s_T, ‖s_T − s_{T−1}‖)."""
        check_steps(steps=steps)
        with torch.no_grad(), self._exact():
            img, q = self._image(x), self._prepare(params)
            u, _ = self._project(q, img)
            s = self._zeros(img.shape[0]) if start is None else self._native(start)
            s, prev = self._relax(q, u, s, steps)
            if steps == 0:
                return s, 0.0
            residual = torch.sqrt(sum(((a - b) ** 2).sum() for a, b in zip(s, prev, strict=True)))
        return s, float(residual)

    def _trajectory(
        self, q: Params, u: torch.Tensor, idx_x, start: States, y, beta: float, steps: int
    ) -> tuple[list[States], list[Indices]]:
        """Nudged phase: states s_0 … s_K and, for each, the pooling indices at that state."""
        s = self._native(start)
        states, indices = [s], []
        for _ in range(steps):
            s, idx = self._step(q, u, s, y, beta)
            idx[self._N] = idx_x
            states.append(s)
            indices.append(idx)
        indices.append(self._indices(q, s, idx_x))
        return states, indices

    def _dphi_diff(
        self,
        img: torch.Tensor,
        a: States,
        ia: Indices,
        b: States,
        ib: Indices,
        scale: float,
    ) -> dict[str, torch.Tensor]:
        """scale · (∂Φ/∂θ(a) − ∂Φ/∂θ(b)), summed over the batch (scale carries 1/(B β)).

        Products are differenced as a'c' − ac = (a' − a) c' + a (c' − c), which loses less to
        rounding in float32; for kernels with the unpooled upper layer U = unpool(sⁿ) at each
        state's own indices: corr(c', U') − corr(c, U) = corr(c', U' − U) + corr(c' − c, U).
        """
        N, pad = self._N, self._pad
        d = [(p - q) * scale for p, q in zip(a, b, strict=True)]
        out = {
            "W0_1": d[0].t() @ a[1].flatten(1) + b[0].t() @ d[1].flatten(1),
            "b0": d[0].sum(0),
        }
        for n in range(1, N + 1):
            out[f"b{n}"] = d[n].sum((0, 2, 3))
            if n == N:  # the input pooling's indices are fixed: linear in sᴺ
                up = self._unpool(d[n], ia[n], n)
                out[f"W{n}_x"] = conv2d_weight(img, self._shapes[f"W{n}_x"], up, padding=pad)
                continue
            up_a, up_b = self._unpool(a[n], ia[n], n), self._unpool(b[n], ib[n], n)
            below = torch.cat([a[n + 1], d[n + 1]])
            upper = torch.cat([(up_a - up_b) * scale, up_b])
            out[f"W{n}_{n + 1}"] = conv2d_weight(
                below, self._shapes[f"W{n}_{n + 1}"], upper, padding=pad
            )
        return out

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
        """EP traces ΔEP_s(β, t) = ⟨s_{t+1} − s_t⟩ / β and ΔEP_θ(β, t) = (∂Φ/∂θ(s_{t+1}) −
        ∂Φ/∂θ(s_t)) / β for t < K (PAPER.md §2), each ∂Φ/∂θ with its own state's indices.
        Symmetric: (Δ(+|β|) + Δ(−|β|)) / 2."""
        check_steps(steps=steps)
        if beta == 0.0:
            raise BackendError("torch backend: ep_trace needs a non-zero beta")
        betas = (abs(beta), -abs(beta)) if symmetric else (float(beta),)
        out: dict[str, torch.Tensor] = {}
        with torch.no_grad(), self._exact():
            img, q = self._image(x), self._prepare(params)
            yt = self._tensor(y)
            u, idx_x = self._project(q, img)
            batch = img.shape[0]
            for b in betas:
                c = 1.0 / (len(betas) * b)
                states, indices = self._trajectory(q, u, idx_x, start, yt, b, steps)
                for t in range(steps):
                    diff = self._dphi_diff(
                        img, states[t + 1], indices[t + 1], states[t], indices[t], c / batch
                    )
                    for n in range(self.model.depth + 1):
                        diff[f"s{n}"] = (states[t + 1][n] - states[t][n]).mean(0) * c
                    for name, value in diff.items():
                        if name not in out:
                            out[name] = torch.zeros(steps, *value.shape, **self._like)
                        out[name][t] += value
        return self._numpy(out, steps)

    def _numpy(self, out: dict[str, torch.Tensor], steps: int) -> dict[str, np.ndarray]:
        """Traces in canonical order (parameters, then states) as numpy arrays."""
        shapes = self._shapes | self._state_shapes
        return {
            name: out[name].cpu().numpy()
            if name in out
            else np.zeros((steps, *shapes[name]), dtype=self.dtype)
            for name in self._names
        }

    def bptt_trace(
        self, params: Params, x: Any, y: Any, *, start: States, steps: int
    ) -> dict[str, np.ndarray]:
        """BPTT traces ∇BPTT_s(t) = Σ_b ∂L/∂s_{T−t}, ∇BPTT_θ(t) = ∂L/∂θ_{T−t} (PAPER.md §2).

        One backward pass through the K steps from `start` = s_{T−K}, each step k with its own
        copy θ_k of the parameters (autograd leaves): ∂L/∂θ_k is then exactly the share through
        the transition into s_{k+1}, trace index t = K − 1 − k. Each step recomputes its input
        projection from its own W{N}_x (traces only; training steps compute it once).
        Max-pooling passes the gradient to the argmax (the indices are held fixed, as in Φ).
        """
        check_steps(steps=steps)
        if steps == 0:
            return self._numpy({}, 0)
        with torch.no_grad():
            img = self._image(x)
            yt = self._tensor(y)
        s = tuple(t.detach() for t in self._native(start))
        copies, states = [], []
        with torch.enable_grad(), self._exact():
            for _ in range(steps):
                theta = {k: v.detach().clone().requires_grad_(True) for k, v in params.items()}
                q = self._prepare(theta)
                s, _ = self._step(q, self._project(q, img)[0], s)
                copies.append(theta)
                states.append(s)
            loss = 0.5 * ((s[0] - yt) ** 2).sum() / img.shape[0]
            leaves = [v for theta in copies for v in theta.values()]
            leaves += [t for st in states for t in st]
            grads = torch.autograd.grad(loss, leaves, allow_unused=True, materialize_grads=True)
        names, layers = list(params), len(states[0])
        per_step = len(names)
        out: dict[str, torch.Tensor] = {}
        for i, name in enumerate(names):
            out[name] = torch.stack(grads[i : steps * per_step : per_step][::-1])
        state_grads = grads[steps * per_step :]
        for n in range(layers):
            out[f"s{n}"] = torch.stack(state_grads[n::layers][::-1]).sum(1)
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
        """One EP step (PAPER.md §2): θ ← θ + lr · (∂Φ/∂θ(s^β_K) − ∂Φ/∂θ(s_*)) / β, each ∂Φ/∂θ
        with the pooling indices at its own state. Symmetric: (∂Φ/∂θ(s^{+|β|}_K) −
        ∂Φ/∂θ(s^{−|β|}_K)) / (2|β|). Updates `params` in place."""
        check_steps(free_steps=free_steps, steps=steps)
        if beta == 0.0:
            raise BackendError("torch backend: ep_step needs a non-zero beta")
        with torch.no_grad(), self._exact():
            img, q = self._image(x), self._prepare(params)
            yt = self._tensor(y)
            u, idx_x = self._project(q, img)
            star, _ = self._relax(q, u, self._zeros(img.shape[0]), free_steps)
            if symmetric:
                a, _ = self._relax(q, u, star, steps, yt, abs(beta))
                b, _ = self._relax(q, u, star, steps, yt, -abs(beta))
                scale = 1.0 / (2.0 * abs(beta))
            else:
                a, _ = self._relax(q, u, star, steps, yt, float(beta))
                b, scale = star, 1.0 / float(beta)
            ia, ib = self._indices(q, a, idx_x), self._indices(q, b, idx_x)
            update = self._dphi_diff(img, a, ia, b, ib, scale / img.shape[0])
            for name, value in update.items():
                params[name].add_(value, alpha=learning_rate(lrs, name))
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
        """One BPTT step: T − K free steps without a graph, K with one (the input projection
        once), θ ← θ − lr · ∂L/∂θ with L = (1/2B) Σ_b ‖s⁰_T − y‖². Updates `params` in place."""
        check_steps(free_steps=free_steps, steps=steps)
        if steps > free_steps:
            raise BackendError(f"torch backend: K = {steps} exceeds T = {free_steps}")
        names = list(self._shapes)
        with self._exact():
            with torch.no_grad():
                img, q = self._image(x), self._prepare(params)
                yt = self._tensor(y)
                u, _ = self._project(q, img)
                s, _ = self._relax(q, u, self._zeros(img.shape[0]), free_steps - steps)
            leaves = {name: params[name].detach().requires_grad_(True) for name in names}
            with torch.enable_grad():
                q = self._prepare(leaves)
                u, _ = self._project(q, img)
                for _ in range(steps):
                    s, _ = self._step(q, u, s)
                loss = 0.5 * ((s[0] - yt) ** 2).sum() / img.shape[0]
                if steps == 0:
                    grads = [torch.zeros_like(leaves[name]) for name in names]
                else:
                    grads = torch.autograd.grad(
                        loss, [leaves[n] for n in names], allow_unused=True, materialize_grads=True
                    )
            with torch.no_grad():
                for name, grad in zip(names, grads, strict=True):
                    params[name].sub_(grad, alpha=learning_rate(lrs, name))
                loss, errors = loss_errors(s[0].detach(), yt)
        return params, loss, errors

    def predict(self, params: Params, x: Any, *, steps: int) -> np.ndarray:
        """argmax of s⁰ after `steps` free steps from zero, numpy int array (B,)."""
        s, _ = self.free_phase(params, x, steps=steps)
        return s[0].argmax(1).cpu().numpy()

    def synchronize(self) -> None:
        """Wait for queued device work (CUDA); a no-op on the CPU."""
        if self._device.type == "cuda":
            torch.cuda.synchronize(self._device)
