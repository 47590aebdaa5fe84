"""Frozen, keyword-only dataclasses that describe what to run.

A task file (TOML, see `tasks.py`) resolves into one `TaskSpec` per cell. Backends only ever see a
`ModelSpec` (what network to build) and plain keyword settings (`steps=`, `beta=`) per call.
Conventions follow docs/theory.md §1–§3: layer 0 is the output layer, layer N the hidden layer next
to the input; `sizes` lists layer widths from the output towards the input.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

SETTINGS = ("EB", "P")
ACTIVATIONS = ("tanh", "sigm", "hardsigm")
ESTIMATORS = ("positive", "negative", "symmetric", "random-sign", "holomorphic")
NUDGES = ("output", "unsaturated")
DTYPES = ("float32", "float64")
DEVICES = ("cpu", "cuda")
DATA_SOURCES = ("toy", "mnist", "fashion-mnist")
TRAIN_ALGORITHMS = ("ep", "bptt")  # TrainSpec.algorithms: what `train` may train
FEEDBACK = ("ep", "frozen")  # TrainSpec.feedback: how independent feedback weights learn
CELLS = ("phi", "rnn", "lstm")  # ModelSpec.cell: a Φ-network or a standard RNN baseline


@dataclass(frozen=True, kw_only=True)
class ConvSpec:
    """The convolutional part of a P-setting model ("P-conv", docs/theory.md §3), listed from the
    input.

    input     (C, H, W) of the image; the model's `inputs` is C·H·W and x arrives flattened in
              (C, H, W) order, shape (B, C·H·W), like every other model's input.
    channels  channels of the conv layers from the input side: (32, 64) is x → 32 → 64. With N
              conv layers, `channels[0]` belongs to layer N (next to the input), `channels[-1]` to
              layer 1 (next to the fully connected output layer 0).
    kernel    square kernel size k of every convolution (stride 1).
    padding   zero padding of every convolution (the transposed feedback uses the same).
    pool      square max-pooling window and stride (the conv output must divide by it).

    Layer n ≥ 1 holds P(W ∗ s^{n+1} + b) after pooling, shape (C, H, W) with
    H = (H_below + 2·padding − kernel + 1) / pool; `layer_shapes()` lists them.
    """

    input: tuple[int, int, int]
    channels: tuple[int, ...]
    kernel: int = 5
    padding: int = 0
    pool: int = 2

    def layer_shapes(self) -> tuple[tuple[int, int, int], ...]:
        """Pooled (C, H, W) of every conv layer from the input side (layer N first).

        Assumes a geometry that fits (`epbench.config.tasks` validates task files); the P-conv of
        docs/theory.md §3 gives ((32, 12, 12), (64, 4, 4)).
        """
        _, h, w = self.input
        out = []
        for c in self.channels:
            h = (h + 2 * self.padding - self.kernel + 1) // self.pool
            w = (w + 2 * self.padding - self.kernel + 1) // self.pool
            out.append((c, h, w))
        return tuple(out)

    def sizes(self, outputs: int) -> tuple[int, ...]:
        """The `ModelSpec.sizes` of a conv model with `outputs` classes: the fully connected
        output first, then the flattened width C·H·W of layers 1 … N (N next to the input)."""
        return (outputs, *(c * h * w for c, h, w in reversed(self.layer_shapes())))


@dataclass(frozen=True, kw_only=True)
class ModelSpec:
    """A convergent RNN with static input (docs/theory.md §3): fully connected, or convolutional
    when `conv` is set.

    setting     "EB" (energy-based, exact gradient of the Hopfield energy, step `epsilon`) or
                "P" (prototypical, discrete time, `s ← σ(∂Φ/∂s)`, step 1).
    inputs      number of input features (784 for MNIST, 5 for the toy model).
    sizes       widths of layers s⁰ … sᴺ, output first; N = len(sizes) − 1 ≥ 1 hidden layers.
    input_to    the layers that receive the input through a weight `W{n}_x`; `()` means `(N,)`
                (a layered net). The toy model uses `(0, 1)`.
    activation  "tanh", "sigm" (σ(x) = 1/(1 + e^{−4(x−½)})) or "hardsigm" (clip(x, 0, 1)).
    epsilon     EB step size ε ("dt"); ignored (must stay 1.0) in the P setting.
    clamp       clamp states to [0, 1] after each step (EB training runs, docs/theory.md §3).
    output_derivative
                EB only. True (the default): the output moves along −∂E/∂s⁰ like every layer,
                s⁰ ← s⁰ + ε(−s⁰ + ρ'(s⁰) ⊙ h⁰). False: without the factor ρ'(s⁰), as the
                paper's own code computes it (docs/theory.md §3.2, where it is no longer a
                gradient of E). Must stay true in the P setting.
    conv        None for a fully connected model. A `ConvSpec` makes layers 1 … N pooled conv
                layers (P setting, the input feeding layer N only): s⁰ is the fully connected
                output, s¹ … sᴺ the pooled conv layers from the output side (sᴺ next to the
                input), and `sizes` their flattened widths, `conv.sizes(outputs)`; `depth` = N.
    feedback_angle
                None: tied feedback, layer n+1 receives `W{n}_{n+1}ᵀ` (docs/theory.md §3). A number
                α in
                degrees: asymmetric ("vector-field") dynamics, docs/theory.md §6.5 and §7: layer n+1
                receives independent feedback weights `B{n+1}_{n}`, initialised at the angle α
                to `W{n}_{n+1}ᵀ` (`epbench.core.params.init_params`). Fully connected models only.
    cell        "phi" (the default): the convergent RNN of docs/theory.md §3, `s ← F(x, s, θ)`
                with F = ∂Φ/∂s. "rnn" or "lstm": a standard recurrent network trained by BPTT
                only (docs/theory.md §6.4), no primitive Φ: `sizes[1:]` are the widths of
                stacked tanh-RNN or LSTM layers (layer N reads x at every step, layer n < N the
                new state of layer n+1) and s⁰ is a linear read-out of the new state of layer 1
                (canonical parameters in `epbench.core.params`). Setting "P", activation "tanh",
                fully connected, tied (no feedback angle), `input_to = []`.
    weight_scale
                a factor > 0 on every initial weight (not the biases) drawn by
                `epbench.core.params.init_params`: 1.0 is the canonical initialisation; larger
                values drive the free phase towards and past the loss of its fixed point
                (spectral radius ρ > 1, the `gradient-flow` measurement, docs/theory.md §6.4).
    """

    setting: str
    inputs: int
    sizes: tuple[int, ...]
    input_to: tuple[int, ...] = ()
    activation: str = "tanh"
    epsilon: float = 1.0
    clamp: bool = False
    output_derivative: bool = True
    conv: ConvSpec | None = None
    feedback_angle: float | None = None
    cell: str = "phi"
    weight_scale: float = 1.0

    @property
    def depth(self) -> int:
        """Number of hidden layers N."""
        return len(self.sizes) - 1

    @property
    def outputs(self) -> int:
        return self.sizes[0]

    @property
    def input_layers(self) -> tuple[int, ...]:
        """Layers fed by the input (`input_to`, or the last layer when empty)."""
        return self.input_to or (self.depth,)


@dataclass(frozen=True, kw_only=True)
class DynamicsSpec:
    """The two phases (docs/theory.md §1): `T` free steps from zero, `K` nudged steps with `beta`.

    estimator   "positive" (+β), "negative" (−β), "symmetric" (±β, half the difference, O(β²) bias)
                or "random-sign" (the sign of β drawn per batch from the seed), or "holomorphic"
                (`points` complex nudges |β| e^{2πik/N}, O(|β|^N) bias, docs/theory.md §2.5).
    points      N ≥ 2, the holomorphic estimator's number of nudges on the circle (N = 2 is the
                symmetric estimator); other estimators ignore it.
    betas       the |β| grid of the `beta-sweep` measurement (epbench.measurements.beta_sweep);
    empty: its default
                log grid `sweep.DEFAULT_BETAS`. Other measurements use `beta` only.
    nudge       "output" (docs/theory.md §1: β (y − s⁰) on every output unit) or, for `gdu` cells of
                models whose output saturates (hardsigm or clamp), "unsaturated": the EP phase
                gets the target s⁰_* instead of y on the output units at a bound (exactly 0 or 1)
                at the fixed point, so that only units through which BPTT's gradient flows
                (σ' ≠ 0) are nudged (a deviation from the paper, epbench.run.matrix.gdu_once).
    sweep_T     the free-phase lengths T (each ≥ 1) of the `convergence` measurement
                (epbench.measurements.convergence); empty: its default log grid from a few steps
                to 4·T. Other measurements use `T` only.
    """

    T: int
    K: int
    beta: float
    estimator: str = "positive"
    points: int = 4
    betas: tuple[float, ...] = ()
    nudge: str = "output"
    sweep_T: tuple[int, ...] = ()


@dataclass(frozen=True, kw_only=True)
class DataSpec:
    """Where the batches come from.

    source   "toy" (inputs U[0,1) and random one-hot targets drawn from the seed), "mnist" or
             "fashion-mnist" (IDX files, pixels scaled to [0, 1], one-hot targets).
    batch    mini-batch size of GDU cells and training.
    index    which mini-batch of the (unshuffled) training split a GDU cell uses (0 = the first).
    subset   train on the first `subset` training images only (0 = all).
    """

    source: str = "toy"
    batch: int = 1
    index: int = 0
    subset: int = 0


@dataclass(frozen=True, kw_only=True)
class TrainSpec:
    """Plain SGD settings (docs/theory.md §5). `lrs` are listed from the output layer towards the
    input: `lrs[n]` applies to every parameter of layer n (`W{n}_{n+1}`, `W{n}_x`, `b{n}`, and the
    feedback weights `B{n}_{n-1}` of an asymmetric model).

    feedback   asymmetric models only: "ep" (the feedback weights learn, by their own EP update in
               EP and by their gradient in BPTT) or "frozen" (they keep their initial values in
               both algorithms).
    algorithms which of TRAIN_ALGORITHMS `train` trains, in this order. BPTT does not
               depend on the estimator or β, so an estimator comparison trains BPTT once
               (`algorithms = ["ep"]` for the other estimators' cells) and the tables pair each
               EP run with the BPTT run of the same model and seed."""

    epochs: int = 1
    lrs: tuple[float, ...] = ()
    test_batch: int = 1000
    feedback: str = "ep"
    algorithms: tuple[str, ...] = TRAIN_ALGORITHMS


@dataclass(frozen=True, kw_only=True)
class TaskSpec:
    """One resolved cell of a task: a task file, one variant, one preset, with overrides applied.

    `config` is the resolved plain-data form (what gets hashed into the record); `cell` is the name
    shown to users, e.g. ``mnist-fc[model=P-1h]``.
    """

    name: str
    cell: str
    description: str
    preset: str
    variant: tuple[tuple[str, str], ...]
    measure: tuple[str, ...]
    model: ModelSpec
    dynamics: DynamicsSpec
    data: DataSpec
    train: TrainSpec
    dtype: str = "float64"
    source: str = ""
    config: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)
