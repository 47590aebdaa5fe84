"""The jax backend's `epbench.core.protocols.FlowNetwork` capability: the Jacobian-vector product
of one free step, for the spectral radius of `gradient-flow` (docs/theory.md §6.4).

What comes in: a built `epbench_jax.compiled.JaxNetwork` (its family's `free_phase`, its scope and
conversions). What goes out: `state_jvp`, bound on the network by the backend's `build`, which
computes J·v with J = ∂F/∂s at the given states by `jax.jvp` of one step of the family's own
free phase — the same F every phase runs, so every family has it without code of its own —
jitted once per network.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from .compiled import JaxNetwork


def state_jvp_of(net: JaxNetwork) -> Callable[..., dict[str, np.ndarray]]:
    """`net`'s `state_jvp(params, x, *, at, tangent)` (epbench.core.protocols.FlowNetwork)."""
    family, model = net.family, net.model

    @jax.jit
    def apply(params, x, at, tangent):
        def one_step(s):
            return family.free_phase(model, params, x, s, jnp.asarray(1, jnp.int32))[0]

        return jax.jvp(one_step, (at,), (tangent,))[1]

    def state_jvp(params, x, *, at, tangent: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        with net.scope():
            x = net._put(x)
            at = net._start(at, x.shape[0])
            v = family.to_native(tuple(np.asarray(tangent[f"s{n}"]) for n in range(len(at))))
            out = family.to_canonical(apply(params, x, at, tuple(net._put(a) for a in v)))
            return {f"s{n}": np.array(o) for n, o in enumerate(out)}

    return state_jvp
