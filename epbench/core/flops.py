"""A FLOP model of one training step per configuration (`ModelSpec`, batch, T, K, algorithm).

Only the products are counted — GEMMs and convolutions, 2 FLOPs per multiply-add — because they
bound the step: the element-wise work (activations, nudges, pooling) is O(1/width) of it. The
model counts what the algorithm needs, not what a given backend happens to compute, so it is the
same for every backend. Ops are plain tuples, so that a backend can time the very same shapes
(epbench.measurements.peak, `Backend.op_seconds`):

    ("gemm", M, K, N)                        (M, K) @ (K, N)
    ("conv", B, C, H, W, O, k, p)            B images C×H×W, O kernels C×k×k, stride 1, padding p
    ("conv_t", B, C, H, W, O, k, p)          its adjoint w.r.t. the input (transposed convolution:
                                             B maps O×H'×W' → C×H×W), the same FLOPs
    ("conv_w", B, C, H, W, O, k, p)          its adjoint w.r.t. the kernel (the kernel gradient)

Counts, with `step` the GEMMs/convolutions of one step of the dynamics (docs/theory.md §3) and
`proj`
the static input projection, counted ONCE PER PHASE (the static input costs nothing per step):

    free phase (T steps)     T · step + proj
    EP nudged phase          K · step + proj; the update (∂Φ/∂θ(s^β_K) − ∂Φ/∂θ(s_*)) / β costs
                             two ∂Φ/∂θ evaluations (`dphi`) — one for a weight that is linear in
                             a single state (W{n}_x of a fully connected model)
    EP symmetric             two nudged phases (2K steps, 2 projections), the same update cost
    BPTT                     T − K free steps + proj, K recorded steps + proj, and the backward
                             pass: per recorded product its two adjoints (input and weight), the
                             projection's weight adjoint once

Fully connected (`W{n}_{n+1}` of shape (m_n, m_{n+1})): a step has two GEMMs per weight, layer n
receiving r^{n+1} W{n}_{n+1}ᵀ, ("gemm", B, m_{n+1}, m_n), and layer n+1 receiving r^n W{n}_{n+1},
("gemm", B, m_n, m_{n+1}); the projection of input layer n is ("gemm", B, inputs, m_n); ∂Φ/∂W is
the outer product ("gemm", m_n, B, m_{n+1}).
P-conv (docs/theory.md §3): the fully connected output as above; per conv layer fed by a state, one
convolution up and one transposed convolution down per step; the input convolution is the
projection; ∂Φ/∂kernel is a kernel gradient ("conv_w").
"""

from __future__ import annotations

from collections import Counter

from epbench.core.spec import ModelSpec

Op = tuple
ALGORITHMS = ("ep", "ep_symmetric", "bptt")


def op_flops(op: Op) -> int:
    """FLOPs of one op (2 per multiply-add)."""
    kind = op[0]
    if kind == "gemm":
        _, m, k, n = op
        return 2 * m * k * n
    if kind in ("conv", "conv_t", "conv_w"):
        _, b, c, h, w, o, k, p = op
        ho, wo = h + 2 * p - k + 1, w + 2 * p - k + 1
        return 2 * b * o * ho * wo * c * k * k
    raise ValueError(f"unknown op kind {kind!r}: expected gemm, conv, conv_t or conv_w")


def total_flops(ops: Counter) -> int:
    """Σ count · op_flops(op)."""
    return sum(count * op_flops(op) for op, count in ops.items())


def _conv_geometry(model: ModelSpec, batch: int) -> list[Op]:
    """One ("conv", …) per conv layer from the input side: the first one reads the image, the
    others the pooled state below."""
    conv = model.conv
    assert conv is not None
    inputs = [conv.input, *conv.layer_shapes()[:-1]]
    return [
        ("conv", batch, c, h, w, out, conv.kernel, conv.padding)
        for (c, h, w), out in zip(inputs, conv.channels, strict=True)
    ]


def _adjoints(op: Op) -> list[Op]:
    """The backward pass of one forward product: its adjoint w.r.t. the input and the weight."""
    if op[0] == "gemm":
        _, m, k, n = op
        return [("gemm", m, n, k), ("gemm", k, m, n)]
    if op[0] == "conv":
        return [("conv_t", *op[1:]), ("conv_w", *op[1:])]
    if op[0] == "conv_t":  # the adjoint of a transposed convolution is the convolution
        return [("conv", *op[1:]), ("conv_w", *op[1:])]
    raise ValueError(f"no adjoint for op {op!r}")


def step_ops(model: ModelSpec, batch: int) -> Counter:
    """The products of one step of the dynamics (without the static projection)."""
    ops: Counter = Counter()
    if model.conv is None:
        for n in range(model.depth):
            m, m1 = model.sizes[n], model.sizes[n + 1]
            ops[("gemm", batch, m1, m)] += 1  # layer n  ← r^{n+1} W{n}_{n+1}ᵀ
            ops[("gemm", batch, m, m1)] += 1  # layer n+1 ← r^n W{n}_{n+1}
        return ops
    ops[("gemm", batch, model.sizes[1], model.sizes[0])] += 1  # s⁰ ← W0_1 vec(s¹)
    ops[("gemm", batch, model.sizes[0], model.sizes[1])] += 1  # s¹ ← … + W0_1ᵀ s⁰
    for op in _conv_geometry(model, batch)[1:]:
        ops[op] += 1  # up: Wₙ ∗ sⁿ⁺¹
        ops[("conv_t", *op[1:])] += 1  # down: convᵀ(unpool(sⁿ); Wₙ)
    return ops


def projection_ops(model: ModelSpec, batch: int) -> Counter:
    """The static input projection (once per phase)."""
    if model.conv is not None:
        return Counter({_conv_geometry(model, batch)[0]: 1})
    return Counter({("gemm", batch, model.inputs, model.sizes[n]): 1 for n in model.input_layers})


def dphi_ops(model: ModelSpec, batch: int) -> Counter:
    """One evaluation of ∂Φ/∂θ at a state (batch-summed outer products / kernel gradients)."""
    ops: Counter = Counter()
    if model.conv is None:
        for n in range(model.depth):
            ops[("gemm", model.sizes[n], batch, model.sizes[n + 1])] += 1
        for n in model.input_layers:
            ops[("gemm", model.sizes[n], batch, model.inputs)] += 1
        return ops
    ops[("gemm", model.sizes[0], batch, model.sizes[1])] += 1
    for op in _conv_geometry(model, batch):
        ops[("conv_w", *op[1:])] += 1
    return ops


def _scaled(ops: Counter, times: int) -> Counter:
    return Counter({op: count * times for op, count in ops.items() if count * times})


def phase_ops(
    model: ModelSpec, *, batch: int, T: int, K: int, algorithm: str
) -> dict[str, Counter]:
    """The ops of one training step of `algorithm` ("ep", "ep_symmetric", "bptt") by phase:
    `free`, then `nudged` + `update` (EP) or `recorded` + `backward` + `update` (BPTT)."""
    step, proj = step_ops(model, batch), projection_ops(model, batch)
    if algorithm in ("ep", "ep_symmetric"):
        runs = 2 if algorithm == "ep_symmetric" else 1
        update = dphi_ops(model, batch) + dphi_ops(model, batch)
        if model.conv is None:  # ∂Φ/∂W{n}_x is linear in rⁿ: one product of the difference
            update -= Counter(
                {("gemm", model.sizes[n], batch, model.inputs): 1 for n in model.input_layers}
            )
        return {
            "free": _scaled(step, T) + proj,
            "nudged": _scaled(step, runs * K) + _scaled(proj, runs),
            "update": update,
        }
    if algorithm == "bptt":
        backward: Counter = Counter()
        for op, count in step.items():
            for adjoint in _adjoints(op):
                backward[adjoint] += count * K
        for op in proj:  # the projection's kernel / weight adjoint, once
            backward[_adjoints(op)[1]] += 1
        return {
            "free": _scaled(step, T - K) + proj,
            "recorded": _scaled(step, K) + proj,
            "backward": backward,
            "update": Counter(),
        }
    raise ValueError(f"unknown algorithm {algorithm!r}: expected one of {', '.join(ALGORITHMS)}")


def training_ops(model: ModelSpec, *, batch: int, T: int, K: int, algorithm: str) -> Counter:
    """All ops of one training step of `algorithm` (the sum of `phase_ops`)."""
    total: Counter = Counter()
    for ops in phase_ops(model, batch=batch, T=T, K=K, algorithm=algorithm).values():
        total += ops
    return total
