"""The convolutional P-setting family ("P-conv", docs/theory.md §3.4) in torch: dynamics, traces,
training steps, as pure functions for `epbench_torch.adapter.TorchNetwork`.

Layer 0 is the fully connected output, layers 1 … N the pooled conv layers (N next to the input).
Native types: parameters are a `dict[str, torch.Tensor]` keyed by canonical names
(epbench.core.params: `W0_1` (O, C₁H₁W₁), kernels `W{n}_{n+1}` / `W{N}_x` (Cₙ, Cₙ₊₁, k, k),
per-channel biases); states a tuple `(s⁰, s¹, …, sᴺ)`, s⁰ of shape (B, O) and
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

∂Φ/∂θ at s, batch-averaged (the EP rule, docs/theory.md §2-§3): W0_1: ⟨s⁰ vec(s¹)ᵀ⟩, b₀: ⟨s⁰⟩,
kernel Wₙ: the correlation of the lower layer with the unpooled upper layer,
⟨corr(sⁿ⁺¹, unpool(sⁿ))⟩ (the kernel gradient of a convolution, `conv2d_weight`), with the indices
of the pooling at s itself; W{N}_x: ⟨corr(x, unpool(sᴺ))⟩ with the (fixed) input-pooling indices;
bₙ: ⟨Σ_{h,w} sⁿ⟩. The EP update is (∂Φ/∂θ(s^β_K) − ∂Φ/∂θ(s_*)) / β: nudged-phase indices minus
free-phase indices.

Training steps update the parameter tensors in place and return the same dict.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch.nn.grad import conv2d_weight

from epbench.core.params import param_shapes
from epbench.core.spec import ModelSpec

from .adapter import Family, graph_loss, loss_errors, nudges
from .network import ACTIVATIONS

States = tuple[torch.Tensor, ...]
Params = dict[str, torch.Tensor]
Indices = list[torch.Tensor | None]  # per layer n: the pooling indices of Wₙ ∗ sⁿ⁺¹ (None: n = 0)
CHANNELS_LAST = torch.channels_last


@dataclass(frozen=True)
class Geometry:
    """What the phases read of a conv model, worked out once per phase call (`geometry`)."""

    model: ModelSpec
    depth: int  # N, the number of conv layers
    pad: int
    pool: int
    layer1: tuple[int, int, int]  # (C, H, W) of s¹
    pre: tuple  # per layer n ≥ 1: the pre-pooling (H, W) of its convolution, for max_unpool2d
    shapes: dict[str, tuple[int, ...]]  # canonical parameter shapes


def geometry(model: ModelSpec) -> Geometry:
    conv = model.conv
    assert conv is not None
    layers = conv.layer_shapes()[::-1]  # layer 1 … N
    return Geometry(
        model=model,
        depth=len(conv.channels),
        pad=conv.padding,
        pool=conv.pool,
        layer1=layers[0],
        pre=(None, *((h * conv.pool, w * conv.pool) for _, h, w in layers)),
        shapes=param_shapes(model),
    )


def unsupported(model: ModelSpec) -> str | None:
    """None for a P-setting conv model whose sizes fit its conv stack; otherwise why not."""
    conv = model.conv
    if conv is None or model.setting != "P":
        return "conv models run in the P setting only (docs/theory.md §3.4)"
    if model.feedback_angle is not None:
        return "asymmetric feedback is implemented for fully connected models only"
    if model.sizes != conv.sizes(model.outputs) or model.inputs != int(np.prod(conv.input)):
        return (
            f"a conv model needs inputs = {int(np.prod(conv.input))} and "
            f"sizes = {conv.sizes(model.outputs)}, found {model.inputs} and {model.sizes}"
        )
    if model.input_to not in ((), (len(conv.channels),)):
        return "the input of a conv model feeds its last layer only"
    return None


def to_native(s: States) -> States:
    """States as the family holds them: conv layers in channels-last memory (no copy when they
    already are)."""
    return (s[0], *(t.contiguous(memory_format=CHANNELS_LAST) for t in s[1:]))


# ---------------------------------------------------------------- the dynamics


def kernel(g: Geometry, params: Params, n: int) -> torch.Tensor:
    """The kernel of conv layer n (1 ≤ n ≤ N): W{n}_{n+1}, or W{N}_x for the input layer."""
    return params[f"W{n}_x"] if n == g.depth else params[f"W{n}_{n + 1}"]


def prepare(g: Geometry, params: Params) -> Params:
    """The parameters laid out for the dynamics, once per phase (differentiable): `fc` is W0_1
    with its columns in (H, W, C) order, so that a channels-last s¹ flattens without a copy;
    kernels `k{n}` in channels-last memory (oneDNN's fast layout); biases `b{n}` (1, C, 1, 1).
    """
    c, h, w = g.layer1
    o = g.model.sizes[0]
    fc = params["W0_1"].view(o, c, h, w).permute(0, 2, 3, 1).reshape(o, h * w * c)
    q = {"fc": fc, "b0": params["b0"], "b1fc": params["b1"].repeat(h * w)}  # b₁ in (H, W, C)
    for n in range(1, g.depth + 1):
        q[f"k{n}"] = kernel(g, params, n).contiguous(memory_format=CHANNELS_LAST)
        q[f"b{n}"] = params[f"b{n}"].view(1, -1, 1, 1)
    return q


def image(g: Geometry, x: torch.Tensor) -> torch.Tensor:
    """Flat (B, C·H·W) input → (B, C, H, W) raw pixels (P setting: no ρ on x), channels-last."""
    img = x.reshape(x.shape[0], *g.model.conv.input)
    return img.contiguous(memory_format=CHANNELS_LAST)


def project(g: Geometry, q: Params, img: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The static drive of layer N, once per phase: u = P(W{N}_x ∗ x) + b_N, and its indices."""
    # Channels-last like the states (a 1-channel image gives an NCHW output): the per-step
    # `add_(u)` of a mixed-layout pair ran 5× slower, and so did the pooling.
    z = F.conv2d(img, q[f"k{g.depth}"], padding=g.pad)
    z = z.contiguous(memory_format=CHANNELS_LAST)
    pooled, idx = F.max_pool2d(z, g.pool, return_indices=True)
    return pooled + q[f"b{g.depth}"], idx


def pooled_drives(g: Geometry, q: Params, s: States) -> tuple[list, Indices]:
    """P(Wₙ ∗ sⁿ⁺¹) and its indices for the layers 1 ≤ n < N (the input layer's are static)."""
    pooled: list = [None] * (g.depth + 1)
    idx: Indices = [None] * (g.depth + 1)
    for n in range(1, g.depth):
        z = F.conv2d(s[n + 1], q[f"k{n}"], padding=g.pad)
        pooled[n], idx[n] = F.max_pool2d(z, g.pool, return_indices=True)
    return pooled, idx


def unpool(g: Geometry, v: torch.Tensor, idx: torch.Tensor, n: int) -> torch.Tensor:
    """unpool(v) for layer n: v back at its argmax positions, zeros elsewhere (pre-pooling)."""
    return F.max_unpool2d(v, idx, g.pool, output_size=g.pre[n])


def step(
    g: Geometry,
    q: Params,
    u: torch.Tensor,
    s: States,
    y: torch.Tensor | None = None,
    beta: float = 0.0,
) -> tuple[States, Indices]:
    """One synchronous step s_t → s_{t+1} (module doc), nudged when `beta` ≠ 0; `q` from
    `prepare`. Returns (s_{t+1}, the pooling indices of this step, computed from s_t).

    Without a graph the activation and clamp write into the fresh drive tensors (fewer passes
    over memory); with one they stay out of place (tanh's backward reads its output)."""
    N, rho = g.depth, ACTIVATIONS[g.model.activation][0]
    graph = torch.is_grad_enabled()
    pooled, idx = pooled_drives(g, q, s)
    batch, (c, h, w) = s[0].shape[0], g.layer1
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
            back = unpool(g, s[n - 1], idx[n - 1], n - 1)
            fb = F.conv_transpose2d(back, q[f"k{n - 1}"], padding=g.pad)
        new.append(fb.add_(u) if n == N else fb.add_(pooled[n]).add_(q[f"b{n}"]))
    new = [rho(v) if graph else rho(v, out=v) for v in new]
    if beta != 0.0:
        new[0] = new[0] + beta * (y - s[0])
    if g.model.clamp:
        new = [v.clamp(0.0, 1.0) if graph else v.clamp_(0.0, 1.0) for v in new]
    return tuple(new), idx


def relax(g: Geometry, q: Params, u, s: States, steps: int, y=None, beta: float = 0.0):
    """`steps` steps (call without a graph); returns (s_T, s_{T−1})."""
    prev = s
    for _ in range(steps):
        prev, s = s, step(g, q, u, s, y, beta)[0]
    return s, prev


def indices_at(g: Geometry, q: Params, s: States, idx_x: torch.Tensor) -> Indices:
    """The pooling indices at s itself (those ∂Φ/∂θ(s) uses); layer N's are the input's."""
    idx = pooled_drives(g, q, s)[1]
    idx[g.depth] = idx_x
    return idx


def zeros(g: Geometry, x: torch.Tensor) -> States:
    """Native zero states for the batch `x` (its dtype and device)."""
    layers = g.model.conv.layer_shapes()[::-1]
    s0 = x.new_zeros(x.shape[0], g.model.sizes[0])
    return to_native((s0, *(x.new_zeros(x.shape[0], *shape) for shape in layers)))


def dphi_diff(g: Geometry, img, a: States, ia: Indices, b: States, ib: Indices, scale: float):
    """scale · (∂Φ/∂θ(a) − ∂Φ/∂θ(b)), summed over the batch (scale carries 1/(B β)).

    Products are differenced as a'c' − ac = (a' − a) c' + a (c' − c), which loses less to
    rounding in float32; for kernels with the unpooled upper layer U = unpool(sⁿ) at each
    state's own indices: corr(c', U') − corr(c, U) = corr(c', U' − U) + corr(c' − c, U).
    """
    N, pad = g.depth, g.pad
    d = [(p - q) * scale for p, q in zip(a, b, strict=True)]
    out = {
        "W0_1": d[0].t() @ a[1].flatten(1) + b[0].t() @ d[1].flatten(1),
        "b0": d[0].sum(0),
    }
    for n in range(1, N + 1):
        out[f"b{n}"] = d[n].sum((0, 2, 3))
        if n == N:  # the input pooling's indices are fixed: linear in sᴺ
            up = unpool(g, d[n], ia[n], n)
            out[f"W{n}_x"] = conv2d_weight(img, g.shapes[f"W{n}_x"], up, padding=pad)
            continue
        up_a, up_b = unpool(g, a[n], ia[n], n), unpool(g, b[n], ib[n], n)
        below = torch.cat([a[n + 1], d[n + 1]])
        upper = torch.cat([(up_a - up_b) * scale, up_b])
        out[f"W{n}_{n + 1}"] = conv2d_weight(below, g.shapes[f"W{n}_{n + 1}"], upper, padding=pad)
    return out


# ---------------------------------------------------------------- phases


def free_phase(model: ModelSpec, params: Params, x, s: States, steps: int):
    """`steps` free steps from native `s` (§1), the input convolution once: (s_T, s_{T−1})."""
    g = geometry(model)
    q = prepare(g, params)
    u, _ = project(g, q, image(g, x))
    return relax(g, q, u, s, steps)


def trajectory(g: Geometry, q: Params, u, idx_x, start: States, y, beta: float, steps: int):
    """Nudged phase: states s_0 … s_K and, for each, the pooling indices at that state."""
    s, states, indices = start, [start], []
    for _ in range(steps):
        s, idx = step(g, q, u, s, y, beta)
        idx[g.depth] = idx_x
        states.append(s)
        indices.append(idx)
    indices.append(indices_at(g, q, s, idx_x))
    return states, indices


def ep_traces(model: ModelSpec, params: Params, x, y, start: States, beta, steps, symmetric):
    """EP traces ΔEP_s(β, t) = ⟨s_{t+1} − s_t⟩ / β and ΔEP_θ(β, t) = (∂Φ/∂θ(s_{t+1}) −
    ∂Φ/∂θ(s_t)) / β for t < K (§2), each ∂Φ/∂θ with its own state's indices.
    Symmetric: (Δ(+|β|) + Δ(−|β|)) / 2."""
    betas = nudges(beta, symmetric=symmetric)
    g = geometry(model)
    img, q = image(g, x), prepare(g, params)
    u, idx_x = project(g, q, img)
    batch, out = img.shape[0], {}
    for b in betas:
        c = 1.0 / (len(betas) * b)
        states, indices = trajectory(g, q, u, idx_x, start, y, b, steps)
        for t in range(steps):
            diff = dphi_diff(
                g, img, states[t + 1], indices[t + 1], states[t], indices[t], c / batch
            )
            for n in range(model.depth + 1):
                diff[f"s{n}"] = (states[t + 1][n] - states[t][n]).mean(0) * c
            for name, value in diff.items():
                if name not in out:
                    out[name] = x.new_zeros(steps, *value.shape)
                out[name][t] += value
    return out


def bptt_traces(model: ModelSpec, params: Params, x, y, start: States, steps: int):
    """BPTT traces ∇BPTT_s(t) = Σ_b ∂L/∂s_{T−t}, ∇BPTT_θ(t) = ∂L/∂θ_{T−t} (§2).

    One backward pass through the K steps from `start` = s_{T−K}, each step k with its own
    copy θ_k of the parameters (autograd leaves): ∂L/∂θ_k is then exactly the share through
    the transition into s_{k+1}, trace index t = K − 1 − k. Each step recomputes its input
    projection from its own W{N}_x (traces only; training steps compute it once).
    Max-pooling passes the gradient to the argmax (the indices are held fixed, as in Φ).
    """
    g = geometry(model)
    img = image(g, x)
    s, copies, states = start, [], []
    with torch.enable_grad():
        for _ in range(steps):
            theta = {k: v.detach().clone().requires_grad_(True) for k, v in params.items()}
            q = prepare(g, theta)
            s, _ = step(g, q, project(g, q, img)[0], s)
            copies.append(theta)
            states.append(s)
        leaves = [v for theta in copies for v in theta.values()]
        leaves += [t for st in states for t in st]
        grads = torch.autograd.grad(
            graph_loss(s[0], y), leaves, allow_unused=True, materialize_grads=True
        )
    names, layers = list(params), len(states[0])
    per_step = len(names)
    out: dict[str, torch.Tensor] = {}
    for i, name in enumerate(names):
        out[name] = torch.stack(grads[i : steps * per_step : per_step][::-1])
    state_grads = grads[steps * per_step :]
    for n in range(layers):
        out[f"s{n}"] = torch.stack(state_grads[n::layers][::-1]).sum(1)
    return out


def ep_step(model: ModelSpec, params: Params, x, y, lrs, beta, *, free_steps, steps, symmetric):
    """One EP step (§2): θ ← θ + lr · (∂Φ/∂θ(s^β_K) − ∂Φ/∂θ(s_*)) / β, each ∂Φ/∂θ with the
    pooling indices at its own state. Symmetric: (∂Φ/∂θ(s^{+|β|}_K) − ∂Φ/∂θ(s^{−|β|}_K)) /
    (2|β|). Updates `params` in place."""
    g = geometry(model)
    img, q = image(g, x), prepare(g, params)
    u, idx_x = project(g, q, img)
    star, _ = relax(g, q, u, zeros(g, x), free_steps)
    ends = [relax(g, q, u, star, steps, y, b)[0] for b in nudges(beta, symmetric=symmetric)]
    a, b = ends if symmetric else (ends[0], star)
    scale = 1.0 / (2.0 * abs(beta)) if symmetric else 1.0 / beta
    ia, ib = indices_at(g, q, a, idx_x), indices_at(g, q, b, idx_x)
    update = dphi_diff(g, img, a, ia, b, ib, scale / img.shape[0])
    for name, value in update.items():
        params[name].add_(value, alpha=lrs[name])
    loss, errors = loss_errors(star[0], y)
    return params, loss, errors


def bptt_step(model: ModelSpec, params: Params, x, y, lrs, *, free_steps: int, steps: int):
    """One BPTT step: T − K free steps without a graph, K with one (the input projection
    once), θ ← θ − lr · ∂L/∂θ with L = (1/2B) Σ_b ‖s⁰_T − y‖². Updates `params` in place."""
    g = geometry(model)
    names = list(g.shapes)
    with torch.no_grad():
        img, q = image(g, x), prepare(g, params)
        u, _ = project(g, q, img)
        s, _ = relax(g, q, u, zeros(g, x), free_steps - steps)
    leaves = {name: params[name].detach().requires_grad_(True) for name in names}
    with torch.enable_grad():
        q = prepare(g, leaves)
        u, _ = project(g, q, img)
        for _ in range(steps):
            s, _ = step(g, q, u, s)
        if steps == 0:
            grads = [torch.zeros_like(leaves[name]) for name in names]
        else:
            grads = torch.autograd.grad(
                graph_loss(s[0], y), [leaves[n] for n in names],
                allow_unused=True, materialize_grads=True,
            )  # fmt: skip
    with torch.no_grad():
        for name, grad in zip(names, grads, strict=True):
            params[name].sub_(grad, alpha=lrs[name])
        loss, errors = loss_errors(s[0].detach(), y)
    return params, loss, errors


FAMILY = Family(
    name="conv",
    unsupported=unsupported,
    free_phase=free_phase,
    ep_traces=ep_traces,
    bptt_traces=bptt_traces,
    ep_step=ep_step,
    bptt_step=bptt_step,
    to_native=to_native,
)
