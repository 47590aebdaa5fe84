"""Fully connected convergent RNNs in torch, EB and P settings (docs/theory.md §1–§3): the dynamics
(tied or with independent feedback weights) and the tied family's phases.

Parameters are a dict of tensors keyed by canonical names (`epbench.core.params`); states a tuple
`(s⁰, …, sᴺ)` of `(B, sizes[n])` tensors. Row-vector batch form throughout: with `W{n}_{n+1}` of
shape `(sizes[n], sizes[n+1])`, layer n receives `r^{n+1} W{n}_{n+1}ᵀ` and layer n+1 receives
`r^n W{n}_{n+1}` (tied) or `r^n B{n+1}_{n}ᵀ` (asymmetric, `epbench_torch.asymmetric`), where
`r = ρ(s)` in the EB setting and `r = s` in the P setting. The drive of layer n (§3) is

    h^n = [n<N] r^{n+1} W{n}_{n+1}ᵀ + [n>0] r^{n−1} M_n + u^n,     M_n = W{n−1}_{n} or B{n}_{n−1}ᵀ
    u^n = [n∈input] r_x W{n}_xᵀ + b_n          (r_x = ρ(x) in EB, raw x in P)

where the static projection `u` is computed once per phase call. One step (all layers from s_t):

    EB   s^n ← s^n + ε (−s^n + ρ'(s^n) ⊙ h^n)   [+ εβ (y − s⁰) on the output]   = s − ε ∂E/∂s
    P    s^n ← σ(h^n)                            [+ β (y − s⁰) on the output, after σ]

then, if `model.clamp`, every state is clipped to [0, 1]. Unlike the reference code the EB output
layer keeps its ρ'(s⁰) factor, so F = ∂Φ_ε/∂s exactly (§3.2). The dynamics are written once as
`step` (plain differentiable expressions, for graphs, trajectories and RTRL), and once more as
`relax`, the same numbers into preallocated buffers, for runs without a graph (the fast path).

∂Φ/∂θ of the tied model, without the ε of Φ_ε = ½‖s‖² − εE (it cancels against β_eff = εβ, §2):
W{n}_{n+1}: mean_b r^n r^{n+1}ᵀ, W{n}_x: mean_b r^n r_xᵀ, b_n: mean_b r^n. So every EP weight
trace divides by β and every EP neuron trace by β_eff (εβ in EB, β in P).

Speed: per-step CPU work below `SERIAL_WORK` runs on one thread (`small_ops`); the free runs use
two to six in-place ops per layer and step (`relax`); traces are written into numpy-backed
buffers (`adapter.empty`). `FAMILY` bundles the tied phases for `adapter.TorchNetwork`.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from types import MappingProxyType

import torch
from torch.func import jacfwd

from epbench.core.estimators import holomorphic_phases
from epbench.core.spec import ModelSpec

from .adapter import (
    Family,
    argument_imag,
    complex_copy,
    empty,
    graph_loss,
    loss_errors,
    nudges,
)

States = tuple[torch.Tensor, ...]
Params = dict[str, torch.Tensor]
Out = torch.Tensor | None
Couplings = tuple[list, list]  # (forward, feedback), see `couplings`

# Per-step CPU work below this many state entries (batch × widest layer) runs on one thread: such
# ops are too small to gain from intra-op threads, and the worker threads' fork/join and spin-wait
# cost more than the op itself (measured 1.4× slower on 2 quiet cores, up to 5× on busy ones).
# Training steps of such models run wholly on one thread: their once-per-step products (input
# projection, weight update; ~16 MFLOP for 784-512) gained < 20 % from a second thread on quiet
# cores but took up to 20× longer when another process held a core (OpenMP barrier spin-waits).
SERIAL_WORK = 1 << 16


# Activations (§3) as ρ(x) and ρ'(s, ρ(s)). With `out=None` they are plain differentiable
# expressions (for autograd graphs and forward-mode RTRL); given a buffer they write into it.


def _tanh(x: torch.Tensor, out: Out = None) -> torch.Tensor:
    return torch.tanh(x, out=out)


def _tanh_prime(s: torch.Tensor, r: torch.Tensor, out: Out = None) -> torch.Tensor:
    if out is None:
        return torch.addcmul(torch.ones_like(r), r, r, value=-1.0)  # 1 − ρ(s)²
    return out.fill_(1.0).addcmul_(r, r, value=-1.0)


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


# The same activations in the form `relax` uses, to spend fewer ops per step: ρ(x) =
# squash(a·x + c) (`squash(x, out=)`, in place when out is x) and ρ'(s) = k · q(s, ρ(s)), q written
# into `out` in one op (`one` is a 0-d tensor holding 1). a and k are powers of two, so scaling by
# them is exact: k·(u + r W) is computed as addmm(k u, r, W, alpha=k), same rounding.


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


def unsupported(model: ModelSpec) -> str | None:
    """None for a tied fully connected model; otherwise why this family does not run it."""
    if model.conv is not None or model.feedback_angle is not None:
        return "the tied fully connected family runs models without conv layers or feedback angle"
    return None


# ---------------------------------------------------------------- dynamics (tied or asymmetric)


@contextmanager
def small_ops(model: ModelSpec, ref: torch.Tensor) -> Iterator[None]:
    """Run the per-step loops of a small model single-threaded on the CPU (see SERIAL_WORK); `ref`
    is the batch (its device and size). torch's thread count is restored on exit."""
    threads = torch.get_num_threads()
    small = ref.shape[0] * max(model.sizes) <= SERIAL_WORK
    if ref.device.type != "cpu" or threads == 1 or not small:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def input_of(model: ModelSpec, x: torch.Tensor) -> torch.Tensor:
    """r_x: ρ(x) in the EB setting, raw x in the P setting (§3)."""
    return ACTIVATIONS[model.activation][0](x) if model.setting == "EB" else x


def neighbours(model: ModelSpec, s: States) -> States:
    """What the neighbours see: ρ(s) in EB, s in P."""
    rho = ACTIVATIONS[model.activation][0]
    return tuple(rho(t) for t in s) if model.setting == "EB" else s


def projection(model: ModelSpec, params: Params, xr: torch.Tensor) -> list[torch.Tensor]:
    """The static part of every drive, once per phase: u^n = [n∈input] r_x W{n}_xᵀ + b_n."""
    u = []
    for n in range(len(model.sizes)):
        bias = params[f"b{n}"]
        if n in model.input_layers:
            u.append(torch.addmm(bias, xr, params[f"W{n}_x"].t()))
        else:
            u.append(bias.expand(xr.shape[0], -1))
    return u


def couplings(model: ModelSpec, params: Params) -> Couplings:
    """(forward, feedback): `forward[n]` = W{n}_{n+1}, with which layer n receives
    r^{n+1} W{n}_{n+1}ᵀ, and `feedback[n]` (n ≥ 1) = W{n−1}_{n} (tied), or B{n}_{n−1} (asymmetric),
    with which layer n receives r^{n−1} M_n (`feedback_matrix`).

    The transposes are taken at each use (`step`): a graph then has one transpose node per use,
    and autograd sums the weight gradients in the order it always has."""
    forward = [params[f"W{n}_{n + 1}"] for n in range(model.depth)]
    if model.feedback_angle is None:
        return forward, [None, *forward]
    return forward, [None, *(params[f"B{n}_{n - 1}"] for n in range(1, model.depth + 1))]


def feedback_matrix(model: ModelSpec, weight: torch.Tensor) -> torch.Tensor:
    """M_n from `couplings`' feedback[n]: W{n−1}_{n} itself (tied), or B{n}_{n−1}ᵀ."""
    return weight if model.feedback_angle is None else weight.t()


def step(
    model: ModelSpec,
    s: States,
    u: list[torch.Tensor],
    weights: Couplings,
    y: torch.Tensor | None = None,
    beta: float = 0.0,
) -> tuple[States, States]:
    """One synchronous step s_t → s_{t+1} (module doc; §1, §3), nudged when `beta` ≠ 0; θ enters
    only through `u` and `weights` (`couplings`). Returns (s_{t+1}, r_t), r_t = ρ(s_t) (EB) or s_t
    (P), reused by the traces. Plain expressions: differentiable, forward mode included."""
    rho, rho_prime = ACTIVATIONS[model.activation]
    eb, eps = model.setting == "EB", float(model.epsilon)
    forward, feedback = weights
    r = neighbours(model, s)
    new = []
    for n in range(len(s)):
        h = u[n]
        if n < model.depth:
            h = torch.addmm(h, r[n + 1], forward[n].t())
        if n > 0:
            h = torch.addmm(h, r[n - 1], feedback_matrix(model, feedback[n]))
        if eb:
            g = rho_prime(s[n], r[n]) * h
            if n == 0 and beta != 0.0:
                g = g + beta * (y - s[0])
            sn = torch.lerp(s[n], g, eps)  # s + ε (g − s)
        else:
            sn = rho(h)
            if n == 0 and beta != 0.0:
                sn = sn + beta * (y - s[0])
        new.append(sn.clamp(0.0, 1.0) if model.clamp else sn)
    return tuple(new), r


def run(model: ModelSpec, s: States, u, weights: Couplings, steps: int) -> States:
    """`steps` free steps of `step` from `s`, differentiable (for autograd graphs)."""
    for _ in range(steps):
        s, _ = step(model, s, u, weights)
    return s


def relax(
    model: ModelSpec,
    s: States,
    u: list[torch.Tensor],
    weights: Couplings,
    steps: int,
    y: torch.Tensor | None = None,
    beta: float = 0.0,
) -> tuple[States, States]:
    """`step` for runs without a graph: the same dynamics into preallocated, swapped buffers, two
    to six in-place ops per layer. Returns (s_T, s_{T−1}), new tensors ((s, s) for no steps).

    With ρ(x) = squash(a x + c) and ρ'(s) = k q(s, ρ(s)) (`FAST`):
        EB   r = squash(a s + c);  g = q(s, r) ⊙ addmm(k u, r', M, alpha=k)  (= ρ'(s) ⊙ h)
        P    s' = squash(addmm(a u + c, r', M, alpha=a))                      (= ρ(h))
    EB is bit-for-bit `step` (k is a power of two); P rounds a u + c once per phase instead of
    a h + c once per step (a rounding-level difference, one op less per layer and step).
    """
    if steps == 0:
        return tuple(s), tuple(s)
    eb, eps, last, clamp = model.setting == "EB", float(model.epsilon), model.depth, model.clamp
    a, c, squash, k, q = FAST[model.activation]
    like = {"dtype": s[0].dtype, "device": s[0].device}
    shift, one = torch.tensor(c, **like), torch.ones((), **like)
    scale = k if eb else a  # the factor carried by the drives
    base = [torch.mul(v, scale) if eb else torch.add(shift, v, alpha=a) for v in u]
    down = [w.t() for w in weights[0]]
    up = [None, *(feedback_matrix(model, m) for m in weights[1][1:])]
    nudge = beta * y if beta != 0.0 else None  # the static part of β (y − s⁰)
    cur = [t.clone() for t in s]
    nxt, h, g, r = ([torch.empty_like(t) for t in s] for _ in range(4))  # EB: h drives, r = ρ(s)
    with small_ops(model, cur[0]):
        for _ in range(steps):
            if eb:
                for n in range(last + 1):  # r = ρ(s)
                    if a == 1.0 and c == 0.0:
                        squash(cur[n], out=r[n])
                    else:
                        squash(torch.add(shift, cur[n], alpha=a, out=r[n]), out=r[n])
            else:
                r, h = cur, nxt  # P writes the drives into `nxt`
            for n in range(last + 1):
                if n < last:
                    torch.addmm(base[n], r[n + 1], down[n], alpha=scale, out=h[n])
                    if n > 0:
                        h[n].addmm_(r[n - 1], up[n], alpha=scale)
                else:
                    torch.addmm(base[n], r[n - 1], up[n], alpha=scale, out=h[n])
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


def trajectory(model: ModelSpec, start: States, u, weights: Couplings, y, beta: float, steps: int):
    """Nudged phase (§1): per layer, the states s_0…s_K and r_0…r_K stacked (K+1, B, ·)."""
    s, states, rs = start, [start], []
    with small_ops(model, start[0]):
        for _ in range(steps):
            s, r = step(model, s, u, weights, y, beta)
            states.append(s)
            rs.append(r)
    rs.append(neighbours(model, s))
    layers = range(len(model.sizes))
    return [torch.stack([st[n] for st in states]) for n in layers], [
        torch.stack([rt[n] for rt in rs]) for n in layers
    ]


def outer_steps(left: torch.Tensor, right: torch.Tensor) -> torch.Tensor:
    """Σ_b left[k, b] ⊗ right[b] for every k: (K, B, i), (B, j) → (K, i, j), one product."""
    steps, batch, rows = left.shape
    out = empty((steps, rows, right.shape[1]), left)
    left = left.transpose(1, 2).reshape(steps * rows, batch)
    torch.mm(left, right, out=out.view(steps * rows, right.shape[1]))
    return out


def pair_products(a: torch.Tensor, b: torch.Tensor, c: torch.Tensor, d: torch.Tensor):
    """Σ_b aᵀ b + cᵀ d per step: (K, B, i), (K, B, j), (K, B, i), (K, B, j) → (K, i, j); `c`
    None: Σ_b aᵀ b alone."""
    out = empty((a.shape[0], a.shape[2], b.shape[2]), a)
    torch.bmm(a.transpose(1, 2), b, out=out)
    return out if c is None else out.baddbmm_(c.transpose(1, 2), d)


# ---------------------------------------------------------------- phases shared by both FC families


def free_phase(model: ModelSpec, params: Params, x: torch.Tensor, s: States, steps: int):
    """`steps` free steps from native `s` without a graph: (s_T, s_{T−1})."""
    with small_ops(model, x):
        u = projection(model, params, input_of(model, x))
        return relax(model, s, u, couplings(model, params), steps)


def bptt_traces(model: ModelSpec, params: Params, x, y, start: States, steps: int):
    """BPTT traces ∇BPTT_s(t) = Σ_b ∂L/∂s_{T−t}, ∇BPTT_θ(t) = ∂L/∂θ_{T−t} (§2) of either FC family.

    One backward pass through the K steps run from `start` = s_{T−K}. The per-step parameter
    copy θ_t is realised by a zero leaf δ^n_t added to every drive h^n_t (θ enters a step only
    through the drives), so g^n_t = ∂L/∂δ^n_t = ∂L/∂h^n_t and, summed over the batch,
    ∂L/∂W{n}_{n+1},t = g^nᵀ r^{n+1}_t [+ r^n_tᵀ g^{n+1} tied], ∂L/∂B{n+1}_{n},t = g^{n+1}ᵀ r^n_t,
    ∂L/∂W{n}_x,t = g^nᵀ r_x and ∂L/∂b_n,t = Σ_b g^n.
    """
    layers = len(model.sizes)
    with torch.no_grad():
        xr = input_of(model, x)
        u = projection(model, params, xr)
        weights = couplings(model, {k: v.detach() for k, v in params.items()})
    s, deltas, rs, states = start, [], [], []
    with torch.enable_grad(), small_ops(model, x):
        for _ in range(steps):
            delta = [torch.zeros_like(s[n], requires_grad=True) for n in range(layers)]
            s, r = step(model, s, [u[n] + delta[n] for n in range(layers)], weights)
            deltas.append(delta)
            rs.append(r)
            states.append(s)
        inputs = [d for delta in deltas for d in delta] + [t for st in states for t in st]
        grads = torch.autograd.grad(
            graph_loss(s[0], y), inputs, allow_unused=True, materialize_grads=True
        )
    tied = model.feedback_angle is None
    with torch.no_grad():
        # Step k (s_k → s_{k+1}) is trace index t = K−1−k: stack in reverse time order.
        g = [torch.stack(grads[n : steps * layers : layers][::-1]) for n in range(layers)]
        rr = [torch.stack([rt[n].detach() for rt in rs[::-1]]) for n in range(layers)]
        gs = grads[steps * layers :]
        out: dict[str, torch.Tensor] = {}
        for n in range(layers):
            if n < model.depth:
                extra = (rr[n], g[n + 1]) if tied else (None, None)
                out[f"W{n}_{n + 1}"] = pair_products(g[n], rr[n + 1], *extra)
                if not tied:
                    out[f"B{n + 1}_{n}"] = pair_products(g[n + 1], rr[n], None, None)
            if n in model.input_layers:
                out[f"W{n}_x"] = outer_steps(g[n], xr)
            out[f"b{n}"] = g[n].sum(1)
            out[f"s{n}"] = torch.stack(gs[n::layers][::-1]).sum(1)
    return out


def bptt_step(model: ModelSpec, params: Params, x, y, lrs: dict[str, float], *, free_steps, steps):
    """One BPTT step of either FC family: T − K free steps without a graph, K with one, then
    θ ← θ − lr · ∂L/∂θ (§2, BPTT truncated to the last K steps), feedback weights included."""
    names = list(params)
    leaves = {name: params[name].detach().requires_grad_(True) for name in names}
    with small_ops(model, x):
        xr = input_of(model, x)
        with torch.enable_grad():  # the input projection once, for both parts
            u = projection(model, leaves, xr)
        with torch.no_grad():
            free = [v.detach() for v in u]
            s, _ = relax(model, zeros(model, x), free, couplings(model, params), free_steps - steps)
        with torch.enable_grad():
            s = run(model, s, u, couplings(model, leaves), steps)
            if steps == 0:
                grads = [torch.zeros_like(leaves[name]) for name in names]
            else:
                grads = torch.autograd.grad(
                    graph_loss(s[0], y), [leaves[name] for name in names],
                    allow_unused=True, materialize_grads=True,
                )  # fmt: skip
        with torch.no_grad():
            for name, grad in zip(names, grads, strict=True):  # (all zero when K = 0)
                params[name].sub_(grad, alpha=lrs[name])
            loss, errors = loss_errors(s[0].detach(), y)
    return params, loss, errors


def zeros(model: ModelSpec, x: torch.Tensor) -> States:
    """Zero states for the batch `x` (its dtype and device)."""
    return tuple(x.new_zeros(x.shape[0], size) for size in model.sizes)


# ---------------------------------------------------------------- the tied family's EP phases


def ep_traces(model: ModelSpec, params: Params, x, y, start: States, beta, steps, symmetric):
    """EP traces ΔEP_s(β, t), ΔEP_θ(β, t) for t < K (§2; epbench.core.protocols) of the tied
    model, each ∂Φ/∂θ difference written a'b'ᵀ − abᵀ = (a' − a) b'ᵀ + a (b' − b)ᵀ (no (K+1)-long
    temporaries). Symmetric: (Δ(+|β|) + Δ(−|β|)) / 2, each divided by its own signed β. A
    complex β (tensors complex too, `adapter.complex_copy`) gives the complex traces."""
    return _ep_traces(model, params, x, y, start, nudges(beta, symmetric=symmetric), steps)[0]


def holomorphic_phase(model: ModelSpec, params: Params, x, y, start: States, beta, steps):
    """One complex phase of holomorphic EP (§2.5; complex tensors, complex β): its complex
    traces Δ(β)/β, and the largest |Im| of ρ's argument along it (`adapter.argument_imag`)."""
    out, runs = _ep_traces(model, params, x, y, start, (beta,), steps)
    layers = range(len(model.sizes)) if model.setting == "EB" else range(1, len(model.sizes))
    return out, argument_imag(model, [runs[0][0][0][n] for n in layers])


def _ep_traces(model: ModelSpec, params: Params, x, y, start: States, betas, steps: int):
    """`ep_traces` of the nudges `betas` averaged; also the runs ((states, rs), coefficient)."""
    eps = float(model.epsilon) if model.setting == "EB" else 1.0  # β_eff = εβ (EB) or β (P)
    xr = input_of(model, x)
    u, weights = projection(model, params, xr), couplings(model, params)
    batch, layers = x.shape[0], len(model.sizes)
    # Each run enters with coefficient 1 / (runs · β): the average of the per-run traces.
    runs = [
        (trajectory(model, start, u, weights, y, b, steps), 1.0 / (len(betas) * b)) for b in betas
    ]
    # Per run and layer, c · (r_{t+1} − r_t), shape (K, B, ·).
    diffs = [[c * (rs[n][1:] - rs[n][:-1]) for n in range(layers)] for (_, rs), c in runs]
    out: dict[str, torch.Tensor] = {}
    for n in range(layers):
        # ∂Φ/∂b_n = mean_b r^n and ∂Φ/∂W{n}_x = mean_b r^n r_xᵀ are linear in r^n.
        dr = sum(d[n] for d in diffs)
        out[f"b{n}"] = dr.mean(1)
        if n in model.input_layers:
            out[f"W{n}_x"] = outer_steps(dr, xr / batch)
        if n < model.depth:  # ∂Φ/∂W{n}_{n+1} = mean_b r^n r^{n+1}ᵀ
            w = empty((steps, model.sizes[n], model.sizes[n + 1]), x)
            for i, (((_, rs), _), d) in enumerate(zip(runs, diffs, strict=True)):
                a = d[n].transpose(1, 2) / batch
                if i == 0:
                    torch.bmm(a, rs[n + 1][1:], out=w)
                else:
                    w.baddbmm_(a, rs[n + 1][1:])
                w.baddbmm_(rs[n][:-1].transpose(1, 2), d[n + 1], alpha=1.0 / batch)
            out[f"W{n}_{n + 1}"] = w
    for n in range(layers):
        ds = sum(c * (st[n][1:] - st[n][:-1]) for (st, _), c in runs)
        out[f"s{n}"] = ds.mean(1) / eps
    return out, runs


def ep_step(
    model: ModelSpec, params: Params, x, y, lrs, beta, *, free_steps, steps, symmetric, points=0
):
    """One EP step (§2): θ ← θ + lr · (∂Φ/∂θ(s^β_K) − ∂Φ/∂θ(s_*)) / β_eff; symmetric:
    (∂Φ/∂θ(s^{+|β|}_K) − ∂Φ/∂θ(s^{−|β|}_K)) / (2 β_eff); holomorphic with `points` ≥ 2
    (`holomorphic_step`). Updates `params` in place."""
    if points:
        return holomorphic_step(
            model, params, x, y, lrs, beta, free_steps=free_steps, steps=steps, points=points
        )
    with small_ops(model, x):
        xr = input_of(model, x)
        u, weights = projection(model, params, xr), couplings(model, params)
        star, _ = relax(model, zeros(model, x), u, weights, free_steps)
        ends = [
            relax(model, star, u, weights, steps, y, b)[0]
            for b in nudges(beta, symmetric=symmetric)
        ]
        a, b = ends if symmetric else (ends[0], star)
        scale = (1.0 / (2.0 * abs(beta)) if symmetric else 1.0 / beta) / x.shape[0]  # batch mean
        ra, rb = neighbours(model, a), neighbours(model, b)
        depth, inputs = model.depth, model.input_layers
        for n in range(depth + 1):
            lr = lrs[f"b{n}"] * scale
            dr = ra[n] - rb[n]
            params[f"b{n}"].add_(dr.sum(0), alpha=lr)
            if n in inputs:
                params[f"W{n}_x"].addmm_(dr.t(), xr, alpha=lrs[f"W{n}_x"] * scale)
            if n < depth:
                lr = lrs[f"W{n}_{n + 1}"] * scale
                w = params[f"W{n}_{n + 1}"]
                w.addmm_(ra[n].t(), ra[n + 1], alpha=lr).addmm_(rb[n].t(), rb[n + 1], alpha=-lr)
        loss, errors = loss_errors(star[0], y)
    return params, loss, errors


def holomorphic_step(
    model: ModelSpec, params: Params, x, y, lrs, beta, *, free_steps, steps, points
):
    """One holomorphic EP step (§2.5): θ ← θ + lr · Re Σ_k c_k (∂Φ/∂θ(s^{β_k}_K) − ∂Φ/∂θ(s_*))
    with c_k = w_k / β_k over `holomorphic_phases` (the sum of the holomorphic traces; the s_*
    terms cancel, Σ_k c_k = 0, and are kept for rounding: each phase is a difference from s_*).
    A complex phase runs `relax` on complex copies. Updates `params` in place."""
    batch, depth, inputs = x.shape[0], model.depth, model.input_layers
    with small_ops(model, x):
        xr = input_of(model, x)
        u, weights = projection(model, params, xr), couplings(model, params)
        star, _ = relax(model, zeros(model, x), u, weights, free_steps)
        rb = neighbours(model, star)
        delta = {name: torch.zeros_like(v) for name, v in params.items()}
        for b, w in holomorphic_phases(beta, points):
            args = (star, u, weights, y)
            if isinstance(b, complex):
                args = complex_copy(args)
            end = relax(model, *args[:3], steps, args[3], b)[0]
            c, ra = w / (b * batch), neighbours(model, end)
            for n in range(depth + 1):
                d = (ra[n] - rb[n]) * c
                delta[f"b{n}"] += d.sum(0).real
                if n in inputs:
                    delta[f"W{n}_x"] += (d.t() @ xr.to(d.dtype)).real
                if n < depth:
                    pair = d.t() @ ra[n + 1] + (rb[n] * c).t() @ (ra[n + 1] - rb[n + 1])
                    delta[f"W{n}_{n + 1}"] += pair.real
        for name, v in delta.items():
            params[name].add_(v, alpha=lrs[name])
        loss, errors = loss_errors(star[0], y)
    return params, loss, errors


def rtrl(model: ModelSpec, params: Params, x, y, start: States, steps: int) -> Params:
    """Σ_{t<K} ∇BPTT_θ(t) of either FC family, forward in time (RTRL, docs/theory.md §6.3), from
    `start` = s_{T−K} through `steps` = K ≥ 1 steps; `params` without a graph.

    Real-time recurrent learning carries the sensitivities J_k = ∂s_k/∂θ forward with the states,
    J_0 = 0 (s_{T−K} is held fixed), J_{k+1} = ∂F/∂s (s_k) · J_k + ∂F/∂θ (s_k), and reads the
    gradient at the end: ∂L/∂θ = ∂L/∂s_K · J_K, BPTT truncated to the same K steps.
    `torch.func.jacfwd` of the K-step loss does exactly this: one tangent per parameter entry
    (all P at once, vectorised) pushed through every `step` alongside the primal states, so
    memory is O(P · B · Σ sizes), independent of K, and the cost P forward passes: for the toy
    model and small nets only (784-512-10 has P ≈ 4·10⁵)."""
    xr = input_of(model, x)

    def loss(p: Params) -> torch.Tensor:
        s = run(model, start, projection(model, p, xr), couplings(model, p), steps)
        return graph_loss(s[0], y)

    return jacfwd(loss)(params)


FAMILY = Family(
    name="fully connected",
    unsupported=unsupported,
    free_phase=free_phase,
    ep_traces=ep_traces,
    bptt_traces=bptt_traces,
    ep_step=ep_step,
    bptt_step=bptt_step,
    rtrl=rtrl,
    holomorphic_phase=holomorphic_phase,
)
