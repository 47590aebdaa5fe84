"""The paper's reference implementation of P-conv training, re-created as a same-run speed baseline.

The P-conv speed targets are stated against the paper's public PyTorch implementation
(docs/theory.md §3.4), which trains at about 35 (EP) and 44 (BPTT) samples/s on a 2-core CPU. This
machine's timings drift by tens of percent between runs, so `epbench run speed` times this
re-creation beside the P-conv `TorchNetwork`, interleaved, and reports the ratio
(epbench.measurements.speed, `reference`).

It computes the same model (docs/theory.md §3.4) the way that implementation does, not as
`conv.py` does:
  - the Euler form s ← s + (−s + σ(…)) with step 1 (rounding aside, σ(…));
  - the input convolution and its pooling recomputed at every step, its bias added before pooling,
    as are all biases;
  - default (NCHW) memory, a fresh tensor per operation;
  - BPTT: T − K steps without a graph, K with one, `loss.backward()` into the parameters' `.grad`;
  - EP: ∂Φ/∂θ at both states written out (dense products, `conv2d` over batch-transposed maps for
    the kernels), the pooling indices at each state from one more step (2 of T + K + 2 steps).
Native types: parameters as a dict of canonical names to tensors (docs/theory.md §3 shapes), as
`TorchNetwork.load` makes them; `ep_step` and `bptt_step` return (params, loss, errors).
It is a baseline for timing only: the P-conv family (`conv.py`) is the implementation the suite
checks.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from epbench.core.errors import BackendError
from epbench.core.params import param_shapes
from epbench.core.spec import ModelSpec

from .adapter import WHERE, like, synchronize, tensors

Params = dict[str, torch.Tensor]


def reference_unsupported(model: ModelSpec) -> str | None:
    """None for the paper's P-conv (P setting, two conv layers, hardsigm, no feedback angle);
    otherwise why the re-creation does not apply."""
    if model.conv is None or model.setting != "P" or len(model.conv.channels) != 2:
        return "the reference re-creation covers the paper's P-conv (two conv layers) only"
    if model.activation != "hardsigm" or model.clamp or model.feedback_angle is not None:
        return "the reference re-creation covers hardsigm without clamp or feedback angle only"
    return None


def _rho(x: torch.Tensor) -> torch.Tensor:
    return x.clamp(min=0).clamp(max=1)  # the reference's hardsigm


class ReferenceConvNetwork:
    """The paper's P-conv (two conv layers, hardsigm, no padding) computed the reference's way."""

    def __init__(self, model: ModelSpec, *, dtype: str, device: str) -> None:
        reason = reference_unsupported(model)
        if reason is not None:
            raise BackendError(f"{WHERE}: {reason}")
        conv = model.conv
        assert conv is not None
        self.model, self.dtype, self.device = model, dtype, device
        self._like = like(dtype, device)
        self._pad, self._pool = conv.padding, conv.pool
        self._input = conv.input
        self._shapes = param_shapes(model)
        (c1, h1, w1), (c2, h2, w2) = conv.layer_shapes()[::-1]  # s¹, s²
        self._s_shapes = [(model.sizes[0],), (c1, h1, w1), (c2, h2, w2)]

    def load(self, params: dict[str, np.ndarray]) -> Params:
        """Canonical numpy parameters → tensors of this dtype and device (copies)."""
        return tensors(params, self._shapes, self._like)

    def synchronize(self) -> None:
        """Wait for queued device work (CUDA); a no-op on the CPU."""
        synchronize(self._like["device"])

    def _stepper(self, p: Params, x: torch.Tensor, s: list, y=None, beta: float = 0.0):
        """One Euler step with step 1; returns (new states, [indices of s¹'s, of s²'s pooling])."""
        batch = x.shape[0]
        d0 = -s[0] + _rho(F.linear(s[1].view(batch, -1), p["W0_1"], p["b0"]))
        if beta != 0.0:
            d0 = d0 + beta * (y - s[0])
        pooled1, i1 = F.max_pool2d(
            F.conv2d(s[2], p["W1_2"], p["b1"], padding=self._pad), self._pool, return_indices=True
        )
        d1 = -s[1] + _rho(pooled1 + torch.mm(s[0], p["W0_1"]).view(s[1].size()))
        pooled2, i2 = F.max_pool2d(
            F.conv2d(x, p["W2_x"], p["b2"], padding=self._pad), self._pool, return_indices=True
        )
        size = (pooled1.shape[2] * self._pool, pooled1.shape[3] * self._pool)
        unpooled = F.max_unpool2d(s[1], i1, self._pool, output_size=size)
        d2 = -s[2] + _rho(pooled2 + F.conv_transpose2d(unpooled, p["W1_2"], padding=self._pad))
        return [s[0] + d0, s[1] + d1, s[2] + d2], [i1, i2]

    def _forward(self, p: Params, x, s: list, steps: int, y=None, beta: float = 0.0):
        inds = None
        for _ in range(steps):
            s, inds = self._stepper(p, x, s, y, beta)
        return s, inds

    def _inputs(self, x: Any, y: Any) -> tuple[torch.Tensor, torch.Tensor, list]:
        x = torch.as_tensor(x, **self._like)
        x = x.view(x.shape[0], *self._input)
        zeros = [torch.zeros(x.shape[0], *shape, **self._like) for shape in self._s_shapes]
        return x, torch.as_tensor(y, **self._like), zeros

    def _dphi(self, p: Params, x, s: list, inds: list) -> Params:
        """∂Φ/∂θ at s, summed over the batch, with the given pooling indices."""
        size1 = (s[1].shape[2] * self._pool, s[1].shape[3] * self._pool)
        size2 = (s[2].shape[2] * self._pool, s[2].shape[3] * self._pool)
        up1 = F.max_unpool2d(s[1], inds[0], self._pool, output_size=size1)
        up2 = F.max_unpool2d(s[2], inds[1], self._pool, output_size=size2)
        kernel = F.conv2d(s[2].permute(1, 0, 2, 3), up1.permute(1, 0, 2, 3), padding=self._pad)
        kernel_x = F.conv2d(x.permute(1, 0, 2, 3), up2.permute(1, 0, 2, 3), padding=self._pad)
        return {
            "W0_1": s[0].t() @ s[1].view(s[1].shape[0], -1),
            "b0": s[0].sum(0),
            "W1_2": kernel.permute(1, 0, 2, 3),
            "b1": up1.sum((0, 2, 3)),
            "W2_x": kernel_x.permute(1, 0, 2, 3),
            "b2": up2.sum((0, 2, 3)),
        }

    def ep_step(
        self, params: Params, x, y, *, free_steps, steps, beta, lrs, symmetric=False
    ) -> tuple[Params, torch.Tensor, torch.Tensor]:
        if symmetric:
            raise BackendError(f"{WHERE}: the reference baseline nudges one-sidedly only")
        with torch.no_grad():
            x, y, s = self._inputs(x, y)
            free, _ = self._forward(params, x, s, free_steps)
            _, i_free = self._stepper(params, x, free)  # the indices at s_*
            nudged, _ = self._forward(params, x, [t.clone() for t in free], steps, y, beta)
            _, i_nudged = self._stepper(params, x, nudged)
            a, b = self._dphi(params, x, nudged, i_nudged), self._dphi(params, x, free, i_free)
            scale = 1.0 / (beta * x.shape[0])
            for name in params:
                params[name] += float(lrs[name]) * scale * (a[name] - b[name])
            loss = 0.5 * ((free[0] - y) ** 2).sum(1).mean()
            errors = (free[0].argmax(1) != y.argmax(1)).sum()
        return params, loss, errors

    def bptt_step(
        self, params: Params, x, y, *, free_steps, steps, lrs
    ) -> tuple[Params, torch.Tensor, torch.Tensor]:
        x, y, s = self._inputs(x, y)
        with torch.no_grad():
            s, _ = self._forward(params, x, s, free_steps - steps)
        for value in params.values():
            value.requires_grad_(True)
            value.grad = None
        s = [t.requires_grad_(True) for t in s]
        s, _ = self._forward(params, x, s, steps)
        loss = 0.5 * ((s[0] - y) ** 2).sum(1).mean()
        loss.backward()
        with torch.no_grad():
            for name, value in params.items():
                if value.grad is not None:  # None: K too short for θ to reach s⁰_T
                    value -= float(lrs[name]) * value.grad
                value.requires_grad_(False)
            errors = (s[0].argmax(1) != y.argmax(1)).sum()
        return params, loss.detach(), errors
