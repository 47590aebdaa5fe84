"""RTRL in torch: the truncated BPTT gradient computed forward in time (PAPER.md §6.3).

Real-time recurrent learning carries the sensitivities J_k = ∂s_k/∂θ forward with the states,

    J_0 = 0 (s_{T−K} is held fixed),   J_{k+1} = ∂F/∂s (s_k) · J_k + ∂F/∂θ (s_k),

and reads the gradient at the end: ∂L/∂θ = ∂L/∂s_K · J_K = Σ_{t<K} ∇BPTT_θ(t), BPTT truncated to
the same K steps. `torch.func.jacfwd` of the K-step loss does exactly this: it pushes one tangent
per parameter entry (all P at once, vectorised) through every step alongside the primal states
(forward-mode differentiation), so memory is O(P · B · Σ sizes), independent of K, and the cost
P times a forward pass — for the toy model and small nets only (784-512-10 has P ≈ 4·10⁵).

The dynamics are `epbench_torch.asymmetric.step`, which covers the tied model (EB and P, any
depth and input layers) and the asymmetric one; `TorchRtrlNetwork` adds the optional
`rtrl_gradient` method of `epbench.core.protocols` to the tied `TorchNetwork`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch.func import jacfwd

from .asymmetric import input_of, loss_of, projection, step
from .network import TorchNetwork


def rtrl_gradient(
    net: Any, params: dict[str, torch.Tensor], x: Any, y: Any, *, start: Any, steps: int
) -> dict[str, np.ndarray]:
    """Σ_{t<K} ∇BPTT_θ(t) for every parameter of `net` (a fully connected torch network: its
    `model`, `dtype`, `device`), by forward-mode differentiation through the `steps` = K steps
    run from `start` = s_{T−K} (native states). Returns canonical numpy arrays."""
    model = net.model
    like = {
        "dtype": {"float32": torch.float32, "float64": torch.float64}[net.dtype],
        "device": torch.device(net.device),
    }
    xr = input_of(model, torch.as_tensor(x, **like))
    yt = torch.as_tensor(y, **like)
    s0 = tuple(torch.as_tensor(v, **like).detach() for v in start)
    theta = {k: v.detach() for k, v in params.items()}

    def loss(p: dict[str, torch.Tensor]) -> torch.Tensor:
        u = projection(model, p, xr)
        s = s0
        for _ in range(steps):
            s, _ = step(model, p, u, s)
        return loss_of(s[0], yt)

    if steps == 0:
        return {k: np.zeros(tuple(v.shape), dtype=net.dtype) for k, v in theta.items()}
    with torch.no_grad():
        grads = jacfwd(loss)(theta)
    return {k: grads[k].cpu().numpy() for k in theta}


class TorchRtrlNetwork(TorchNetwork):
    """The tied fully connected `TorchNetwork` plus the optional `rtrl_gradient` method."""

    def rtrl_gradient(self, params, x, y, *, start, steps) -> dict[str, np.ndarray]:
        """Σ_t ∇BPTT_θ(t) through the K steps from `start`, forward in time (module doc)."""
        return rtrl_gradient(self, params, x, y, start=start, steps=steps)
