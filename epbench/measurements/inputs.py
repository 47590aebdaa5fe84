"""The inputs a measurement declares (`Measurement.inputs`, epbench.core.measurement), loaded.

    batch      `load_batch`: the cell's mini-batch — toy data drawn from the seed, or batch
               `data.index` of the unshuffled training split of MNIST / Fashion-MNIST
    training   `epbench.measurements.training.load_training_data`: training and test sets
    none       nothing

`input_key` says what the inputs depend on, so that cells with the same key share one load (per
worker process, and in the coordinator's data check before the first cell).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from epbench.config import datasets
from epbench.core.spec import TaskSpec
from epbench.measurements.training import load_training_data

TOY_DATA_OFFSET = 10_000  # toy data of seed s come from seed s + TOY_DATA_OFFSET


def load_batch(spec: TaskSpec, *, seed: int, dtype: str, data_dir: Path | None) -> tuple:
    """The (x, y) mini-batch of a cell as numpy arrays of `dtype`: shapes (B, inputs) and
    (B, outputs) one-hot."""
    if spec.data.source == "toy":
        return datasets.toy_batch(
            inputs=spec.model.inputs,
            outputs=spec.model.outputs,
            batch=spec.data.batch,
            seed=seed + TOY_DATA_OFFSET,
            dtype=dtype,
        )
    images, labels = datasets.load_split(spec.data.source, "train", data_dir=data_dir, dtype=dtype)
    return datasets.batch_of(
        images,
        datasets.one_hot(labels, classes=spec.model.outputs, dtype=dtype),
        batch=spec.data.batch,
        index=spec.data.index,
    )


def input_key(
    kind: str, spec: TaskSpec, *, seed: int, dtype: str, data_dir: Path | None
) -> tuple | None:
    """What inputs of `kind` for `spec` depend on; None for kind "none"."""
    if kind == "training":
        return ("training", spec.data.source, spec.data.subset, spec.model.outputs, dtype, data_dir)
    if kind == "batch":
        shape = (spec.model.inputs, spec.model.outputs)
        toy_seed = seed if spec.data.source == "toy" else None
        return ("batch", spec.data, shape, dtype, data_dir, toy_seed)
    return None


def load_inputs(kind: str, spec: TaskSpec, *, seed: int, dtype: str, data_dir: Path | None) -> Any:
    """The inputs of `kind` for `spec` (module doc); None for kind "none"."""
    if kind == "training":
        return load_training_data(spec, dtype=dtype, data_dir=data_dir)
    if kind == "batch":
        return load_batch(spec, seed=seed, dtype=dtype, data_dir=data_dir)
    return None
