"""Write the golden float64 traces of the conformance suite (epbench/plugins/golden/*.npz).

Usage:  python scripts/make_golden.py [--out FOLDER] [--case NAME ...]

What comes in: the case list `CASES` below (small models, few steps, batch 3, inputs in
[-0.5, 1.5) so that ρ(x) ≠ x in the EB setting) and the installed torch backend.
What goes out: one compressed `.npz` per case in FOLDER (default: the shipped package folder),
laid out as `epbench.plugins.golden` describes; the spec travels inside each file, so the checker
rebuilds the case from the file alone. tests/test_conformance.py regenerates them into a temporary
folder and compares, so the generator and the shipped files cannot drift apart.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from epbench.core.params import init_params, learning_rates
from epbench.core.protocols import Backend
from epbench.core.spec import ConvSpec, ModelSpec
from epbench.plugins import golden
from epbench.plugins.golden import GoldenCase, GoldenSpec

BETA = 0.2
LAYER_LR = (0.05, 0.1, 0.15)  # per layer, output first (epbench.core.params.learning_rates)
SIZES = {1: (4, 9), 2: (4, 6, 5)}  # hidden layers → widths, output first (7 inputs)


def _spec(name: str, model: ModelSpec, *, T: int, K: int) -> GoldenSpec:
    """A case with the shared β and per-layer learning rates."""
    lrs = learning_rates(model, LAYER_LR[: len(model.sizes)])
    return GoldenSpec(name=name, model=model, T=T, K=K, beta=BETA, lrs=lrs)


def _layered() -> list[GoldenSpec]:
    """EB and P, 1 and 2 hidden layers, every activation: `{setting}-{N}h-{activation}`."""
    out = []
    for setting in ("EB", "P"):
        for depth, sizes in SIZES.items():
            for act in ("tanh", "sigm", "hardsigm"):
                eps = 0.2 if setting == "EB" else 1.0
                model = ModelSpec(
                    setting=setting, inputs=7, sizes=sizes, activation=act, epsilon=eps
                )
                T = 300 if setting == "EB" else 150
                out.append(_spec(f"{setting}-{depth}h-{act}", model, T=T, K=8))
    return out


def cases() -> list[GoldenSpec]:
    """Every golden case, in file-name order of no importance (one file each)."""
    toy = ModelSpec(
        setting="EB", inputs=5, sizes=(10, 12), input_to=(0, 1), activation="tanh", epsilon=0.08
    )
    clamp = ModelSpec(
        setting="EB", inputs=7, sizes=(4, 6, 5), activation="sigm", epsilon=0.2, clamp=True
    )
    # 1×8×8 → 3×3 conv (3 ch), pad 1 → pool 2 → s² (3, 4, 4) → conv (4 ch) → pool → s¹ (4, 2, 2)
    # → fully connected → s⁰ (5).
    conv = ConvSpec(input=(1, 8, 8), channels=(3, 4), kernel=3, padding=1, pool=2)
    p_conv = ModelSpec(
        setting="P", inputs=64, sizes=conv.sizes(5), activation="hardsigm", conv=conv
    )
    asym = ModelSpec(setting="P", inputs=7, sizes=(4, 6, 5), activation="sigm", feedback_angle=30.0)
    return [
        _spec("toy", toy, T=600, K=12),
        *_layered(),
        _spec("EB-2h-sigm-clamp", clamp, T=300, K=8),
        _spec("P-conv-hardsigm", p_conv, T=80, K=6),
        _spec("P-2h-asymmetric", asym, T=100, K=8),
    ]


def batch(spec: GoldenSpec) -> tuple[np.ndarray, np.ndarray]:
    """The case's float64 batch: x ~ U[-0.5, 1.5) (B, inputs), y one-hot (B, outputs)."""
    rng = np.random.default_rng(spec.data_seed)
    x = rng.uniform(-0.5, 1.5, size=(spec.batch, spec.model.inputs))
    y = np.eye(spec.model.outputs)[rng.integers(0, spec.model.outputs, spec.batch)]
    return x, y


def compute(backend: Backend, spec: GoldenSpec) -> GoldenCase:
    """Every golden quantity of `spec`, computed by `backend` in float64 on the CPU."""
    net = backend.build(spec.model, dtype="float64", device="cpu")
    p0 = init_params(spec.model, seed=spec.param_seed, dtype="float64")
    x, y = batch(spec)
    p = net.load(p0)
    T, K, beta = spec.T, spec.K, spec.beta
    star, residual = net.free_phase(p, x, steps=T)
    mid, _ = net.free_phase(p, x, steps=T - K)
    groups = {
        "params": p0,
        "free": net.states(star),
        "ep": net.ep_trace(p, x, y, start=star, beta=beta, steps=K),
        "ep_sym": net.ep_trace(p, x, y, start=star, beta=beta, steps=K, symmetric=True),
        "bptt": net.bptt_trace(p, x, y, start=mid, steps=K),
    }
    for key, symmetric in (("ep_step", False), ("ep_step_sym", True)):
        new, _, _ = net.ep_step(
            net.load(p0), x, y, free_steps=T, steps=K, beta=beta, lrs=spec.lrs, symmetric=symmetric
        )
        groups[key] = net.dump(new)
    new, loss, errors = net.bptt_step(net.load(p0), x, y, free_steps=T, steps=K, lrs=spec.lrs)
    groups["bptt_step"] = net.dump(new)
    scalars = {"residual": float(residual), "loss": float(loss), "errors": float(errors)}
    return GoldenCase(spec=spec, x=x, y=y, scalars=scalars, groups=groups)


def write(out: Path, *, names: Sequence[str] = ()) -> list[Path]:
    """Compute the cases (all, or those in `names`) with the torch backend; write them to `out`.

    Returns the written paths. Raises KeyError for an unknown case name."""
    from epbench_torch.backend import TorchBackend  # the reference backend, by design

    known = {spec.name: spec for spec in cases()}
    chosen = [known[name] for name in names] if names else list(known.values())
    backend = TorchBackend()
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for spec in chosen:
        path = out / f"{spec.name}.npz"
        golden.save_case(path, compute(backend, spec))
        paths.append(path)
    return paths


def main(argv: Sequence[str] | None = None) -> int:
    """Command line entry: write the golden files, print each path, size and residual."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=golden.folder(), help="target folder")
    parser.add_argument("--case", action="append", default=[], help="only this case (repeat)")
    args = parser.parse_args(argv)
    for path in write(args.out, names=args.case):
        case = golden.load_case(path)
        print(f"{path}  {path.stat().st_size} bytes  residual {case.scalars['residual']:.1e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
