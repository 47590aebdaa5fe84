"""Training checkpoints: one `.npz` per (cell, backend, device, dtype, seed, algorithm), no pickle.

A checkpoint is written after every epoch of a `train` measurement
(epbench.measurements.training), atomically (a temporary file in the same folder, fsynced, then
renamed over the old one), so an interruption leaves either the previous checkpoint or the new
one, never a torn file. It holds:

    params/<name>   the canonical parameters after the last completed epoch (numpy)
    curves/<key>    the per-epoch lists so far (train_error, test_error, loss, epoch_seconds, …)
    meta            a JSON string (a 0-d unicode array, loadable with allow_pickle=False):
                    the format version, the run's key, the completed epoch count, divergence,
                    warm-up time, and the RNG state: the seed and the next epoch, from which
                    the shuffling and nudging generators are derived
                    (epbench.measurements.training), so no generator bits are needed to
                    continue exactly.

Files live in `<out>/<machine>/checkpoints/` beside the records. The file name carries the cell,
backend, device, dtype, seed, algorithm and a hash of the configuration without `train.epochs`,
so `--resume` finds the checkpoint of the same run, and a run extended to more epochs
(`--set train.epochs=…`) continues from it.
"""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from epbench.core.errors import ResultsError
from epbench.core.paths import file_part, output_path
from epbench.core.traces import NUMERIC, read_npz

FORMAT_VERSION = 1


@dataclass(frozen=True, kw_only=True)
class Checkpoint:
    """What a checkpoint file holds, as numpy arrays, Python lists and a plain dict."""

    params: dict[str, np.ndarray]
    curves: dict[str, list[float]]
    meta: dict[str, Any]


def checkpoint_path(
    folder: Path,
    *,
    cell: str,
    backend: str,
    device: str,
    dtype: str,
    seed: int,
    key: str,
    algorithm: str,
) -> Path:
    """`<folder>/<cell>_<backend>_<device>_<dtype>_seed<N>_<key>_<algorithm>.npz`, with the
    characters a file name should not hold replaced (`epbench.core.paths.file_part`; brackets as
    parentheses), never outside `folder` (`output_path`)."""
    stem = file_part(f"{cell}_{backend}_{device}_{dtype}_seed{seed}_{key}_{algorithm}")
    return output_path(Path(folder), stem + ".npz")


def save_checkpoint(
    path: Path,
    *,
    params: dict[str, np.ndarray],
    curves: dict[str, list[float]],
    meta: dict[str, Any],
) -> None:
    """Write a checkpoint atomically (temporary file beside `path`, fsync, rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays = {f"params/{name}": np.asarray(value) for name, value in params.items()}
    arrays.update(
        {f"curves/{key}": np.asarray(values, dtype=np.float64) for key, values in curves.items()}
    )
    arrays["meta"] = np.array(json.dumps({**meta, "format": FORMAT_VERSION}, sort_keys=True))
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.part")
    try:
        with open(tmp, "xb") as handle:  # a new file, with the umask's usual permissions
            np.savez(handle, **arrays)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def load_checkpoint(
    path: Path, *, shapes: Mapping[str, tuple[int, ...]] | None = None
) -> Checkpoint | None:
    """Read a checkpoint (None when there is none) safely (`epbench.core.traces.read_npz`: no
    pickle, every header checked first); with `shapes` (name → shape of the configuration's
    parameters) its parameters must have exactly those names and shapes. A file that cannot be
    read (empty, truncated, an object array, absurd shapes, no metadata) or does not match is a
    one-line ResultsError."""
    path = Path(path)
    if not path.is_file():
        return None
    what = "an epbench checkpoint (delete it or run without --resume)"
    arrays = read_npz(path, what=what, kinds=NUMERIC + "U")
    params, curves, meta = {}, {}, None
    try:
        for name, value in arrays.items():
            group, _, key = name.partition("/")
            if group == "params" and value.dtype.kind in NUMERIC:
                params[key] = value
            elif group == "curves" and value.dtype.kind in NUMERIC and value.ndim == 1:
                curves[key] = value.tolist()
            elif name == "meta" and value.ndim == 0:
                meta = json.loads(str(value))
            else:
                raise ValueError(f"the array {name!r} of shape {value.shape}, {value.dtype}")
    except (ValueError, RecursionError) as err:
        raise ResultsError(f"{path}: expected {what}, found {err}") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT_VERSION:
        raise ResultsError(
            f"{path}: expected checkpoint format {FORMAT_VERSION}, found "
            f"{meta.get('format') if isinstance(meta, dict) else 'no metadata'}"
        )
    found = {name: tuple(value.shape) for name, value in params.items()}
    if shapes is not None and found != {k: tuple(v) for k, v in shapes.items()}:
        raise ResultsError(
            f"{path}: expected parameters of the shapes of the configuration "
            f"({dict(shapes)}), found {found}; delete it or run without --resume"
        )
    return Checkpoint(params=params, curves=curves, meta=meta)
