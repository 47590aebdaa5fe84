"""Saved traces: one `.npz` per GDU cell (`epbench run … --save-traces`), no pickle.

Layout: `params/<name>` the canonical initial parameters, `data/x` and `data/y` the batch,
`ep/<name>` and `bptt/<name>` the traces of shape (K, …) (docs/theory.md §2). `save_traces`
writes atomically (a temporary file renamed over the target); `load_traces` reads one back.
"""

from __future__ import annotations

import math
import zipfile
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from epbench.core.errors import ResultsError

GROUPS = ("params", "data", "ep", "bptt")


def save_traces(
    path: Path,
    *,
    params: dict[str, np.ndarray],
    x: np.ndarray,
    y: np.ndarray,
    ep: dict[str, np.ndarray],
    bptt: dict[str, np.ndarray],
) -> Path:
    """Write the arrays to `path` (its folder is created); returns `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays = {f"params/{k}": v for k, v in params.items()}
    arrays.update({"data/x": x, "data/y": y})
    arrays.update({f"ep/{k}": v for k, v in ep.items()})
    arrays.update({f"bptt/{k}": v for k, v in bptt.items()})
    tmp = path.with_suffix(".tmp.npz")
    np.savez_compressed(tmp, **arrays)
    tmp.replace(path)
    return path


MAX_ELEMENTS = 1 << 28  # per array of a saved .npz (2 GiB of float64): more is not ours
MAX_DIMENSIONS = 8
NUMERIC = "biuf"  # numpy dtype kinds a saved array may have (no objects, strings, records)


def _unreadable(path: Path, what: str, found: str) -> ResultsError:
    return ResultsError(f"{path}: expected {what}, found {found}")


def _check_header(
    path: Path, archive: zipfile.ZipFile, info: zipfile.ZipInfo, *, what: str, kinds: str
) -> None:
    """The .npy header of one member, read without its data: a dtype of `kinds`, at most
    `MAX_DIMENSIONS` axes and `MAX_ELEMENTS` elements, and data as long as the header says."""
    with archive.open(info) as member:
        version = np.lib.format.read_magic(member)
        read = (
            np.lib.format.read_array_header_1_0
            if version == (1, 0)
            else np.lib.format.read_array_header_2_0
        )
        shape, _, dtype = read(member)
        offset = member.tell()
    name = info.filename.removesuffix(".npy")
    if dtype.hasobject or dtype.kind not in kinds or dtype.fields is not None:
        raise _unreadable(path, what, f"the array {name!r} of dtype {dtype} (no objects)")
    size = math.prod(shape)
    if len(shape) > MAX_DIMENSIONS or size > MAX_ELEMENTS:
        raise _unreadable(path, what, f"the array {name!r} of absurd shape {shape}")
    if info.file_size < offset + size * dtype.itemsize:
        raise _unreadable(path, what, f"the array {name!r} cut short (a truncated file)")


def read_npz(path: Path, *, what: str, kinds: str = NUMERIC) -> dict[str, np.ndarray]:
    """Every array of the .npz at `path`, read safely: no pickle (`allow_pickle=False`), each
    header checked before its data is read (`_check_header`: dtypes of `kinds`); a missing,
    truncated or malformed file is a one-line `ResultsError` that says it expected `what`."""
    path = Path(path)
    try:
        with zipfile.ZipFile(path) as archive:
            for info in archive.infolist():
                if not info.filename.endswith(".npy"):
                    raise _unreadable(path, what, f"the member {info.filename!r} (not an array)")
                _check_header(path, archive, info, what=what, kinds=kinds)
        with np.load(path, allow_pickle=False) as archive:
            return {key: archive[key] for key in archive.files}
    except ResultsError:
        raise
    except FileNotFoundError:
        raise _unreadable(path, what, "no file") from None
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile) as err:
        found = (
            f"an unreadable or truncated file ({' '.join(str(err).split()) or type(err).__name__})"
        )
        raise _unreadable(path, what, found) from None


def load_traces(
    path: Path,
    *,
    steps: int | None = None,
    inputs: int | None = None,
    names: Collection[str] | None = None,
) -> dict[str, dict[str, np.ndarray]]:
    """A saved-traces file as {"params": …, "data": …, "ep": …, "bptt": …}, read by `read_npz`
    (no pickle, headers checked) and checked against the record it belongs to (`check_traces`:
    `steps` = its K, `inputs` its model's, `names` those of its `metrics.gdu`). Raises a
    one-line `ResultsError`."""
    out: dict[str, dict[str, np.ndarray]] = {group: {} for group in GROUPS}
    for key, value in read_npz(path, what="a saved-traces .npz of epbench").items():
        group, _, name = key.partition("/")
        if group not in GROUPS or not name:
            raise _unreadable(Path(path), "saved traces", f"the array {key!r}")
        out[group][name] = value
    check_traces(out, where=str(path), steps=steps, inputs=inputs, names=names)
    return out


def check_traces(
    traces: Mapping[str, Mapping[str, np.ndarray]],
    *,
    where: str,
    steps: int | None = None,
    inputs: int | None = None,
    names: Collection[str] | None = None,
) -> None:
    """EP and BPTT traces of the same names and shapes `(K, …)` (K = `steps` when given), the
    parameters of the shape of one step, `data/x` of `(B, inputs)`; else a `ResultsError`."""
    ep, bptt, params = traces["ep"], traces["bptt"], traces["params"]

    def fail(expected: str, found: Any) -> None:
        raise ResultsError(f"{where}: expected {expected}, found {found}")

    if not bptt or set(ep) != set(bptt):
        fail("EP and BPTT traces of the same names", f"{sorted(ep)} and {sorted(bptt)}")
    if names is not None and not set(names) <= set(bptt):
        fail(f"traces of {sorted(names)} (the record's)", sorted(bptt))
    for name, trace in bptt.items():
        if trace.ndim < 2 or ep[name].shape != trace.shape:
            fail(f"traces {name!r} of one shape (K, …)", f"{ep[name].shape} and {trace.shape}")
        if steps is not None and trace.shape[0] != steps:
            fail(f"traces {name!r} of K = {steps} steps (the record's)", trace.shape[0])
        if name in params and params[name].shape != trace.shape[1:]:
            fail(f"params {name!r} of shape {trace.shape[1:]}", params[name].shape)
    x = traces["data"].get("x")
    if inputs is not None and x is not None and (x.ndim != 2 or x.shape[1] != inputs):
        fail(f"data/x of shape (B, {inputs}) (the record's inputs)", x.shape)
