"""The torch backend's `epbench.core.protocols.FlowNetwork` capability: the Jacobian-vector
product of one free step, for the spectral radius of `gradient-flow` (docs/theory.md §6.4).

What comes in: a built `epbench_torch.adapter.TorchNetwork`. What goes out: its `state_jvp`
(bound on the network by the backend's `build`), J·v with J = ∂F/∂s at the given states by
forward-mode differentiation (`torch.func.jvp`) of one differentiable step F of the network's
family — the fully connected families' `network.run` (their free phase computes in place, which
forward mode cannot follow) and the standard RNNs' free phase —, or None for a family without
one here (P-conv): the network then lacks the capability and `gradient-flow` skips it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from . import network, rnn
from .adapter import TorchNetwork, like


def one_step_of(net: TorchNetwork) -> Callable | None:
    """(params, x, states) → the states after one differentiable free step, or None."""
    model = net.model
    if net.family.free_phase is network.free_phase:  # the tied and asymmetric families

        def fc_step(params, x, states):
            u = network.projection(model, params, network.input_of(model, x))
            return network.run(model, states, u, network.couplings(model, params), 1)

        return fc_step
    if net.family is rnn.FAMILY:
        return lambda params, x, states: rnn.free_phase(model, params, x, states, 1)[0]
    return None


def state_jvp_of(net: TorchNetwork) -> Callable[..., dict[str, np.ndarray]] | None:
    """`net`'s `state_jvp(params, x, *, at, tangent)` (epbench.core.protocols.FlowNetwork), or
    None when its family has no differentiable step here (module doc)."""
    kind = like(net.dtype, net.device)
    step = one_step_of(net)
    if step is None:
        return None

    def native(states: Any) -> tuple[torch.Tensor, ...]:
        return net.family.to_native(tuple(torch.as_tensor(np.asarray(v), **kind) for v in states))

    def state_jvp(params, x, *, at, tangent: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        x = torch.as_tensor(np.asarray(x), **kind)
        s = net.family.to_native(tuple(torch.as_tensor(v, **kind) for v in at))
        v = native([tangent[f"s{n}"] for n in range(len(s))])
        theta = {k: p.detach() for k, p in params.items()}

        def one_step(*states: torch.Tensor) -> tuple[torch.Tensor, ...]:
            return tuple(step(theta, x, states))

        _, out = torch.func.jvp(one_step, s, v)
        return {f"s{n}": o.detach().cpu().numpy().copy() for n, o in enumerate(out)}

    return state_jvp
