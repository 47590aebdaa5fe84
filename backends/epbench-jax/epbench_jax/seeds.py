"""Several seeds of one cell trained as one network: the family's pure training steps under
`jax.vmap` over a leading seed axis (implements `epbench.core.protocols.SeedNetwork`).

What comes in: a fully connected model's `compiled.Family` (tied or asymmetric), the dtype, the
device and the number of seeds S. Parameters are stacked per name to (S, *shape); a training
batch is (S, B, inputs) — each seed its own mini-batch of its own shuffle — with one β per seed
(the random-sign estimator draws each seed's sign apart). Seed i of `ep_step` / `bptt_step` is the
family's `ep_step` / `bptt_step` of seed i alone (docs/theory.md §2, §5): vmap changes how the
work is laid out (batched matrix products, one loop over the steps for every seed), not the
arithmetic of a seed, so the records equal a sequential run's up to rounding.

Why it pays: a fully connected step at batch 20 is a few small matrix products and element-wise
ops; their fixed cost per op (dispatch, loop overhead) dominates on a CPU and leaves a GPU idle.
One batched op for S seeds spends that cost once. P-conv is not batched: its per-seed work already
fills the device, and S copies of its activations would only cost memory.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from epbench.core.errors import BackendError
from epbench.core.params import param_shapes
from epbench.core.spec import ModelSpec
from epbench.core.validate import check_lrs, check_params, check_steps, check_truncation

from .compiled import CPU_OPTIONS, Family

WHERE = "jax backend (seeds batched)"


def batches_seeds(model: ModelSpec) -> bool:
    """Whether seeds of `model` are batched: fully connected Φ-networks (not P-conv, module doc;
    not the standard RNN baselines, whose family has no EP step)."""
    return model.conv is None and model.cell == "phi"


def _ep_seeds(ep_step: Callable, model: ModelSpec, params, x, y, lrs, beta, **static):
    """The family's `ep_step` of every seed: params, x, y and β mapped over axis 0."""

    def one(p, xs, ys, b):
        return ep_step(model, p, xs, ys, lrs, b, **static)

    return jax.vmap(one)(params, x, y, beta)


def _bptt_seeds(bptt_step: Callable, model: ModelSpec, params, x, y, lrs, **static):
    """The family's `bptt_step` of every seed: params, x and y mapped over axis 0."""

    def one(p, xs, ys):
        return bptt_step(model, p, xs, ys, lrs, **static)

    return jax.vmap(one)(params, x, y)


def _free_seeds(free_phase: Callable, model: ModelSpec, params, x, start, steps):
    """The family's free phase of every seed on the same batch: (final states, residuals)."""
    return jax.vmap(lambda p: free_phase(model, p, x, start, steps))(params)


class JaxSeedNetwork:
    """S seeds of one fully connected model, compiled once (module doc)."""

    def __init__(
        self, model: ModelSpec, *, family: Family, dtype: str, device: str, jax_device, seeds: int
    ) -> None:
        if seeds < 2 or not batches_seeds(model):
            raise BackendError(f"{WHERE}: expected ≥ 2 seeds of a fully connected model")
        self.model, self.dtype, self.device, self.seeds = model, dtype, device, seeds
        self.family, self._device = family, jax_device
        self._shapes = param_shapes(model)
        cpu = jax_device is not None and jax_device.platform == "cpu"
        self._jit = partial(jax.jit, compiler_options=dict(CPU_OPTIONS) if cpu else None)
        self._free = self._jit(partial(_free_seeds, family.free_phase, model))
        self._bptt = self._jit(
            partial(_bptt_seeds, family.bptt_step, model), static_argnames=("free_steps", "steps")
        )
        self._ep: dict[tuple[str, ...], Callable] = {}  # one jit per set of estimator keywords
        self._pending: object = None
        self._rates: tuple[dict, dict] | None = None

    @contextlib.contextmanager
    def _scope(self) -> Iterator[None]:
        """x64 on for float64 networks only, and only inside the call; full-precision matmuls."""
        with jax.enable_x64(self.dtype == "float64"), jax.default_matmul_precision("highest"):
            yield

    def _put(self, a) -> jax.Array:
        return jax.device_put(np.asarray(a, dtype=self.dtype), self._device)

    def _rates_of(self, lrs: dict[str, float]) -> dict[str, jax.Array]:
        rates = check_lrs(self.model, lrs, where=WHERE)
        if self._rates is None or self._rates[0] != rates:
            self._rates = rates, {k: self._put(np.asarray(v)) for k, v in rates.items()}
        return self._rates[1]

    def _check_batch(self, x, y) -> None:
        want = (self.seeds, None, self.model.inputs)
        shape = tuple(np.shape(x))
        if len(shape) != 3 or shape[0] != self.seeds or shape[2] != self.model.inputs:
            raise BackendError(f"{WHERE}: expected x of shape {want}, found shape {shape}")
        if tuple(np.shape(y)) != (*shape[:2], self.model.outputs):
            found = tuple(np.shape(y))
            raise BackendError(
                f"{WHERE}: expected y of shape {(*shape[:2], self.model.outputs)}, found {found}"
            )

    def load(self, params: Sequence[dict[str, np.ndarray]]) -> dict[str, jax.Array]:
        """One canonical dict per seed → stacked jax arrays (S, *shape) on this device."""
        if len(params) != self.seeds:
            found = len(params)
            raise BackendError(f"{WHERE}: expected {self.seeds} parameter sets, found {found}")
        for p in params:
            check_params(self.model, p, where=WHERE)
        with self._scope():
            stacked = {k: self._put(np.stack([p[k] for p in params])) for k in self._shapes}
            self._pending = stacked
            return stacked

    def dump(self, params: dict[str, jax.Array]) -> list[dict[str, np.ndarray]]:
        """Stacked jax arrays → one canonical numpy dict per seed (copies)."""
        host = {k: np.array(params[k]) for k in self._shapes}
        return [{k: host[k][i].copy() for k in self._shapes} for i in range(self.seeds)]

    def ep_step(self, params, x, y, *, free_steps, steps, beta, lrs, **estimator: Any):
        """Every seed's `ep_step` at once (module doc); asynchronous."""
        self._check_batch(x, y)
        for key, value in (("free_steps", free_steps), ("steps", steps)):
            check_steps(key, value, where=WHERE)
        keys = tuple(sorted(estimator))
        if keys not in self._ep:
            static = ("free_steps", "steps", *keys)
            self._ep[keys] = self._jit(
                partial(_ep_seeds, self.family.ep_step, self.model), static_argnames=static
            )
        with self._scope():
            betas = np.asarray(beta, dtype=self.dtype).reshape(self.seeds)
            x, y = np.asarray(x, self.dtype), np.asarray(y, self.dtype)
            step = self._ep[keys]
            self._pending = step(
                params,
                x,
                y,
                self._rates_of(lrs),
                betas,
                free_steps=free_steps,
                steps=steps,
                **estimator,
            )
            return self._pending

    def bptt_step(self, params, x, y, *, free_steps, steps, lrs):
        """Every seed's `bptt_step` at once (module doc); asynchronous."""
        self._check_batch(x, y)
        check_truncation(steps=steps, free_steps=free_steps, where=WHERE)
        with self._scope():
            x, y = np.asarray(x, self.dtype), np.asarray(y, self.dtype)
            self._pending = self._bptt(
                params, x, y, self._rates_of(lrs), free_steps=free_steps, steps=steps
            )
            return self._pending

    def _free_phase(self, params, x, steps: int):
        check_steps("steps", steps, where=WHERE)
        with self._scope():
            x = self._put(x)
            start = tuple(jnp.zeros((x.shape[0], w), x.dtype) for w in self.model.sizes)
            start = self.family.to_native(start)
            return self._free(params, x, start, jnp.asarray(steps, jnp.int32))

    def predict(self, params, x, *, steps: int) -> np.ndarray:
        """argmax of every seed's s⁰ after `steps` free steps from zero: shape (S, B)."""
        states, _ = self._free_phase(params, x, steps)
        with self._scope():
            canonical = self.family.to_canonical(tuple(states))
            return np.asarray(canonical[0]).argmax(axis=-1)

    def residuals(self, params, x, *, steps: int) -> np.ndarray:
        """Every seed's ‖s_T − s_{T−1}‖ over the batch x: shape (S,)."""
        _, residual = self._free_phase(params, x, steps)
        return np.asarray(residual, dtype=np.float64)

    def synchronize(self) -> None:
        jax.block_until_ready(self._pending)
