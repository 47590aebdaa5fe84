"""RTRL in JAX: the truncated BPTT gradient computed forward in time (PAPER.md §6.3).

Real-time recurrent learning carries the sensitivities J_k = ∂s_k/∂θ forward with the states,

    J_0 = 0 (s_{T−K} is held fixed),   J_{k+1} = ∂F/∂s (s_k) · J_k + ∂F/∂θ (s_k),

and reads the gradient at the end: ∂L/∂θ = ∂L/∂s_K · J_K = Σ_{t<K} ∇BPTT_θ(t), BPTT truncated to
the same K steps. `jax.jacfwd` of the K-step loss is exactly this recursion: `vmap` of `jvp` over
the P basis directions of θ, each tangent pushed through the `lax.fori_loop` step by step alongside
the primal states (forward-mode differentiation), so memory is O(P · B · Σ sizes), independent of K,
and the cost P times a forward pass — for the toy model and small nets only.

The dynamics are `epbench_jax.asymmetric.step` (tied or asymmetric, EB or P); `JaxRtrlNetwork`
adds the optional `rtrl_gradient` method of `epbench.core.protocols` to `compiled.JaxNetwork` for the
fully connected families (tied and asymmetric).
"""

from __future__ import annotations

from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from epbench.core.spec import ModelSpec

from .asymmetric import input_of, loss_errors, project, run
from .compiled import JaxNetwork


def truncated_gradient(model: ModelSpec, params, x, y, start, steps: int):
    """∂L/∂θ of L = (1/2B) Σ_b ‖s⁰_K − y‖², s_K after `steps` steps from `start`, by `jacfwd`."""

    def loss(p):
        s = run(model, p, project(model, p, input_of(model, x)), start, steps)
        return loss_errors(s, y)[0]

    return jax.jacfwd(loss)(params)


def rtrl_gradient(net: Any, params, x, y, *, start, steps: int) -> dict[str, np.ndarray]:
    """Σ_{t<K} ∇BPTT_θ(t) for every parameter of `net` (a fully connected jax network: its
    `model` and `dtype`), forward in time through `steps` = K steps from `start` = s_{T−K}.
    Compiled once per network and K (the jitted function is kept on `net`)."""
    if steps == 0:
        return {k: np.zeros(np.shape(v), dtype=net.dtype) for k, v in params.items()}
    compiled = getattr(net, "_rtrl_compiled", None)
    if compiled is None:
        compiled = jax.jit(partial(truncated_gradient, net.model), static_argnames=("steps",))
        net._rtrl_compiled = compiled
    with jax.enable_x64(net.dtype == "float64"), jax.default_matmul_precision("highest"):
        device = next(iter(next(iter(params.values())).devices()))

        def put(a):
            return jax.device_put(jnp.asarray(np.asarray(a), dtype=net.dtype), device)

        grads = compiled(params, put(x), put(y), tuple(put(v) for v in start), steps=steps)
        return {k: np.asarray(grads[k]) for k in params}


class JaxRtrlNetwork(JaxNetwork):
    """A fully connected `JaxNetwork` (tied or asymmetric) plus the optional `rtrl_gradient`."""

    def rtrl_gradient(self, params, x, y, *, start, steps) -> dict[str, np.ndarray]:
        """Σ_t ∇BPTT_θ(t) through the K steps from `start`, forward in time (module doc)."""
        return rtrl_gradient(self, params, x, y, start=start, steps=steps)
