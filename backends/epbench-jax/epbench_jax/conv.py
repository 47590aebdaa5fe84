"""The convolutional P-setting model ("P-conv", docs/theory.md §3.4) in JAX: dynamics, traces,
training.

Layer 0 is the fully connected output, layers 1 … N the pooled conv layers (N next to the input).
Parameters are a dict of arrays keyed by canonical names (`epbench.core.params`: `W0_1` (O, C₁H₁W₁),
kernels `W{n}_{n+1}` / `W{N}_x` (Cₙ, Cₙ₊₁, k, k), per-channel biases); states a tuple
`(s⁰, s¹, …, sᴺ)`, s⁰ of shape (B, O) and sⁿ of shape (B, Cₙ, Hₙ, Wₙ); x arrives flat, (B, C·H·W).

With P the max-pooling (window = stride = `pool`), ∗ the convolution (stride 1, zero padding) and
convᵀ its adjoint, one step from s_t is

    s⁰ ← σ(W0_1 vec(s¹) + b₀)                                  [+ β (y − s⁰) after σ]
    s¹ ← σ(P(W1_2 ∗ s²) + b₁ + reshape(W0_1ᵀ s⁰))
    sⁿ ← σ(P(Wn_{n+1} ∗ sⁿ⁺¹) + bₙ + convᵀ(unpool(sⁿ⁻¹); W{n−1}_n))       (1 < n < N)
    sᴺ ← σ(u + convᵀ(unpool(sᴺ⁻¹); W{N−1}_N)),   u = P(W{N}_x ∗ x) + b_N  (once per phase)

then the optional clamp: s_{t+1} = σ(∂Φ/∂s) for Φ = s⁰·(W0_1 vec(s¹) + b₀) + Σₙ sⁿ • P(Wₙ ∗ sⁿ⁺¹
+ bₙ) with the pooling indices held fixed; `unpool` puts values back at the argmax positions of the
same step's pooling. Biases are added after pooling (P(z + b) = P(z) + b), as in the torch backend,
so that both take the argmax of the same numbers.

Pooling: each window is scanned in row-major order (dy, dx) and a later entry replaces the maximum
only when strictly greater, as in torch's max-pooling kernels, so ties (common: from s = 0, and over
zero regions of x) go to the same position in both backends. The pooled value is selected, so
autodiff sends the gradient to the argmax only (`jnp.max` would split it between tied entries).

Every phase is one `jax.jit` around a `lax.fori_loop` / `lax.scan`; convolutions are matmuls over
shifted views (`_conv`, `_adjoint`) at full precision, float64 under the scoped `jax.enable_x64`.
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jaxtyping import Array, Float, Int

from epbench.core.params import param_shapes, state_shapes
from epbench.core.spec import ModelSpec

from .compiled import Family
from .network import activation, clip01, loss_errors

Params = dict[str, Float[Array, "..."]]
Prepared = dict[str, Array]  # the parameters laid out for the NHWC dynamics (`prepare`)
States = tuple[Float[Array, "B ..."], ...]  # native: (s⁰ (B, O), s¹ (B, H, W, C), …, sᴺ)
X = Float[Array, "B inputs"]
Y = Float[Array, "B outputs"]
Scalar = Float[Array, ""]

_DIMS = ("NHWC", "HWIO", "NHWC")


# ---------------------------------------------------------------- layouts


def to_native(s: States) -> States:
    """Canonical states (conv layers (B, C, H, W)) → native NHWC states (B, H, W, C)."""
    return (s[0], *(v.transpose(0, 2, 3, 1) for v in s[1:]))


def to_canonical(s: States) -> States:
    """Native NHWC states → canonical (B, C, H, W) (or traces (K, H, W, C) → (K, C, H, W))."""
    return (s[0], *(v.transpose(0, 3, 1, 2) for v in s[1:]))


def _depth(model: ModelSpec) -> int:
    return len(model.conv.channels)


def _kernel(model: ModelSpec, params: Params, n: int) -> Array:
    return params[f"W{n}_x"] if n == _depth(model) else params[f"W{n}_{n + 1}"]


def prepare(model: ModelSpec, params: Params) -> Prepared:
    """Canonical parameters laid out for the NHWC dynamics, once per phase (differentiable, so
    gradients come back in canonical form): `fc` = W0_1 with its columns in (H, W, C) order,
    `k{n}` the kernel of layer n as HWIO, and the biases."""
    o = model.sizes[0]
    c, h, w = model.conv.layer_shapes()[-1]  # layer 1
    out = {
        "fc": params["W0_1"].reshape(o, c, h, w).transpose(0, 2, 3, 1).reshape(o, -1),
        "b0": params["b0"],
    }
    for n in range(1, _depth(model) + 1):
        out[f"k{n}"] = _kernel(model, params, n).transpose(2, 3, 1, 0)
        out[f"b{n}"] = params[f"b{n}"]
    return out


# ---------------------------------------------------------------- convolution and pooling
#
# NHWC / HWIO throughout: the channels are the contracted (last) axis of every matmul below (with
# NCHW states carried by a loop, XLA's convolution fell back to a naive loop nest, ~10× slower).
# Convolutions are written as matmuls (`_conv`, `_adjoint`), which XLA:CPU runs on all cores and
# without arithmetic on padding. Gradients with
# respect to a kernel are written as one batched matmul over the k² shifted views of the input
# (`_kernel_grad`), the fast form on the CPU, instead of the transposed-layout convolution that
# autodiff would emit; the transposed convolution as k² matmuls added into shifted windows
# (`_adjoint`). The 3/4 zeros of an unpooled map are multiplied all the same: their positions
# differ per channel, so no dense product can skip them.


def _conv(a: Array, k: Array, pad: int) -> Array:
    """k ∗ a, stride 1, zero padding `pad`. On the CPU as ONE matmul of the k² shifted views of
    `a`, stacked along the channels (im2col), with the kernel flattened to (k²·I, O): the same
    sums up to their order, but XLA:CPU ran `lax.conv_general_dilated` on one core and the matmul
    on both (P-conv training steps 30 % faster, BPTT 15 %). Elsewhere the library convolution."""

    def matmul(a: Array, k: Array) -> Array:
        size, _, i, o = k.shape
        if pad:
            a = jnp.pad(a, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
        h, w = a.shape[1] - size + 1, a.shape[2] - size + 1
        views = jnp.concatenate(
            [a[:, y : y + h, x : x + w] for y in range(size) for x in range(size)], -1
        )
        return jnp.dot(views, k.reshape(size * size * i, o), precision="highest")

    def library(a: Array, k: Array) -> Array:
        padding = [(pad, pad), (pad, pad)]
        return lax.conv_general_dilated(
            a, k, (1, 1), padding, dimension_numbers=_DIMS, precision="highest"
        )

    return lax.platform_dependent(a, k, cpu=matmul, default=library)


def _adjoint(g: Array, k: Array, pad: int) -> Array:
    """convᵀ(g; k), stride 1: a convolution of g (padded by k − 1 − pad) with the flipped kernel.

    On the CPU, for each of the k² kernel taps (ky, kx), g times that tap's (O, I) matrix added
    into the output window shifted by (ky, kx), then the padding cropped: the same sums up to
    their order. XLA:CPU ran the convolution form on its generic path, one core, and over 2.25×
    the multiply-adds (most of them on the padding of an 8×8 map): 2.5× slower (1.6× in a loop).
    """

    def taps(g: Array, k: Array) -> Array:
        b, h, w, _ = g.shape
        size, _, i, _ = k.shape
        out = jnp.zeros((b, h + size - 1, w + size - 1, i), g.dtype)
        for ky in range(size):
            for kx in range(size):
                tap = jnp.dot(g, k[ky, kx].T, precision="highest")  # (B, h, w, I)
                out = out.at[:, ky : ky + h, kx : kx + w].add(tap)
        return out[:, pad : out.shape[1] - pad, pad : out.shape[2] - pad] if pad else out

    def library(g: Array, k: Array) -> Array:
        flipped = jnp.flip(k, (0, 1)).swapaxes(2, 3)
        return lax.conv_general_dilated(
            g, flipped, (1, 1), [(k.shape[0] - 1 - pad,) * 2] * 2, dimension_numbers=_DIMS,
            precision="highest",
        )  # fmt: skip

    return lax.platform_dependent(g, k, cpu=taps, default=library)


def _kernel_grad(a: Array, g: Array, size: int, pad: int) -> Array:
    """∂/∂k Σ g • conv(a, k), shape (k, k, I, O): Σ over batch and positions of a's shifted
    views (padded as the convolution pads) times g."""
    a = jnp.pad(a, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    h, w = g.shape[1], g.shape[2]
    views = jnp.stack([a[:, i : i + h, j : j + w] for i in range(size) for j in range(size)])
    grad = jnp.einsum("kbhwi,bhwo->kio", views, g, precision="highest")
    return grad.reshape(size, size, *grad.shape[1:])


@partial(jax.custom_vjp, nondiff_argnums=(2,))
def conv(a: Float[Array, "B H W I"], k: Float[Array, "k k I O"], pad: int) -> Array:
    """W ∗ a (a cross-correlation like torch's conv2d): stride 1, zero padding `pad`."""
    return _conv(a, k, pad)


conv.defvjp(
    lambda a, k, pad: (_conv(a, k, pad), (a, k)),
    lambda pad, res, g: (_adjoint(g, res[1], pad), _kernel_grad(res[0], g, res[1].shape[0], pad)),
)


@partial(jax.custom_vjp, nondiff_argnums=(2,))
def conv_t(g: Float[Array, "B h w O"], k: Float[Array, "k k I O"], pad: int) -> Array:
    """convᵀ(g; W), the adjoint of `conv(·, k, pad)` (maps O channels back to I)."""
    return _adjoint(g, k, pad)


# ⟨G, convᵀ(g; k)⟩ = ⟨conv(G; k), g⟩: the input gradient is a convolution, the kernel gradient
# the kernel gradient of conv(G; k) at cotangent g.
conv_t.defvjp(
    lambda g, k, pad: (_adjoint(g, k, pad), (g, k)),
    lambda pad, res, G: (_conv(G, res[1], pad), _kernel_grad(G, res[0], res[1].shape[0], pad)),
)


def wgrad(a: Float[Array, "B H W I"], g: Float[Array, "B h w O"], w_shape, pad: int) -> Array:
    """corr(a, g) = ∂/∂W Σ g • (W ∗ a), summed over the batch, in the canonical kernel shape
    `w_shape` (O, I, k, k)."""
    return _kernel_grad(a, g, w_shape[-1], pad).transpose(3, 2, 0, 1)


def pool(z: Float[Array, "B H W C"], p: int) -> tuple[Array, Array]:
    """Max-pooling P(z) (window = stride = p) and its indices j = dy·p + dx. Ties go to the first
    position in row-major (dy, dx) order, as in torch: a later entry wins only when strictly
    greater. Selections, not a reduction, so gradients flow to the argmax only."""
    b, h, w, c = z.shape
    win = z.reshape(b, h // p, p, w // p, p, c)
    best, idx = win[:, :, 0, :, 0], jnp.zeros((b, h // p, w // p, c), jnp.int32)
    for j in range(1, p * p):
        v = win[:, :, j // p, :, j % p]
        better = v > best
        best, idx = jnp.where(better, v, best), jnp.where(better, j, idx)
    return best, idx


def unpool(v: Float[Array, "B h w C"], idx: Int[Array, "B h w C"], p: int) -> Array:
    """v back at the argmax positions of its pooling, zeros elsewhere: (B, h·p, w·p, C)."""
    b, h, w, c = v.shape
    rows = [
        jnp.stack([jnp.where(idx == dy * p + dx, v, 0) for dx in range(p)], axis=3)
        for dy in range(p)
    ]
    return jnp.stack(rows, axis=2).reshape(b, h * p, w * p, c)


# ---------------------------------------------------------------- dynamics


def image(model: ModelSpec, x: X) -> Float[Array, "B H W C"]:
    """Flat (B, C·H·W) input in canonical order → (B, H, W, C) raw pixels (no ρ on x, P)."""
    return x.reshape(x.shape[0], *model.conv.input).transpose(0, 2, 3, 1)


def project(model: ModelSpec, q: Prepared, img: Array) -> tuple[Array, Array]:
    """The static drive of layer N, once per phase: u = P(W{N}_x ∗ x) + b_N, and its indices."""
    n, cs = _depth(model), model.conv
    pooled, idx = pool(conv(img, q[f"k{n}"], cs.padding), cs.pool)
    return pooled + q[f"b{n}"], idx


def pooled_drives(model: ModelSpec, q: Prepared, s: States) -> tuple[list, list]:
    """P(Wₙ ∗ sⁿ⁺¹) and its indices for the layers 1 ≤ n < N (None elsewhere)."""
    cs, n_layers = model.conv, _depth(model) + 1
    pooled, idx = [None] * n_layers, [None] * n_layers
    for n in range(1, n_layers - 1):
        pooled[n], idx[n] = pool(conv(s[n + 1], q[f"k{n}"], cs.padding), cs.pool)
    return pooled, idx


def step(
    model: ModelSpec,
    q: Prepared,
    u: Array,
    s: States,
    y: Y | None = None,
    beta: Scalar | float = 0.0,
) -> tuple[States, list]:
    """One synchronous step s_t → s_{t+1} (module doc) on native states, nudged when `y` is
    given. Returns (s_{t+1}, this step's pooling indices, computed from s_t)."""
    rho, _ = activation(model.activation)
    cs, n_conv = model.conv, _depth(model)
    pooled, idx = pooled_drives(model, q, s)
    s0 = rho(s[1].reshape(s[1].shape[0], -1) @ q["fc"].T + q["b0"])
    if y is not None:
        s0 = s0 + beta * (y - s[0])
    new = [s0]
    for n in range(1, n_conv + 1):
        h = u if n == n_conv else pooled[n] + q[f"b{n}"]
        if n == 1:
            h = h + (s[0] @ q["fc"]).reshape(s[1].shape)
        else:
            h = h + conv_t(unpool(s[n - 1], idx[n - 1], cs.pool), q[f"k{n - 1}"], cs.padding)
        new.append(rho(h))
    if model.clamp:
        new = [clip01(v) for v in new]
    return tuple(new), idx


def run(
    model: ModelSpec,
    q: Prepared,
    u: Array,
    s: States,
    steps: Int[Array, ""] | int,
    y: Y | None = None,
    beta: Scalar | float = 0.0,
) -> States:
    """`steps` transitions in one `lax.fori_loop`."""
    return lax.fori_loop(0, steps, lambda _, v: step(model, q, u, v, y, beta)[0], s)


def indices_at(model: ModelSpec, q: Prepared, s: States, idx_x: Array) -> list:
    """The pooling indices at s itself (those ∂Φ/∂θ(s) uses); layer N's are the input's."""
    idx = pooled_drives(model, q, s)[1]
    idx[_depth(model)] = idx_x
    return idx


def dphi_diff(
    model: ModelSpec, img: Array, a: States, ia: list, b: States, ib: list, scale
) -> Params:
    """scale · (∂Φ/∂θ(a) − ∂Φ/∂θ(b)) summed over the batch, each ∂Φ/∂θ with its own indices
    (docs/theory.md §3), canonical shapes: W0_1: s⁰ vec(s¹)ᵀ, b₀: s⁰, kernels:
    corr(sⁿ⁺¹, unpool(sⁿ)) (W{N}_x: with x), bₙ: Σ_{h,w} sⁿ. Differenced as
    a'c' − ac = (a' − a) c' + a (c' − c), which loses less to rounding in float32."""
    cs, n_conv = model.conv, _depth(model)
    shapes = param_shapes(model)
    d = [(p - q) * scale for p, q in zip(a, b, strict=True)]
    flat = [v.transpose(0, 3, 1, 2).reshape(v.shape[0], -1) for v in (a[1], d[1])]
    out = {"W0_1": d[0].T @ flat[0] + b[0].T @ flat[1], "b0": jnp.sum(d[0], axis=0)}
    for n in range(1, n_conv + 1):
        out[f"b{n}"] = jnp.sum(d[n], axis=(0, 1, 2))
        if n == n_conv:  # the input pooling's indices are fixed: linear in sᴺ
            up = unpool(d[n], ia[n], cs.pool)
            out[f"W{n}_x"] = wgrad(img, up, shapes[f"W{n}_x"], cs.padding)
            continue
        up_a, up_b = unpool(a[n], ia[n], cs.pool), unpool(b[n], ib[n], cs.pool)
        below = jnp.concatenate([a[n + 1], d[n + 1]])
        upper = jnp.concatenate([(up_a - up_b) * scale, up_b])
        out[f"W{n}_{n + 1}"] = wgrad(below, upper, shapes[f"W{n}_{n + 1}"], cs.padding)
    return out


# ---------------------------------------------------------------- compiled phases


def free_phase(
    model: ModelSpec, params: Params, x: X, s: States, steps: Int[Array, ""]
) -> tuple[States, Scalar]:
    """`steps` ≥ 1 free steps (traced count) from native `s`, and the residual ‖s_T − s_{T−1}‖;
    the input convolution once."""
    q = prepare(model, params)
    u, _ = project(model, q, image(model, x))
    body = lambda _, v: (step(model, q, u, v[0])[0], v[0])  # noqa: E731
    after, before = lax.fori_loop(0, steps, body, (s, s))  # one loop body to compile
    residual = jnp.sqrt(sum(jnp.sum((a - b) ** 2) for a, b in zip(after, before, strict=True)))
    return after, residual


def ep_traces_one(
    model: ModelSpec, params: Params, x: X, y: Y, start: States, beta: Scalar, steps: int
) -> Params:
    """EP traces for one signed β (docs/theory.md §2): ΔEP_s(t) = ⟨s_{t+1} − s_t⟩ / β and
    ΔEP_θ(t) = (∂Φ/∂θ(s_{t+1}) − ∂Φ/∂θ(s_t)) / β, each ∂Φ/∂θ with its own state's indices."""
    q, img = prepare(model, params), image(model, x)
    u, idx_x = project(model, q, img)

    def body(s, _):
        new, idx = step(model, q, u, s, y, beta)
        return new, (new, tuple(idx[1:-1]))

    last, (traj, idx) = lax.scan(body, start, None, length=steps)
    states = tuple(jnp.concatenate([v[None], t]) for v, t in zip(start, traj, strict=True))
    final = tuple(indices_at(model, q, last, idx_x)[1:-1])
    # Indices at s_0 … s_K for layers 1 … N−1 (layer N uses the fixed input pooling's).
    idx = tuple(jnp.concatenate([i, f[None]]) for i, f in zip(idx, final, strict=True))

    def one(args):
        (a, b), (ia, ib) = args
        full = lambda i: [None, *i, idx_x]  # noqa: E731
        return dphi_diff(model, img, a, full(ia), b, full(ib), 1.0 / (x.shape[0] * beta))

    pairs = (tuple(v[1:] for v in states), tuple(v[:-1] for v in states))
    out = lax.map(one, (pairs, (tuple(i[1:] for i in idx), tuple(i[:-1] for i in idx))))
    diffs = to_canonical(tuple(jnp.mean(v[1:] - v[:-1], axis=1) for v in states))
    return out | {f"s{n}": v / beta for n, v in enumerate(diffs)}


def bptt_traces(model: ModelSpec, params: Params, x: X, y: Y, start: States, steps: int) -> Params:
    """BPTT traces from ONE reverse pass through the last K steps (docs/theory.md §2).

    Step k runs with its own parameter copy θ + ζ_k (ζ_k = 0, stacked on a leading K axis and
    scanned) and adds η_k = 0 to the state it produces; one `jax.grad` of L(s_K) gives every
    ∂L/∂ζ_k = ∂L/∂θ_k (the share through step k) and ∂L/∂η_k = ∂L/∂s_{k+1}. Each step recomputes
    its input projection from its own W{N}_x (traces only). The scan runs `reverse=True`, so step k
    uses slot K − 1 − k: slot t is trace index t (t = 0 is the last transition).
    """
    img = image(model, x)

    def body(s, pert):
        zeta, eta = pert
        q = prepare(model, {k: v + zeta[k] for k, v in params.items()})
        new, _ = step(model, q, project(model, q, img)[0], s)
        return tuple(a + e for a, e in zip(new, eta, strict=True)), None

    def loss(zeta, eta):
        s, _ = lax.scan(body, start, (zeta, eta), reverse=True)
        return 0.5 * jnp.sum((s[0] - y) ** 2) / y.shape[0]

    zeta = {k: jnp.zeros((steps, *v.shape), v.dtype) for k, v in params.items()}
    eta = tuple(jnp.zeros((steps, *v.shape), v.dtype) for v in start)
    g_zeta, g_eta = jax.grad(loss, argnums=(0, 1))(zeta, eta)
    g_s = to_canonical(tuple(jnp.sum(g, axis=1) for g in g_eta))
    return g_zeta | {f"s{n}": g for n, g in enumerate(g_s)}


def zeros(model: ModelSpec, batch: int, dtype) -> States:
    """Native zero states."""
    return to_native(tuple(jnp.zeros(v, dtype) for v in state_shapes(model, batch).values()))


def ep_step(
    model: ModelSpec,
    params: Params,
    x: X,
    y: Y,
    lrs: dict[str, Scalar],
    beta: Scalar,
    *,
    free_steps: int,
    steps: int,
    symmetric: bool,
) -> tuple[Params, Scalar, Int[Array, ""]]:
    """EP training step (docs/theory.md §2): θ ← θ + lr (∂Φ/∂θ(s^β_K) − ∂Φ/∂θ(s_*)) / β, each with
    the pooling indices at its own state; symmetric: (∂Φ/∂θ(s^{+|β|}_K) − ∂Φ/∂θ(s^{−|β|}_K)) / 2|β|.
    The input convolution once for both phases."""
    q, img = prepare(model, params), image(model, x)
    u, idx_x = project(model, q, img)
    star = run(model, q, u, zeros(model, x.shape[0], x.dtype), free_steps)
    loss, errors = loss_errors(star, y)
    if symmetric:
        hi = run(model, q, u, star, steps, y, jnp.abs(beta))
        lo = run(model, q, u, star, steps, y, -jnp.abs(beta))
        scale = 2 * jnp.abs(beta)
    else:
        hi, lo = run(model, q, u, star, steps, y, beta), star
        scale = beta
    ia, ib = indices_at(model, q, hi, idx_x), indices_at(model, q, lo, idx_x)
    delta = dphi_diff(model, img, hi, ia, lo, ib, 1.0 / (x.shape[0] * scale))
    new = {k: v + lrs[k] * delta[k] for k, v in params.items()}
    return new, loss, errors


def bptt_step(
    model: ModelSpec,
    params: Params,
    x: X,
    y: Y,
    lrs: dict[str, Scalar],
    *,
    free_steps: int,
    steps: int,
) -> tuple[Params, Scalar, Int[Array, ""]]:
    """BPTT training step: T − K free steps outside the graph, then θ ← θ − lr ∂L/∂θ through the
    last K steps (truncated BPTT, docs/theory.md §5); the input projection once per phase."""
    img = image(model, x)
    q = prepare(model, params)
    s0 = run(
        model, q, project(model, q, img)[0], zeros(model, x.shape[0], x.dtype), free_steps - steps
    )
    s0 = lax.stop_gradient(s0)

    def loss(p):
        q = prepare(model, p)
        u, _ = project(model, q, img)
        body = lambda v, _: (step(model, q, u, v)[0], None)  # noqa: E731
        s = lax.scan(body, s0, None, length=steps)[0]
        return loss_errors(s, y)

    (loss_value, errors), grads = jax.value_and_grad(loss, has_aux=True)(params)
    new = {k: v - lrs[k] * grads[k] for k, v in params.items()}
    return new, loss_value, errors


# ---------------------------------------------------------------- the family


def unsupported(model: ModelSpec) -> str | None:
    """None for a P-setting conv model whose sizes fit its conv stack; otherwise why not."""
    if model.conv is None or model.setting != "P":
        return "conv models run in the P setting only (docs/theory.md §3.4)"
    if model.feedback_angle is not None:
        return "asymmetric feedback is implemented for fully connected models only"
    conv = model.conv
    if model.sizes != conv.sizes(model.outputs) or model.inputs != int(np.prod(conv.input)):
        return (
            f"a conv model needs inputs = {int(np.prod(conv.input))} and "
            f"sizes = {conv.sizes(model.outputs)}, found {model.inputs} and {model.sizes}"
        )
    if model.input_to not in ((), (len(conv.channels),)):
        return "the input of a conv model feeds its last layer only"
    return None


FAMILY = Family(
    name="conv",
    unsupported=unsupported,
    free_phase=free_phase,
    ep_traces_one=ep_traces_one,
    bptt_traces=bptt_traces,
    ep_step=ep_step,
    bptt_step=bptt_step,
    to_native=to_native,
    to_canonical=to_canonical,
)
