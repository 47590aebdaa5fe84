"""Standard RNN baselines in torch (docs/theory.md §6.4): a stacked vanilla tanh RNN and a stacked
LSTM reading the static input x at every step, with a linear read-out s⁰ of the last layer's state,
trained by BPTT only (they have no primitive Φ, so EP is not defined for them).

Each layer computes what `torch.nn.RNNCell` (tanh) or `torch.nn.LSTMCell` computes (gate order
i, f, g, o) with the canonical parameters (`epbench.core.params`, "Standard RNN baselines"):
`W{n}_{n}` in the place of its `weight_hh`, the weight from below in that of `weight_ih`, `b{n}`
of `bias_ih` with `bias_hh` = 0 (torch adds the two biases, so one canonical bias carries their
sum); backends/epbench-torch/tests/test_rnn.py checks the equality against the torch cells. The
step is written out in tensor ops rather than calling the cells through
`torch.func.functional_call`, whose parameter swap on every call dominated a training step;
small models run their per-step loops single-threaded (`network.small_ops`).
States are a tuple `(s⁰, s¹, …, sᴺ)`: s⁰ the read-out, sⁿ layer n's h (rnn) or [h, c]
concatenated (lstm). One step runs layer N (it reads x), then N−1 … 1 (each reads the new h of
the layer below it in the stack), then s⁰ = W0_1 h¹ + b0 — the same step as `epbench_jax.rnn`.
The loss, the truncation (T − K steps without a graph, K with one) and the traces follow the
Φ-networks' conventions (epbench.core.protocols). `FAMILY` bundles the phases for
`epbench_torch.adapter.TorchNetwork`.
"""

from __future__ import annotations

import torch

from epbench.core.errors import BackendError
from epbench.core.spec import ModelSpec

from .adapter import Family, Params, States, graph_loss, loss_errors
from .network import small_ops


def projection(model: ModelSpec, p: Params, x: torch.Tensor) -> torch.Tensor:
    """The static part of layer N's drive, W{N}_x x + b{N}: the same at every step."""
    return torch.addmm(p[f"b{model.depth}"], x, p[f"W{model.depth}_x"].T)


def layer(model: ModelSpec, p: Params, n: int, state: torch.Tensor, a: torch.Tensor):
    """Layer n's new state and its new h from its state and its input: `a` the new h of layer
    n+1, or for layer N its `projection` (module doc)."""
    width = model.sizes[n]
    h = state[:, :width] if model.cell == "lstm" else state
    if n == model.depth:
        z = torch.addmm(a, h, p[f"W{n}_{n}"].T)
    else:
        z = torch.addmm(p[f"b{n}"], a, p[f"W{n}_{n + 1}"].T) + h @ p[f"W{n}_{n}"].T
    if model.cell == "rnn":
        h = torch.tanh(z)
        return h, h
    i, f, g, o = z.chunk(4, dim=1)
    c = torch.sigmoid(f) * state[:, width:] + torch.sigmoid(i) * torch.tanh(g)
    h = torch.sigmoid(o) * torch.tanh(c)
    return torch.cat([h, c], dim=1), h


def step(model: ModelSpec, p: Params, u: torch.Tensor, s: States) -> States:
    """One step of every layer, input side first, then the read-out (module doc); `u` is the
    input's `projection`."""
    new = list(s)
    a = u
    for n in range(model.depth, 0, -1):
        new[n], a = layer(model, p, n, s[n], a)
    new[0] = torch.addmm(p["b0"], a, p["W0_1"].T)
    return tuple(new)


def free_phase(model: ModelSpec, params: Params, x, s: States, steps: int):
    """`steps` steps from `s`: (s_T, s_{T−1}) (both `s` for no steps)."""
    prev, u = s, projection(model, params, x)
    with small_ops(model, x):  # single-threaded per-step ops for small models (network.py)
        for _ in range(steps):
            prev, s = s, step(model, params, u, s)
    return s, prev


def bptt_traces(model: ModelSpec, params: Params, x, y, start: States, steps: int):
    """BPTT traces from ONE backward pass through K steps from `start` (epbench.core.protocols):
    step k runs with its own leaf copy θ_k of the parameters, so ∂L/∂θ_k is the share through
    that step, and adds a zero leaf η_k to the state it produces, so ∂L/∂η_k = ∂L/∂s_{k+1} (the
    state as the next step's input: not through the read-out of the same step, as in
    `epbench_jax.rnn`); trace index t = K − 1 − k."""
    s = start
    copies, states = [], []
    with torch.enable_grad(), small_ops(model, x):
        for _ in range(steps):
            copy = {k: v.detach().clone().requires_grad_(True) for k, v in params.items()}
            eta = tuple(torch.zeros_like(v, requires_grad=True) for v in s)
            new = step(model, copy, projection(model, copy, x), s)  # θ_k's own projection
            s = tuple(v + e for v, e in zip(new, eta, strict=True))
            copies.append(copy)
            states.append(eta)
        leaves = [c[k] for c in copies for k in params] + [v for st in states for v in st]
        grads = torch.autograd.grad(
            graph_loss(s[0], y), leaves, allow_unused=True, materialize_grads=True
        )
    names, width = list(params), len(params)
    g_params, g_states = grads[: steps * width], grads[steps * width :]
    layers_n = len(start)
    with torch.no_grad():
        out = {k: torch.stack(g_params[i::width][::-1]) for i, k in enumerate(names)}
        for n in range(layers_n):
            out[f"s{n}"] = torch.stack(g_states[n::layers_n][::-1]).sum(1)
    return out


def bptt_step(model: ModelSpec, params: Params, x, y, lrs: dict[str, float], *, free_steps, steps):
    """θ ← θ − lr ∂L/∂θ through the last K of T steps (truncated BPTT, plain SGD), in place."""
    widths = [w * (2 if n and model.cell == "lstm" else 1) for n, w in enumerate(model.sizes)]
    s = tuple(x.new_zeros(x.shape[0], w) for w in widths)
    with small_ops(model, x):  # the whole step: its tensors are small (network.py)
        with torch.no_grad():
            s, _ = free_phase(model, params, x, s, free_steps - steps)
        leaves = {k: v.detach().requires_grad_(True) for k, v in params.items()}
        with torch.enable_grad():
            u = projection(model, leaves, x)
            for _ in range(steps):
                s = step(model, leaves, u, s)
            grads = torch.autograd.grad(
                graph_loss(s[0], y), list(leaves.values()), allow_unused=True,
                materialize_grads=True,
            )  # fmt: skip
        with torch.no_grad():
            for name, grad in zip(leaves, grads, strict=True):
                params[name].sub_(grad, alpha=lrs[name])
            loss, errors = loss_errors(s[0].detach(), y)
    return params, loss, errors


def no_ep(model: ModelSpec, *args, **kwargs):
    """EP needs a primitive function Φ (docs/theory.md §1); a standard RNN has none."""
    raise BackendError(
        f"torch backend: EP is not defined for model.cell = {model.cell!r} (no primitive Φ); "
        'train it by BPTT only (train.algorithms = ["bptt"])'
    )


def unsupported(model: ModelSpec) -> str | None:
    """None for a fully connected, tied rnn or lstm model; else why this family does not run it."""
    if model.cell not in ("rnn", "lstm"):
        return f"the standard RNN family runs model.cell rnn or lstm, not {model.cell!r}"
    if model.conv is not None or model.feedback_angle is not None or model.input_to:
        return "a standard RNN is fully connected and tied, with the input into layer N only"
    return None


FAMILY = Family(
    name="standard RNN",
    unsupported=unsupported,
    free_phase=free_phase,
    ep_traces=no_ep,
    bptt_traces=bptt_traces,
    ep_step=no_ep,
    bptt_step=bptt_step,
)
