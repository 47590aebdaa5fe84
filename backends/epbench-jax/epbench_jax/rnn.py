"""Standard RNN baselines in JAX (docs/theory.md §6.4): a stacked vanilla tanh RNN and a stacked
LSTM reading the static input x at every step, with a linear read-out s⁰ of the last layer's state,
trained by BPTT only (they have no primitive Φ, so EP is not defined for them).

Parameters are a dict of arrays keyed by canonical names (`epbench.core.params`, "Standard RNN
baselines"); states a tuple `(s⁰, s¹, …, sᴺ)`: s⁰ the read-out, sⁿ layer n's h (rnn) or [h, c]
concatenated (lstm). One step, layer N first (it reads x), then n = N−1 … 1 (each reads the new
state of layer n+1), then the read-out of the new h¹:

    rnn    hⁿ ← tanh(W{n}_{n} hⁿ + W{n}_{below} a + b{n})
    lstm   i, f, g, o = σ(z_i), σ(z_f), tanh(z_g), σ(z_o) with z = W{n}_{n} hⁿ + W{n}_{below} a
           + b{n} (torch's gate order); cⁿ ← f cⁿ + i g; hⁿ ← o tanh(cⁿ)
    s⁰     ← W0_1 h¹ + b0

with a = x for layer N and the new h^{n+1} otherwise. The loss, the truncation (T − K steps
without a graph, K with one) and the traces follow the Φ-networks' conventions
(epbench.core.protocols). Every phase is a `lax.fori_loop` / `lax.scan`, jitted whole by
`epbench_jax.compiled.JaxNetwork`; `FAMILY` bundles them.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax
from jaxtyping import Array, Float, Int

from epbench.core.errors import BackendError
from epbench.core.spec import ModelSpec

from .compiled import Family

Params = dict[str, Float[Array, "..."]]
States = tuple[Float[Array, "B _"], ...]  # (s⁰, …, sᴺ)
X = Float[Array, "B inputs"]
Y = Float[Array, "B outputs"]
Scalar = Float[Array, ""]


def _below(model: ModelSpec, n: int) -> str:
    """The name of the weight that feeds layer n from below (x for layer N)."""
    return f"W{n}_x" if n == model.depth else f"W{n}_{n + 1}"


def _layer(model: ModelSpec, p: Params, n: int, state: Array, a: Array) -> tuple[Array, Array]:
    """Layer n's new state and its new h from its state and its input `a` (module doc)."""
    z = state[:, : model.sizes[n]] if model.cell == "lstm" else state
    z = z @ p[f"W{n}_{n}"].T + a @ p[_below(model, n)].T + p[f"b{n}"]
    if model.cell == "rnn":
        h = jnp.tanh(z)
        return h, h
    i, f, g, o = jnp.split(z, 4, axis=1)
    c = jax.nn.sigmoid(f) * state[:, model.sizes[n] :] + jax.nn.sigmoid(i) * jnp.tanh(g)
    h = jax.nn.sigmoid(o) * jnp.tanh(c)
    return jnp.concatenate([h, c], axis=1), h


def step(model: ModelSpec, p: Params, x: X, s: States) -> States:
    """One step of every layer, input side first, then the read-out (module doc)."""
    new = list(s)
    a = x
    for n in range(model.depth, 0, -1):
        new[n], a = _layer(model, p, n, s[n], a)
    new[0] = a @ p["W0_1"].T + p["b0"]
    return tuple(new)


def run(model: ModelSpec, p: Params, x: X, s: States, steps: Int[Array, ""] | int) -> States:
    """`steps` steps in one `lax.fori_loop`."""
    return lax.fori_loop(0, steps, lambda _, v: step(model, p, x, v), s)


def loss_errors(s: States, y: Y) -> tuple[Scalar, Int[Array, ""]]:
    """Batch-mean loss ½‖s⁰ − y‖² and the number of misclassified examples."""
    loss = 0.5 * jnp.sum((s[0] - y) ** 2) / y.shape[0]
    errors = jnp.sum(jnp.argmax(s[0], axis=1) != jnp.argmax(y, axis=1))
    return loss, errors


def free_phase(
    model: ModelSpec, params: Params, x: X, s: States, steps: Int[Array, ""]
) -> tuple[States, Scalar]:
    """`steps` ≥ 1 steps (traced count) and the residual ‖s_T − s_{T−1}‖ over all layers."""
    before = run(model, params, x, s, steps - 1)
    after = step(model, params, x, before)
    residual = jnp.sqrt(sum(jnp.sum((a - b) ** 2) for a, b in zip(after, before, strict=True)))
    return after, residual


def bptt_traces(model: ModelSpec, params: Params, x: X, y: Y, start: States, steps: int) -> Params:
    """BPTT traces from ONE reverse pass through K steps (epbench.core.protocols): step k runs
    with its own copy θ_k = θ + ζ_k (ζ_k = 0) and adds η_k = 0 to the state it produces; one
    `jax.grad` gives ∂L/∂θ_k (the share through that step) and ∂L/∂s_{k+1}. The scan runs
    `reverse=True` over the perturbations, so slot t is trace index t (t = 0: the last step)."""

    def body(s, pert):
        zeta, eta = pert
        p = {k: v + zeta[k] for k, v in params.items()}
        return tuple(a + e for a, e in zip(step(model, p, x, s), eta, strict=True)), None

    def loss(zeta, eta):
        s, _ = lax.scan(body, start, (zeta, eta), reverse=True)
        return loss_errors(s, y)[0]

    zeta = {k: jnp.zeros((steps, *v.shape), v.dtype) for k, v in params.items()}
    eta = tuple(jnp.zeros((steps, *v.shape), v.dtype) for v in start)
    g_zeta, g_eta = jax.grad(loss, argnums=(0, 1))(zeta, eta)
    return {**g_zeta, **{f"s{n}": jnp.sum(g, axis=1) for n, g in enumerate(g_eta)}}


def bptt_step(
    model: ModelSpec, params: Params, x: X, y: Y, lrs: dict[str, Scalar], *,
    free_steps: int, steps: int,
) -> tuple[Params, Scalar, Int[Array, ""]]:  # fmt: skip
    """θ ← θ − lr ∂L/∂θ through the last K of T steps (truncated BPTT, plain SGD)."""
    widths = [w * (2 if n and model.cell == "lstm" else 1) for n, w in enumerate(model.sizes)]
    zero = tuple(jnp.zeros((x.shape[0], w), x.dtype) for w in widths)
    start = lax.stop_gradient(run(model, params, x, zero, free_steps - steps))

    def loss(p):
        body = lambda v, _: (step(model, p, x, v), None)  # noqa: E731
        return loss_errors(lax.scan(body, start, None, length=steps)[0], y)

    (loss_value, errors), grads = jax.value_and_grad(loss, has_aux=True)(params)
    return {k: v - lrs[k] * grads[k] for k, v in params.items()}, loss_value, errors


def no_ep(model: ModelSpec, *args, **kwargs):
    """EP needs a primitive function Φ (docs/theory.md §1); a standard RNN has none."""
    raise BackendError(
        f"jax backend: EP is not defined for model.cell = {model.cell!r} (no primitive Φ); "
        'train it by BPTT only (train.algorithms = ["bptt"])'
    )


def unsupported(model: ModelSpec) -> str | None:
    """None for a fully connected, tied rnn or lstm model in the P setting; else why not."""
    if model.cell not in ("rnn", "lstm"):
        return f"the standard RNN family runs model.cell rnn or lstm, not {model.cell!r}"
    if model.conv is not None or model.feedback_angle is not None or model.input_to:
        return "a standard RNN is fully connected and tied, with the input into layer N only"
    return None


FAMILY = Family(
    name="standard RNN",
    unsupported=unsupported,
    free_phase=free_phase,
    ep_traces_one=no_ep,
    bptt_traces=bptt_traces,
    ep_step=no_ep,
    bptt_step=bptt_step,
)
