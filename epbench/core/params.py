"""Canonical parameter and state names, shapes, and seeded initialisation (numpy only).

Names shared by every backend (docs/theory.md §3):

    W{n}_{n+1}   weight between layer n and layer n+1, shape (sizes[n], sizes[n+1]);
                 layer n receives `W{n}_{n+1} ρ(s^{n+1})`, layer n+1 receives `W{n}_{n+1}ᵀ ρ(s^n)`.
    W{n}_x       input weight of layer n, shape (sizes[n], inputs).
    b{n}         bias of layer n, shape (sizes[n],).
    s{n}         state of layer n, shape (batch, sizes[n]); traces drop the batch axis.

Initialisation follows the reference code (PyTorch `Linear` defaults): every weight and bias
U(−1/√fan_in, +1/√fan_in), where fan_in is the width of the weight's input side; each layer owns the
bias of its input-side weight (`W{n}_{n+1}`, or `W{N}_x` for the last layer).

Convolutional models (`model.conv`, docs/theory.md §3 "P-conv"), N conv layers, k×k kernels, C_n
channels in layer n (C_{N+1} = the image's channels):

    W0_1         fully connected weight, shape (sizes[0], C₁·H₁·W₁); layer 1 is flattened in
                 (C, H, W) order.
    W{n}_{n+1}   conv kernel from layer n+1 up to layer n (1 ≤ n < N), shape (C_n, C_{n+1}, k, k).
    W{N}_x       input conv kernel, shape (C_N, C_image, k, k).
    b0, b{n}     biases, shapes (sizes[0],) and (C_n,) (one per channel).
    s0, s{n}     states, shapes (batch, sizes[0]) and (batch, C_n, H_n, W_n) (pooled).

Kernels are initialised like PyTorch `Conv2d`: fan_in = C_{n+1}·k·k, for the kernel and its bias.

Asymmetric models (`model.feedback_angle` = α in degrees, docs/theory.md §6.5, §7) add independent
feedback weights, which replace `W{n}_{n+1}ᵀ` in the drive of layer n+1:

    B{n+1}_{n}   feedback weight from layer n to layer n+1, shape (sizes[n+1], sizes[n]);
                 layer n+1 receives `B{n+1}_{n} ρ(s^n)`. It belongs to layer n+1 (its row side).

They are drawn after the tied parameters from the same generator, so W, b keep the values of the
tied model with the same seed: `B = cos α · Wᵀ + sin α · R`, R Gaussian made orthogonal to Wᵀ in
the Frobenius inner product and rescaled to ‖Wᵀ‖; so ‖B‖ = ‖W‖, the angle between B and Wᵀ is α,
and α = 0 gives B = Wᵀ exactly.

Standard RNN baselines (`model.cell` = "rnn" or "lstm", docs/theory.md §6.4), hidden layers
1 … N stacked (N reads x), G = 1 gate block for "rnn", G = 4 for "lstm" (torch's gate order i, f,
g, o, one bias per layer where torch has two):

    W{n}_{n}     recurrent weight of layer n, shape (G·sizes[n], sizes[n]).
    W{N}_x       input weight of layer N, shape (G·sizes[N], inputs).
    W{n}_{n+1}   weight from the new state of layer n+1 into layer n < N, (G·sizes[n], sizes[n+1]).
    b{n}         bias of layer n, shape (G·sizes[n],).
    W0_1, b0     linear read-out s⁰ = W0_1 h¹ + b0, shapes (sizes[0], sizes[1]) and (sizes[0],).
    s0, s{n}     states: the read-out (batch, sizes[0]); layer n's h, (batch, sizes[n]), or for an
                 LSTM [h, c] concatenated, (batch, 2·sizes[n]).

They are drawn like torch's `RNN`/`LSTM` and `Linear`: U(±1/√sizes[n]) for every parameter of
layer n ≥ 1, U(±1/√sizes[1]) for the read-out.
"""

from __future__ import annotations

import math
import re
from dataclasses import replace

import numpy as np

from epbench.core.errors import TaskError
from epbench.core.spec import ModelSpec

Params = dict[str, np.ndarray]

_NAME = re.compile(r"^(?:W(\d+)_(\d+|x)|B(\d+)_(\d+)|b(\d+)|s(\d+))$")


def param_shapes(model: ModelSpec) -> dict[str, tuple[int, ...]]:
    """Canonical parameter names → shapes, ordered by layer (weights before the bias)."""
    if model.conv is not None:
        return _conv_param_shapes(model)
    if model.cell != "phi":
        return _rnn_param_shapes(model)
    shapes: dict[str, tuple[int, ...]] = {}
    asymmetric = model.feedback_angle is not None
    for n, width in enumerate(model.sizes):
        if n < model.depth:
            shapes[f"W{n}_{n + 1}"] = (width, model.sizes[n + 1])
        if asymmetric and n > 0:
            shapes[f"B{n}_{n - 1}"] = (width, model.sizes[n - 1])
        if n in model.input_layers:
            shapes[f"W{n}_x"] = (width, model.inputs)
        shapes[f"b{n}"] = (width,)
    return shapes


def _conv_param_shapes(model: ModelSpec) -> dict[str, tuple[int, ...]]:
    """Shapes of a conv model (module doc): W0_1, b0, then per conv layer its kernel and bias."""
    conv = model.conv
    assert conv is not None
    depth, k = len(conv.channels), conv.kernel
    layers = conv.layer_shapes()[::-1]  # layer 1 … N
    shapes: dict[str, tuple[int, ...]] = {
        "W0_1": (model.sizes[0], int(np.prod(layers[0]))),
        "b0": (model.sizes[0],),
    }
    for n in range(1, depth + 1):
        below = layers[n][0] if n < depth else conv.input[0]
        shapes[f"W{n}_{n + 1}" if n < depth else f"W{n}_x"] = (layers[n - 1][0], below, k, k)
        shapes[f"b{n}"] = (layers[n - 1][0],)
    return shapes


GATES = {"rnn": 1, "lstm": 4}  # gate blocks of a standard RNN layer (module doc)


def _rnn_param_shapes(model: ModelSpec) -> dict[str, tuple[int, ...]]:
    """Shapes of a standard RNN baseline (module doc): the read-out, then layer 1 … N."""
    g, sizes = GATES[model.cell], model.sizes
    shapes: dict[str, tuple[int, ...]] = {"W0_1": (sizes[0], sizes[1]), "b0": (sizes[0],)}
    for n in range(1, model.depth + 1):
        below = f"W{n}_x" if n == model.depth else f"W{n}_{n + 1}"
        width = model.inputs if n == model.depth else sizes[n + 1]
        shapes[f"W{n}_{n}"] = (g * sizes[n], sizes[n])
        shapes[below] = (g * sizes[n], width)
        shapes[f"b{n}"] = (g * sizes[n],)
    return shapes


def state_shapes(model: ModelSpec, batch: int) -> dict[str, tuple[int, ...]]:
    """Canonical state names → shapes `(batch, sizes[n])`, output layer first; conv layers of a
    conv model `(batch, C_n, H_n, W_n)`."""
    if model.conv is not None:
        layers = model.conv.layer_shapes()[::-1]
        return {"s0": (batch, model.sizes[0])} | {
            f"s{n}": (batch, *shape) for n, shape in enumerate(layers, start=1)
        }
    if model.cell == "lstm":
        return {f"s{n}": (batch, width * (2 if n else 1)) for n, width in enumerate(model.sizes)}
    return {f"s{n}": (batch, width) for n, width in enumerate(model.sizes)}


def layer_of(name: str) -> int:
    """The layer a canonical parameter or state name belongs to (its row side)."""
    match = _NAME.match(name)
    if match is None:
        raise TaskError("parameter", "name", "W{n}_{n+1}, W{n}_x, B{n+1}_{n}, b{n} or s{n}", name)
    return int(next(group for group in match.groups() if group is not None and group != "x"))


def bias_fan_in(model: ModelSpec, n: int) -> int:
    """Fan-in of layer n's input-side weight, which owns the bias b{n}."""
    if model.conv is not None and n > 0:
        shapes = param_shapes(model)
        return int(np.prod(shapes.get(f"W{n}_{n + 1}", shapes.get(f"W{n}_x", ()))[1:]))
    return model.sizes[n + 1] if n < model.depth else model.inputs


def init_params(model: ModelSpec, *, seed: int, dtype: str = "float64") -> Params:
    """Draw canonical initial parameters from `seed`: U(±1/√fan_in), drawn in `param_shapes` order
    (fan_in of a weight: the product of its shape after the first axis, C·k·k for a kernel).

    `model.weight_scale` ≠ 1 multiplies every weight (W…, B…) afterwards, not the biases.
    The same seed gives the same parameters for EP and BPTT and for every backend. An asymmetric
    model's feedback weights are drawn afterwards (`feedback_weights`, module doc), so its other
    parameters equal those of the tied model.
    """
    rng = np.random.default_rng(seed)
    tied = replace(model, feedback_angle=None)
    params: Params = {}
    for name, shape in param_shapes(tied).items():
        if model.cell != "phi":  # torch's RNN / LSTM / Linear defaults (module doc)
            fan_in = model.sizes[max(layer_of(name), 1)]
        elif name.startswith("b"):
            fan_in = bias_fan_in(model, layer_of(name))
        else:
            fan_in = int(np.prod(shape[1:]))
        bound = 1.0 / np.sqrt(fan_in)
        params[name] = rng.uniform(-bound, bound, size=shape).astype(dtype)
    if model.feedback_angle is not None:
        drawn = feedback_weights(model, params, rng=rng)
        params = {name: (params | drawn)[name].astype(dtype) for name in param_shapes(model)}
    if model.weight_scale == 1.0:
        return params
    return {  # `model.weight_scale` on every weight, not the biases
        name: (value * model.weight_scale if name[0] in "WB" else value).astype(dtype)
        for name, value in params.items()
    }


def feedback_partner(name: str) -> str:
    """The forward weight whose transpose a feedback weight replaces: B{n+1}_{n} → W{n}_{n+1}."""
    match = _NAME.match(name)
    if match is None or match.group(3) is None:
        raise TaskError("parameter", "name", "a feedback weight B{n+1}_{n}", name)
    return f"W{match.group(4)}_{match.group(3)}"


def feedback_names(model: ModelSpec) -> list[str]:
    """The feedback weights `B{n+1}_{n}` of an asymmetric model (empty for a tied model)."""
    return [name for name in param_shapes(model) if name.startswith("B")]


def feedback_weights(
    model: ModelSpec, params: Params, *, rng: np.random.Generator
) -> dict[str, np.ndarray]:
    """`B = cos α · Wᵀ + sin α · R` for each feedback weight (module doc), in float64.

    In: the model (α = `model.feedback_angle` in degrees), its forward weights `W{n}_{n+1}` in
    `params`, and the generator to draw R from (one standard normal array per B, in order).
    """
    alpha = math.radians(float(model.feedback_angle or 0.0))
    out = {}
    for name in feedback_names(model):
        forward = np.asarray(params[feedback_partner(name)], dtype=np.float64).T
        draw = rng.standard_normal(forward.shape)
        draw -= np.vdot(draw, forward) / np.vdot(forward, forward) * forward
        draw *= np.linalg.norm(forward) / np.linalg.norm(draw)
        out[name] = math.cos(alpha) * forward + math.sin(alpha) * draw
    return out


def feedback_angles_deg(params: dict[str, np.ndarray]) -> dict[str, float]:
    """The angle in degrees between each feedback weight `B{n+1}_{n}` in `params` and the
    transpose of its forward partner `W{n}_{n+1}` (Frobenius inner product); {} for a tied model.
    """
    out = {}
    for name in sorted(k for k in params if k.startswith("B")):
        b = np.asarray(params[name], dtype=np.float64)
        w = np.asarray(params[feedback_partner(name)], dtype=np.float64).T
        cos = np.vdot(b, w) / (np.linalg.norm(b) * np.linalg.norm(w))
        out[name] = math.degrees(math.acos(min(1.0, max(-1.0, float(cos)))))
    return out


def learning_rates(
    model: ModelSpec, lrs: tuple[float, ...], *, feedback: str = "ep"
) -> dict[str, float]:
    """Map per-layer learning rates (output first, docs/theory.md §5) to canonical parameter names.

    A feedback weight `B{n+1}_{n}` gets the rate of its layer n+1, or 0 with `feedback="frozen"`
    (`TrainSpec.feedback`): the training steps then leave it at its initial value."""
    if len(lrs) != len(model.sizes):
        raise TaskError(
            "task",
            "train.lrs",
            f"{len(model.sizes)} learning rates (one per layer, output first)",
            list(lrs),
        )
    frozen = feedback == "frozen"
    return {
        name: 0.0 if frozen and name.startswith("B") else float(lrs[layer_of(name)])
        for name in param_shapes(model)
    }
