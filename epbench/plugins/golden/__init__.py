"""Golden float64 traces: the reference numbers of the conformance suite (plugins.conformance).

One compressed `.npz` file per case (`scripts/make_golden.py` writes them with the torch backend in
float64). Every file loads with `allow_pickle=False` and holds plain arrays:

    spec                the case as JSON text (0-d unicode array): name, ModelSpec fields, T, K,
                        β, the per-parameter learning rates `lrs`, the seeds and the batch size
    x, y                the batch, (B, inputs) and (B, outputs) one-hot, B ≥ 3
    params/{name}       canonical initial parameters (epbench.core.params.init_params)
    free/{s}            free-phase states s_T after T steps from zero, (B, *shape)
    residual, loss, errors
                        ‖s_T − s_{T−1}‖, the batch-mean ½‖s⁰_T − y‖², the misclassified count
    ep/{name}           EP traces, positive estimator (+β), from s_* = s_T, K steps
    ep_sym/{name}       EP traces, symmetric estimator (±β)
    bptt/{name}         BPTT traces through the K steps from s_{T−K}
    ep_step/{name}, ep_step_sym/{name}, bptt_step/{name}
                        the parameters after one EP (positive, symmetric) and one BPTT step

Trace conventions are those of `epbench.core.protocols` (docs/theory.md §2). The files are package
data: found next to this module, in an editable or a regular install alike.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from epbench.core.spec import ConvSpec, ModelSpec

GROUPS = ("params", "free", "ep", "ep_sym", "bptt", "ep_step", "ep_step_sym", "bptt_step")
SCALARS = ("residual", "loss", "errors")


@dataclass(frozen=True, kw_only=True)
class GoldenSpec:
    """One golden case: the model and the settings its numbers were computed with.

    `lrs` maps canonical parameter names to learning rates; `param_seed` feeds `init_params`,
    `data_seed` the batch (inputs U[-0.5, 1.5), so ρ(x) ≠ x in the EB setting)."""

    name: str
    model: ModelSpec
    T: int
    K: int
    beta: float
    lrs: dict[str, float] = field(default_factory=dict)
    batch: int = 3
    param_seed: int = 3
    data_seed: int = 7


@dataclass(frozen=True, kw_only=True)
class GoldenCase:
    """A loaded golden case: its spec, the batch, the scalars and every group of arrays."""

    spec: GoldenSpec
    x: np.ndarray
    y: np.ndarray
    scalars: dict[str, float]
    groups: dict[str, dict[str, np.ndarray]]


def spec_to_json(spec: GoldenSpec) -> str:
    """The spec as JSON text (sorted keys; tuples as lists; `conv` as an object or null)."""
    return json.dumps(asdict(spec), sort_keys=True)


def _model_from_dict(data: dict[str, Any]) -> ModelSpec:
    """A ModelSpec from its `asdict` form (lists back to tuples)."""
    conv = data.get("conv")
    if conv is not None:
        conv = ConvSpec(**{k: tuple(v) if isinstance(v, list) else v for k, v in conv.items()})
    fields = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items() if k != "conv"}
    return ModelSpec(**fields, conv=conv)


def spec_from_json(text: str) -> GoldenSpec:
    """The inverse of `spec_to_json`."""
    data = json.loads(text)
    return GoldenSpec(**{**data, "model": _model_from_dict(data["model"])})


def folder() -> Path:
    """The folder that holds the shipped golden files (this package's own folder)."""
    return Path(str(resources.files(__name__)))


def case_files(where: Path | None = None) -> list[Path]:
    """The golden `.npz` files in `where` (default: the shipped folder), sorted by name."""
    return sorted((where or folder()).glob("*.npz"))


def load_case(path: Path) -> GoldenCase:
    """Read one golden file (allow_pickle=False) into a `GoldenCase`."""
    with np.load(path, allow_pickle=False) as data:
        arrays = {key: data[key] for key in data.files}
    groups: dict[str, dict[str, np.ndarray]] = {group: {} for group in GROUPS}
    for key, value in arrays.items():
        group, _, name = key.partition("/")
        if name:
            groups[group][name] = value
    return GoldenCase(
        spec=spec_from_json(str(arrays["spec"])),
        x=arrays["x"],
        y=arrays["y"],
        scalars={key: float(arrays[key]) for key in SCALARS},
        groups=groups,
    )


def save_case(path: Path, case: GoldenCase) -> None:
    """Write `case` as one compressed `.npz` file (the layout of the module doc)."""
    arrays: dict[str, np.ndarray] = {
        "spec": np.array(spec_to_json(case.spec)),
        "x": case.x,
        "y": case.y,
    }
    arrays |= {key: np.array(value) for key, value in case.scalars.items()}
    for group, named in case.groups.items():
        arrays |= {f"{group}/{name}": np.asarray(value) for name, value in named.items()}
    np.savez_compressed(path, **arrays)


def load_all(where: Path | None = None) -> dict[str, GoldenCase]:
    """Every golden case in `where` (default: the shipped folder), by case name."""
    cases = (load_case(path) for path in case_files(where))
    return {case.spec.name: case for case in cases}
