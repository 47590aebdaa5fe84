"""Several seeds of one tied fully connected model trained as one network, with batched matrix
products over a leading seed axis (implements `epbench.core.protocols.SeedNetwork`).

What comes in: the model (tied, fully connected: EB or P setting, any activation, clamped or
not), dtype, device and the number of seeds S. Parameters are stacked per name to (S, *shape); a
batch is (S, B, inputs), each seed its own mini-batch; β is one value per seed. Every drive of
`network.step` (docs/theory.md §1, §3) becomes a batched product, layer n of seed i receiving

    h^n_i = u^n_i + [n<N] r^{n+1}_i W{n}_{n+1,i}ᵀ + [n>0] r^{n−1}_i W{n−1}_{n,i},
    u^n_i = [n∈input] r_x,i W{n}_x,iᵀ + b_n,i

(`torch.baddbmm`), so seed i computes what the tied family computes for it alone: the EP step
θ ← θ + lr (∂Φ/∂θ(s^β_K) − ∂Φ/∂θ(s_*)) / β (symmetric: ±|β| over 2|β|, docs/theory.md §2) and
the BPTT step θ ← θ − lr ∂L/∂θ through the last K steps (one backward pass of the seeds' summed
losses: the seeds share no parameter, so each seed's gradient is its own). The arithmetic per seed
is the sequential path's up to the order of additions (rounding).

Why it pays: at batch 20 a step of one seed is a few small products and element-wise ops, each
costing more in dispatch than in arithmetic; one batched op does the work of S. Holomorphic EP
(`points` ≥ 2) is not batched: its step runs seed by seed through the tied family (same result,
no gain).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from epbench.core.errors import BackendError
from epbench.core.params import param_shapes
from epbench.core.spec import ModelSpec
from epbench.core.validate import check_lrs, check_params, check_steps, check_truncation

from .adapter import TORCH_DTYPES, Family, synchronize
from .network import ACTIVATIONS, small_ops

States = tuple[torch.Tensor, ...]
Params = dict[str, torch.Tensor]
WHERE = "torch backend (seeds batched)"


def batches_seeds(model: ModelSpec) -> bool:
    """Tied fully connected Φ-networks only (not P-conv, not asymmetric, not the RNN baselines)."""
    phi = model.cell == "phi"
    return phi and model.conv is None and model.feedback_angle is None


def _rx(model: ModelSpec, x: torch.Tensor) -> torch.Tensor:
    """r_x: ρ(x) in EB, raw x in P (`network.input_of`)."""
    return ACTIVATIONS[model.activation][0](x) if model.setting == "EB" else x


def _r(model: ModelSpec, s: States) -> States:
    """What the neighbours see: ρ(s) in EB, s in P (`network.neighbours`)."""
    rho = ACTIVATIONS[model.activation][0]
    return tuple(rho(t) for t in s) if model.setting == "EB" else s


def _project(model: ModelSpec, p: Params, rx: torch.Tensor) -> list[torch.Tensor]:
    """u^n per seed: (S, B, sizes[n])."""
    out = []
    for n in range(len(model.sizes)):
        bias = p[f"b{n}"].unsqueeze(1)
        if n in model.input_layers:
            out.append(torch.baddbmm(bias, rx, p[f"W{n}_x"].transpose(1, 2)))
        else:
            out.append(bias.expand(-1, rx.shape[1], -1))
    return out


def _step(model: ModelSpec, p: Params, u, s: States, y=None, beta=None) -> States:
    """One step of every seed (`network.step` batched); `beta` (S, 1, 1) nudges the output."""
    rho, rho_prime = ACTIVATIONS[model.activation]
    r = _r(model, s)
    new = []
    for n in range(len(s)):
        h = u[n]
        if n < model.depth:
            h = torch.baddbmm(h, r[n + 1], p[f"W{n}_{n + 1}"].transpose(1, 2))
        if n > 0:
            h = torch.baddbmm(h, r[n - 1], p[f"W{n - 1}_{n}"])
        if model.setting == "EB":
            g = rho_prime(s[n], r[n]) * h
            if n == 0 and beta is not None:
                g = g + beta * (y - s[0])
            sn = torch.lerp(s[n], g, float(model.epsilon))
        else:
            sn = rho(h)
            if n == 0 and beta is not None:
                sn = sn + beta * (y - s[0])
        new.append(sn.clamp(0.0, 1.0) if model.clamp else sn)
    return tuple(new)


def _run(model: ModelSpec, p: Params, u, s: States, steps: int, y=None, beta=None) -> States:
    for _ in range(steps):
        s = _step(model, p, u, s, y, beta)
    return s


def _dphi(model: ModelSpec, s: States, rx: torch.Tensor) -> Params:
    """∂Φ/∂θ of every seed without ε (`network` module doc), summed over the batch."""
    r = _r(model, s)
    out = {}
    for n in range(len(model.sizes)):
        out[f"b{n}"] = r[n].sum(1)
        if n in model.input_layers:
            out[f"W{n}_x"] = torch.bmm(r[n].transpose(1, 2), rx)
        if n < model.depth:
            out[f"W{n}_{n + 1}"] = torch.bmm(r[n].transpose(1, 2), r[n + 1])
    return out


def _loss_errors(s0: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per seed: batch-mean ½‖s⁰ − y‖² and the number of misclassified examples."""
    loss = 0.5 * ((s0 - y) ** 2).sum((1, 2)) / y.shape[1]
    errors = (s0.argmax(2) != y.argmax(2)).sum(1)
    return loss, errors


class TorchSeedNetwork:
    """S seeds of one tied fully connected model (module doc)."""

    def __init__(self, model: ModelSpec, *, family: Family, dtype: str, device: str, seeds: int):
        if seeds < 2 or not batches_seeds(model):
            raise BackendError(f"{WHERE}: expected ≥ 2 seeds of a tied fully connected model")
        self.model, self.dtype, self.device, self.seeds = model, dtype, device, seeds
        self._family = family
        self._kind = {"dtype": TORCH_DTYPES[dtype], "device": torch.device(device)}
        self._shapes = param_shapes(model)

    def _tensor(self, a: Any) -> torch.Tensor:
        return torch.as_tensor(np.ascontiguousarray(a), **self._kind)  # (copies read-only views)

    def _batch(self, x, y) -> tuple[torch.Tensor, torch.Tensor]:
        shape = tuple(np.shape(x))
        if len(shape) != 3 or shape[0] != self.seeds or shape[2] != self.model.inputs:
            want = (self.seeds, "B", self.model.inputs)
            raise BackendError(f"{WHERE}: expected x of shape {want}, found shape {shape}")
        if tuple(np.shape(y)) != (*shape[:2], self.model.outputs):
            want = (*shape[:2], self.model.outputs)
            raise BackendError(f"{WHERE}: expected y of shape {want}, found {np.shape(y)}")
        return self._tensor(x), self._tensor(y)

    def _rows(self, x) -> torch.Tensor:
        """An empty tensor of S · B rows on this device: what `network.small_ops` measures."""
        return torch.empty((self.seeds * np.shape(x)[1], 0), device=self._kind["device"])

    def _zeros(self, batch: int) -> States:
        return tuple(torch.zeros(self.seeds, batch, w, **self._kind) for w in self.model.sizes)

    def load(self, params: Sequence[dict[str, np.ndarray]]) -> Params:
        """One canonical dict per seed → stacked tensors (S, *shape) (copies)."""
        if len(params) != self.seeds:
            found = len(params)
            raise BackendError(f"{WHERE}: expected {self.seeds} parameter sets, found {found}")
        for p in params:
            check_params(self.model, p, where=WHERE)
        return {k: self._tensor(np.stack([p[k] for p in params])) for k in self._shapes}

    def dump(self, params: Params) -> list[dict[str, np.ndarray]]:
        host = {k: params[k].detach().cpu().numpy() for k in self._shapes}
        return [{k: host[k][i].copy() for k in self._shapes} for i in range(self.seeds)]

    def ep_step(self, params, x, y, *, free_steps, steps, beta, lrs, symmetric=False, **more):
        """Every seed's EP step at once (module doc); `params` updated in place. Small steps
        run on one CPU thread (`network.small_ops`, with all S · B rows counted)."""
        with small_ops(self.model, self._rows(x)):
            return self._ep_step(params, x, y, free_steps, steps, beta, lrs, symmetric, more)

    @torch.no_grad()
    def _ep_step(self, params, x, y, free_steps, steps, beta, lrs, symmetric, more):
        for key, value in (("free_steps", free_steps), ("steps", steps)):
            check_steps(key, value, where=WHERE)
        if more.get("points"):
            return self._one_by_one(params, x, y, free_steps, steps, beta, lrs, symmetric, more)
        model, rates = self.model, check_lrs(self.model, lrs, where=WHERE)
        x, y = self._batch(x, y)
        b = self._tensor(np.asarray(beta, dtype=np.float64).reshape(self.seeds, 1, 1))
        rx = _rx(model, x)
        u = _project(model, params, rx)
        star = _run(model, params, u, self._zeros(x.shape[1]), free_steps)
        loss, errors = _loss_errors(star[0], y)
        if symmetric:
            hi = _run(model, params, u, star, steps, y, b.abs())
            lo = _run(model, params, u, star, steps, y, -b.abs())
            scale = 2 * b.abs()
        else:
            hi, lo, scale = _run(model, params, u, star, steps, y, b), star, b
        up, down = _dphi(model, hi, rx), _dphi(model, lo, rx)
        coef = 1.0 / (x.shape[1] * scale)  # batch mean and 1/β, per seed: (S, 1, 1)
        for name, value in params.items():
            delta = (up[name] - down[name]) * (coef if value.dim() == 3 else coef[:, 0])
            value.add_(delta, alpha=rates[name])
        return params, loss, errors

    def bptt_step(self, params, x, y, *, free_steps, steps, lrs):
        """Every seed's BPTT step at once (module doc); `params` updated in place."""
        with small_ops(self.model, self._rows(x)):
            return self._bptt_step(params, x, y, free_steps, steps, lrs)

    def _bptt_step(self, params, x, y, free_steps, steps, lrs):
        check_truncation(steps=steps, free_steps=free_steps, where=WHERE)
        model, rates = self.model, check_lrs(self.model, lrs, where=WHERE)
        x, y = self._batch(x, y)
        leaves = {k: v.detach().requires_grad_(True) for k, v in params.items()}
        rx = _rx(model, x)
        with torch.no_grad():
            s = _run(model, params, _project(model, params, rx), self._zeros(x.shape[1]),
                     free_steps - steps)  # fmt: skip
        with torch.enable_grad():
            s = _run(model, leaves, _project(model, leaves, rx), s, steps)
            losses = 0.5 * ((s[0] - y) ** 2).sum((1, 2)) / y.shape[1]
            names = list(leaves)
            grads = torch.autograd.grad(losses.sum(), [leaves[k] for k in names],
                                        allow_unused=True, materialize_grads=True)  # fmt: skip
        with torch.no_grad():
            for name, grad in zip(names, grads, strict=True):
                params[name].sub_(grad, alpha=rates[name])
            loss, errors = _loss_errors(s[0].detach(), y)
        return params, loss, errors

    def _one_by_one(self, params, x, y, free_steps, steps, beta, lrs, symmetric, more):
        """The tied family's EP step seed by seed (estimators this module does not batch)."""
        x, y = self._batch(x, y)
        betas = np.asarray(beta, dtype=np.float64).reshape(self.seeds)
        losses, errors = [], []
        for i in range(self.seeds):
            one = {k: v[i] for k, v in params.items()}  # views: updated in place
            _, loss, wrong = self._family.ep_step(
                self.model, one, x[i], y[i], lrs, float(betas[i]), free_steps=free_steps,
                steps=steps, symmetric=symmetric, **more,
            )  # fmt: skip
            losses.append(loss)
            errors.append(wrong)
        return params, torch.stack(losses), torch.stack(errors)

    @torch.no_grad()
    def _free(self, params, x, steps: int) -> tuple[States, States]:
        check_steps("steps", steps, where=WHERE)
        x = self._tensor(x).expand(self.seeds, -1, -1)
        u = _project(self.model, params, _rx(self.model, x))
        before = _run(self.model, params, u, self._zeros(x.shape[1]), steps - 1)
        return before, _step(self.model, params, u, before)

    def predict(self, params, x, *, steps: int) -> np.ndarray:
        """argmax of every seed's s⁰ after `steps` free steps from zero: (S, B)."""
        _, after = self._free(params, x, steps)
        return after[0].argmax(2).cpu().numpy()

    def residuals(self, params, x, *, steps: int) -> np.ndarray:
        """Every seed's ‖s_T − s_{T−1}‖ over the batch: (S,)."""
        before, after = self._free(params, x, steps)
        squares = sum(((a - b) ** 2).sum((1, 2)) for a, b in zip(after, before, strict=True))
        return squares.sqrt().cpu().numpy().astype(np.float64)

    def synchronize(self) -> None:
        synchronize(torch.device(self.device))
